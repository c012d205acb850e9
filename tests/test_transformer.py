"""Tests for baselines.transformer (Vaswani et al. 2017) and the seq2seq dataset (experiments.data.token_tasks)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import baselines
from baselines import transformer as T
from experiments.data import create_dataset, token_tasks


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tiny(**kw) -> T.Transformer:
    torch.manual_seed(0)
    return baselines.create_model("transformer_tiny", **({"num_classes": 12, "in_chans": 12} | kw)).eval()


# ----------------------------------------------------------------------------------------------- parameter counts


def test_transformer_base_parameter_count():
    """Base: 44,138,496 in the layers (nn.Transformer() minus its two final LayerNorms) + one 37k x 512 embedding."""
    with torch.device("meta"):
        ours = T.transformer_base()
        torch_body = n_params(nn.Transformer(batch_first=True))  # d 512, 8 heads, 6 + 6 layers, FF 2048: 44,140,544
    assert torch_body == 44_140_544
    body = sum(n_params(m) for m in (*ours.encoder, *ours.decoder))
    assert body == torch_body - 2 * 2 * 512 == 44_138_496
    assert n_params(ours) == body + 37_000 * 512 == 63_082_496
    assert baselines.model_info("transformer_base")["num_params"] == 63_082_496
    info = baselines.model_info("transformer_encoder_classifier")
    assert info["num_params"] == 18_928_138 and info["num_stages"] == 6 and info["channels"] == (512,) * 6


def test_embedding_sharing():
    m = tiny()
    assert m.src_embed.weight is m.tgt_embed.weight is m.generator.weight
    dec = tiny(share_embeddings="decoder", in_chans=7)
    assert dec.generator.weight is dec.tgt_embed.weight and dec.src_embed.weight is not dec.tgt_embed.weight
    assert n_params(dec) == n_params(m) + 7 * 64
    none = tiny(share_embeddings="none")
    assert n_params(none) == n_params(m) + 2 * 12 * 64
    with pytest.raises(ValueError, match="one vocabulary"):
        tiny(in_chans=7)
    with pytest.raises(ValueError, match="share_embeddings must be one of"):
        tiny(share_embeddings="some")


# ----------------------------------------------------------------------------------------------- equations


def test_sinusoidal_positions_formula():
    pe = T.sinusoidal_positions(20, 10)
    for pos in (0, 3, 19):
        for i in range(5):
            angle = pos / 10000 ** (2 * i / 10)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-5)
    assert T.sinusoidal_positions(4, 5).shape == (4, 5)  # odd width


def _load_attn(torch_attn: nn.MultiheadAttention, ours: T.MultiHeadAttention) -> None:
    with torch.no_grad():
        torch_attn.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
        torch_attn.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
        torch_attn.out_proj.weight.copy_(ours.w_o.weight)
        torch_attn.out_proj.bias.copy_(ours.w_o.bias)


def _load_ff_norms(theirs: nn.Module, ours: nn.Module, norms: int) -> None:
    with torch.no_grad():
        theirs.linear1.load_state_dict(ours.ff[0].state_dict())
        theirs.linear2.load_state_dict(ours.ff[2].state_dict())
        for k in range(1, norms + 1):
            getattr(theirs, f"norm{k}").load_state_dict(getattr(ours, f"norm{k}").state_dict())


def test_layers_match_pytorch_post_norm_layers():
    """The hand-written layers compute what nn.TransformerEncoderLayer / DecoderLayer (post-norm, ReLU) compute."""
    torch.manual_seed(0)
    enc = T.EncoderLayer(16, 4, 32).eval()
    dec = T.DecoderLayer(16, 4, 32).eval()
    t_enc = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    t_dec = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    _load_attn(t_enc.self_attn, enc.self_attn)
    _load_ff_norms(t_enc, enc, 2)
    _load_attn(t_dec.self_attn, dec.self_attn)
    _load_attn(t_dec.multihead_attn, dec.cross_attn)
    _load_ff_norms(t_dec, dec, 3)
    x, y = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])  # torch: True = padded
    with torch.no_grad():
        mem = enc(x, (~pad)[:, None, None, :])
        torch.testing.assert_close(mem, t_enc(x, src_key_padding_mask=pad), rtol=1e-5, atol=1e-5)
        causal = nn.Transformer.generate_square_subsequent_mask(5)
        expected = t_dec(y, mem, tgt_mask=causal, memory_key_padding_mask=pad)
        got = dec(y, mem, T.causal_mask(5), (~pad)[:, None, None, :])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- seq2seq model


def test_shapes_and_causal_mask():
    m = tiny()
    src = torch.randint(2, 12, (3, 6))
    tgt = torch.randint(2, 12, (3, 8))
    with torch.no_grad():
        base = m(src=src, tgt_in=tgt)
        assert base.shape == (3, 8, 12)
        for t in (0, 3, 7):
            changed = tgt.clone()
            changed[:, t] = (changed[:, t] - 2 + 1) % 10 + 2  # another symbol at position t
            out = m(src=src, tgt_in=changed)
            assert torch.equal(out[:, :t], base[:, :t]), f"position {t} leaked into earlier logits"
            assert not torch.allclose(out[:, t:], base[:, t:])


def test_source_padding_is_masked():
    m = tiny()
    src = torch.randint(2, 12, (2, 5))
    tgt = torch.randint(2, 12, (2, 4))
    padded = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # pad_id 0
    with torch.no_grad():
        torch.testing.assert_close(m(src=padded, tgt_in=tgt), m(src=src, tgt_in=tgt), rtol=1e-5, atol=1e-5)


def test_greedy_decoding_is_consistent_with_teacher_forcing():
    """Feeding the greedy output back with teacher forcing reproduces it (constructed, untrained model)."""
    m = tiny()
    src = torch.randint(2, 12, (5, 7))
    ys = m.generate(src, max_len=9)
    assert ys.shape == (5, 9)
    tgt_in = torch.cat([torch.full((5, 1), m.bos_id), ys[:, :-1]], dim=1)
    with torch.no_grad():
        assert torch.equal(m(src=src, tgt_in=tgt_in).argmax(-1), ys)
    assert m.generate(src).shape == (5, 7)  # default: the source length


def test_training_steps_on_reverse_reduce_the_loss():
    splits = create_dataset("seq2seq", mode="reverse", max_len=6, num_train=64, num_test=8)
    batch, y = splits.train.inputs, splits.train.targets
    m = tiny().train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(m(**batch).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------- encoder classifier


def test_encoder_classifier_is_staged():
    torch.manual_seed(0)
    net = baselines.create_model("transformer_encoder_classifier", num_classes=10, in_chans=1, d_model=32,
                                 num_heads=4, d_ff=64, num_layers=3, dropout=0.0).eval()  # fmt: skip
    x = torch.rand(2, 1, 32, 32)
    h = net.stem(x)
    assert h.shape == (2, 64, 32)
    for stage in net.stages:
        h = stage(h)
    assert torch.equal(net.head(h), net(x))
    assert net.strides == [4, 4, 4] and net.output_fmt == "NLC" and net.num_prefix_tokens == 0
    assert "transformer_encoder_classifier" in baselines.list_models(staged=True)
    assert "transformer_base" in baselines.list_models(staged=False)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        net(torch.zeros(1, 1, 30, 30))


# ----------------------------------------------------------------------------------------------- dataset


@pytest.mark.parametrize("mode", ["copy", "reverse"])
def test_seq2seq_dataset(mode):
    s = create_dataset("seq2seq", mode=mode, seed=1, min_len=2, max_len=5, num_train=200, num_test=50, long_len=7)
    assert s.task == "tokens" and s.num_classes == s.in_chans == 12 and s.image_size == 0
    src, tgt_in, y = s.train.inputs["src"], s.train.inputs["tgt_in"], s.train.targets
    assert src.shape == tgt_in.shape == y.shape == (200, 5) and src.dtype == torch.int64
    for i in range(200):
        n = int((src[i] != token_tasks.PAD).sum())
        assert 2 <= n <= 5 and (src[i, n:] == token_tasks.PAD).all() and (y[i, n:] == -100).all()
        body = src[i, :n] if mode == "copy" else src[i, :n].flip(0)
        assert torch.equal(y[i, :n], body)
        assert tgt_in[i, 0] == token_tasks.BOS and torch.equal(tgt_in[i, 1:n], body[:-1])
    train_rows = {tuple(r) for r in src.tolist()}
    assert len(train_rows) == 200 and not train_rows & {tuple(r) for r in s.test.inputs["src"].tolist()}
    assert s.tests["len7"].inputs["src"].shape == (50, 7) and (s.tests["len7"].targets != -100).all()
    again = create_dataset("seq2seq", mode=mode, seed=1, min_len=2, max_len=5, num_train=200, num_test=50, long_len=7)
    assert torch.equal(again.test.targets, s.test.targets)
    with pytest.raises(ValueError, match="mode must be one of copy, reverse"):
        create_dataset("seq2seq", mode="sort")
    with pytest.raises(ValueError, match="distinct sequences"):
        create_dataset("seq2seq", num_symbols=2, min_len=1, max_len=2, num_train=10)


def test_doctests():
    for module in (T, token_tasks):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0
    assert doctest.testmod(T).attempted > 0
