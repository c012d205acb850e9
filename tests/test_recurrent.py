"""Recurrent baselines (baselines/recurrent_cells.py, baselines/recurrent.py): parity with PyTorch's cells and fused
stacks, truncated BPTT, the top-down hook, shapes and input encodings, one training step per model."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import baselines
from baselines.recurrent import RecurrentNet, TopDownLinear, gru, lstm, rnn
from baselines.recurrent_cells import GRUCell, LSTMCell, RNNCell

KINDS = ["rnn", "lstm", "gru"]
OURS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
TORCH_STACKS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
BUILDERS = {"rnn": rnn, "lstm": lstm, "gru": gru}


def copy_cell(ours: nn.Module, theirs: nn.Module) -> None:
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(theirs, name).copy_(getattr(ours, name))


@pytest.mark.parametrize("kind", KINDS)
def test_cell_matches_torch_cell(kind):
    torch.manual_seed(0)
    ours = OURS[kind](5, 7)
    theirs = TORCH_CELLS[kind](5, 7)
    copy_cell(ours, theirs)
    x = torch.randn(6, 4, 5)
    s_ours = s_theirs = None
    for t in range(6):
        s_ours = ours(x[t], s_ours)
        s_theirs = theirs(x[t], s_theirs)
        if kind == "lstm":
            torch.testing.assert_close(s_ours[0], s_theirs[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(s_ours[1], s_theirs[1], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(s_ours, s_theirs, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_lstm_forget_bias_and_relu_rnn():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4, forget_bias=0.0)
    bound = 1 / 2  # 1 / sqrt(H)
    assert cell.bias_ih.abs().max() <= bound
    torch.manual_seed(0)
    raised = LSTMCell(3, 4, forget_bias=1.0)
    torch.testing.assert_close(raised.bias_ih[4:8], cell.bias_ih[4:8] + 1.0)
    torch.testing.assert_close(raised.bias_ih[:4], cell.bias_ih[:4])
    ours, theirs = RNNCell(3, 4, nonlinearity="relu"), nn.RNNCell(3, 4, nonlinearity="relu")
    copy_cell(ours, theirs)
    x = torch.randn(2, 3)
    torch.testing.assert_close(ours(x), theirs(x))
    with pytest.raises(ValueError, match="choose from: tanh, relu"):
        RNNCell(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("output", ["last", "all"])
def test_stack_without_hook_matches_fused_torch_stack(kind, output):
    torch.manual_seed(0)
    net = BUILDERS[kind](num_classes=3, in_chans=4, hidden_size=6, num_layers=2, output=output).eval()
    fused = TORCH_STACKS[kind](4, 6, num_layers=2, batch_first=True)
    for layer, cell in enumerate(net.cells):
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fused, f"{name}_l{layer}").copy_(getattr(cell, name))
    x = torch.randn(3, 9, 4)
    seq, _ = fused(x)
    expected = net.head(seq[:, -1] if output == "last" else seq)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_tbptt_cuts_gradients_exactly_beyond_the_window(kind):
    torch.manual_seed(0)
    full = BUILDERS[kind](num_classes=2, in_chans=3, hidden_size=5, num_layers=2)
    cut = BUILDERS[kind](num_classes=2, in_chans=3, hidden_size=5, num_layers=2, tbptt=4)
    cut.load_state_dict(full.state_dict())
    x = torch.randn(2, 12, 3, requires_grad=True)
    out_full, out_cut = full(x), cut(x)
    torch.testing.assert_close(out_full, out_cut)  # truncation changes gradients, never values
    (g_full,) = torch.autograd.grad(out_full.sum(), x)
    (g_cut,) = torch.autograd.grad(out_cut.sum(), x)
    # the last step (t = 11) lies in the window [8, 11]: nothing reaches steps 0..7
    assert torch.count_nonzero(g_cut[:, :8]) == 0
    assert torch.all(g_cut[:, 8:].abs().sum(-1) > 0)
    assert torch.all(g_full.abs().sum(-1) > 0)  # full BPTT reaches every step
    torch.testing.assert_close(g_cut[:, 8:], g_full[:, 8:])  # inside the window the gradients are the full ones


def test_tbptt_with_per_position_outputs():
    torch.manual_seed(0)
    net = lstm(num_classes=2, in_chans=3, hidden_size=5, num_layers=1, tbptt=3, output="all")
    x = torch.randn(1, 9, 3, requires_grad=True)
    out = net(x)
    (g,) = torch.autograd.grad(out[:, 4].sum(), x)  # step 4 lies in the window [3, 5]
    assert torch.count_nonzero(g[:, :3]) == 0 and torch.count_nonzero(g[:, 5:]) == 0
    assert torch.all(g[:, 3:5].abs().sum(-1) > 0)


def test_hook_that_sends_nothing_is_the_plain_stack():
    torch.manual_seed(0)
    plain = gru(num_classes=3, in_chans=2, hidden_size=4, num_layers=3, output="all")
    calls = []

    def silent(layer, above, below):
        calls.append(layer)
        return None

    hooked = gru(num_classes=3, in_chans=2, hidden_size=4, num_layers=3, output="all", topdown=silent)
    hooked.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 2)
    assert torch.equal(hooked(x), plain(x))
    assert calls == [0, 1] * 5  # every layer below the top, at every step

    zeros = gru(num_classes=3, in_chans=2, hidden_size=4, num_layers=3, output="all",
                topdown=lambda layer, above, below: torch.zeros(above.shape[0], 12))
    zeros.load_state_dict(plain.state_dict())
    torch.testing.assert_close(zeros(x), plain(x), rtol=0, atol=0)


def test_hook_receives_the_upper_layer_at_the_previous_step():
    torch.manual_seed(0)
    seen = []

    def record(layer, above, below):
        seen.append((layer, above.detach().clone(), below.detach().clone()))
        return None

    net = lstm(num_classes=2, in_chans=3, hidden_size=4, num_layers=2, topdown=record)
    x = torch.randn(2, 4, 3)
    net(x)
    assert [layer for layer, _, _ in seen] == [0] * 4
    state = None
    for t in range(4):
        layer, above, below = seen[t]
        expected = torch.zeros(2, 4) if state is None else state[1][0]
        torch.testing.assert_close(above, expected)  # h of layer 1 at t - 1 (zeros at t = 0)
        torch.testing.assert_close(below, x[:, t])  # layer 0's bottom-up input at t
        _, state = net.step(x[:, t], state, topdown=[None, None])


@pytest.mark.parametrize("kind", KINDS)
def test_topdown_signal_reaches_the_lower_layer_one_step_later(kind):
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    for hook in (None, "linear"):
        net = BUILDERS[kind](num_classes=2, in_chans=3, hidden_size=4, num_layers=2, topdown=hook)
        _, state = net.step(x)
        above = net.cells[1].hidden(state[1]).detach().requires_grad_(True)
        state = [state[0], (above, state[1][1]) if kind == "lstm" else above]
        _, new = net.step(x, state)
        h0 = net.cells[0].hidden(new[0])
        (g,) = torch.autograd.grad(h0.sum(), above, allow_unused=True)
        if hook is None:
            assert g is None  # the plain stack: layer 0 never sees layer 1
        else:
            assert isinstance(net.topdown, TopDownLinear) and g.abs().sum() > 0


def test_hook_module_trains_and_explicit_terms_override_it():
    torch.manual_seed(0)
    net = rnn(num_classes=2, in_chans=3, hidden_size=4, num_layers=2, topdown="linear")
    names = [n for n, _ in net.named_parameters()]
    assert "topdown.proj.0.weight" in names
    F.cross_entropy(net(torch.randn(5, 6, 3)), torch.randint(0, 2, (5,))).backward()
    assert net.topdown.proj[0].weight.grad.abs().sum() > 0
    x = torch.randn(2, 3)
    _, state = net.step(x)
    u = torch.randn(2, 4)
    h_explicit, _ = net.step(x, state, topdown=[u, None])
    plain = rnn(num_classes=2, in_chans=3, hidden_size=4, num_layers=2)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("topdown")})
    h_plain, _ = plain.step(x, state, topdown=[u, None])
    torch.testing.assert_close(h_explicit, h_plain)
    with pytest.raises(ValueError, match="one term"):
        net.step(x, state, topdown=[u])


def test_step_loop_equals_forward():
    torch.manual_seed(0)
    net = lstm(num_classes=3, in_chans=4, hidden_size=5, num_layers=2, topdown="linear", output="all")
    x = torch.randint(0, 4, (2, 6))
    feats = net.encode(x)
    state, hs = None, []
    for t in range(6):
        h, state = net.step(feats[:, t], state)
        hs.append(h)
    torch.testing.assert_close(net.head(torch.stack(hs, 1)), net(x))


def test_inputs_tokens_one_hot_embed_and_errors():
    torch.manual_seed(0)
    net = gru(num_classes=3, in_chans=4, hidden_size=5)
    tokens = torch.randint(0, 4, (2, 7))
    torch.testing.assert_close(net(tokens), net(F.one_hot(tokens, 4).float()))
    scalar = rnn(num_classes=3, in_chans=1, hidden_size=5)
    z = torch.randn(2, 7)
    torch.testing.assert_close(scalar(z), scalar(z.unsqueeze(-1)))
    emb = lstm(num_classes=3, in_chans=4, hidden_size=5, embed=True, embed_dim=3)
    assert emb.embed.weight.shape == (4, 3) and emb.cells[0].input_size == 3
    assert emb(tokens).shape == (2, 3)
    with pytest.raises(ValueError, match="embed=True expects int64 tokens"):
        emb(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match="in_chans=4"):
        net(torch.randn(2, 7, 3))
    with pytest.raises(ValueError, match="output must be one of: last, all"):
        lstm(output="mean")
    with pytest.raises(ValueError, match="topdown must be"):
        lstm(topdown="attention")
    with pytest.raises(ValueError, match="tbptt must be an integer >= 0"):
        lstm(tbptt=-1)
    with pytest.raises(ValueError, match="unknown cell"):
        RecurrentNet("lstmx")


def test_registry_metadata_and_parameter_counts():
    assert {"rnn", "lstm", "gru"} <= set(baselines.list_models(staged=False))
    assert not {"rnn", "lstm", "gru"} & set(baselines.list_models(staged=True))
    counts = {k: baselines.model_info(k)["num_params"] for k in KINDS}
    # nn.RNN/LSTM/GRU(1, 128, num_layers=2) plus the 128 -> 10 head
    for k in KINDS:
        fused = TORCH_STACKS[k](1, 128, num_layers=2)
        assert counts[k] == sum(p.numel() for p in fused.parameters()) + 1290
    info = baselines.model_info("lstm")
    assert info["family"] == "recurrent" and info["staged"] is False and info["small"] == {"hidden_size": 16,
                                                                                            "num_layers": 2}
    net = baselines.create_model("gru", num_classes=4, in_chans=3, hidden_size=8, output="all")
    assert net(torch.randint(0, 3, (2, 5))).shape == (2, 5, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_one_training_step(kind):
    torch.manual_seed(0)
    net = baselines.create_model(kind, num_classes=5, in_chans=5, output="all", embed=True, dropout=0.1,
                                 topdown="linear", **baselines.model_info(kind)["small"])
    x = torch.randint(0, 5, (4, 8))
    y = torch.full((4, 8), -100)
    y[:, -3:] = x[:, :3]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), ignore_index=-100)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in net.named_parameters())


@pytest.mark.parametrize("module", ["baselines.recurrent", "baselines.recurrent_cells"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
