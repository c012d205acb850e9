"""The Transformer (Vaswani et al. 2017): the encoder-decoder for sequence-to-sequence, and its encoder as a classifier.

Reference: A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser, I. Polosukhin,
"Attention is all you need", NeurIPS 2017, sections 3.1-3.5 and Table 3. Written by hand from the equations
(PyTorch's ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` compute the same post-norm blocks; a
test loads the weights here into them and checks the outputs agree):

.. math::

    \\mathrm{Attention}(Q, K, V) = \\mathrm{softmax}\\Big(\\frac{Q K^\\top}{\\sqrt{d_k}}\\Big) V, \\qquad
    \\mathrm{MultiHead}(Q, K, V) = \\mathrm{Concat}(\\mathrm{head}_1, \\ldots, \\mathrm{head}_h) W^O, \\quad
    \\mathrm{head}_i = \\mathrm{Attention}(Q W_i^Q, K W_i^K, V W_i^V)

    \\mathrm{FFN}(x) = \\max(0, x W_1 + b_1) W_2 + b_2, \\qquad
    \\text{each sub-layer: } x \\leftarrow \\mathrm{LayerNorm}(x + \\mathrm{Dropout}(\\mathrm{Sublayer}(x)))

    PE_{(pos, 2i)} = \\sin(pos / 10000^{2i / d_{model}}), \\qquad PE_{(pos, 2i + 1)} = \\cos(pos / 10000^{2i / d_{model}})

Encoder layer: self-attention, FFN. Decoder layer: masked (causal) self-attention, attention over the encoder output
("memory"), FFN. Embeddings are multiplied by ``sqrt(d_model)`` and added to the sinusoidal positions, then dropped
out; the source embedding, the target embedding and the pre-softmax linear map share one weight matrix (section
3.4). Shapes: ``src (B, S)``, ``tgt_in (B, T)`` int64 token ids -> logits ``(B, T, vocab)``.

Registered models:

- ``transformer_base`` (:class:`Transformer`): the paper's base model, d_model 512, 6 + 6 layers, 8 heads,
  d_ff 2048, dropout 0.1. **63,082,496 parameters** with a shared 37,000-token vocabulary (the paper's WMT En-De
  byte-pair vocabulary): 44,138,496 in the layers (``nn.Transformer()``'s 44,140,544 minus its two final
  LayerNorms, which the post-norm paper model does not have) plus 37,000 x 512 = 18,944,000 in the one shared
  embedding. The paper's Table 3 says 65M; reference/architectures.md section 9 reaches the same 63M and leaves
  the 2M gap unexplained (no pre-softmax bias is described, none is used here).
- ``transformer_tiny``: the same network narrowed for CPU experiments (d_model 64, 2 + 2 layers, 4 heads, d_ff 256,
  no dropout).
- ``transformer_encoder_classifier`` (:class:`TransformerEncoderClassifier`, Staged): the encoder over image patch
  tokens, then the mean over tokens and a linear classifier (see that class).

Deviations and choices: dropout is applied where section 5.4 says (each sub-layer output, the embedding sums);
attention weights are not dropped (the paper does not say so). Initialisation is not given in the paper: weight
matrices are Xavier-uniform, biases zero, the shared embedding normal with std ``d_model ** -0.5`` (so the scaled
embedding has unit variance). LayerNorm eps is PyTorch's 1e-5. Attention is computed explicitly (softmax of
``Q K^T / sqrt(d_k)``), which is twice differentiable on the CPU. Padding: source positions equal to ``pad_id``
(default 0) are masked out of every attention over the source; target padding needs no mask (causal attention
never lets a padded position affect an earlier one; score it as ``-100``). Label smoothing (0.1) and the learning
rate schedule are training choices, not part of the model.

Example:
    >>> import torch
    >>> model = transformer_tiny(num_classes=12, in_chans=12).eval()
    >>> src = torch.randint(2, 12, (3, 7)); tgt_in = torch.randint(2, 12, (3, 5))
    >>> model(src=src, tgt_in=tgt_in).shape
    torch.Size([3, 5, 12])
    >>> model.generate(src, max_len=4).shape  # greedy decoding from the start token
    torch.Size([3, 4])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .resnet import StagedModel

__all__ = [
    "DecoderLayer",
    "EncoderLayer",
    "MeanPoolHead",
    "MultiHeadAttention",
    "PatchTokens",
    "Transformer",
    "TransformerEncoderClassifier",
    "causal_mask",
    "sinusoidal_positions",
    "transformer_base",
    "transformer_encoder_classifier",
    "transformer_tiny",
]


def sinusoidal_positions(length: int, d_model: int, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The fixed positional encoding of section 3.5: ``(length, d_model)``, sines on even and cosines on odd columns.

    Example:
        >>> pe = sinusoidal_positions(50, 8)
        >>> pe.shape, pe[0].tolist()
        (torch.Size([50, 8]), [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    """
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
    return pe.to(dtype)


def causal_mask(length: int, *, device: Any = None) -> Tensor:
    """Boolean ``(length, length)``: ``True`` where query position i may attend to key position j (j <= i).

    Example:
        >>> causal_mask(3).int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (section 3.2): ``h`` heads of width ``d_k = d_model / h``.

    ``W^Q, W^K, W^V, W^O`` are ``d_model x d_model`` linear maps with biases (``4 d^2 + 4 d`` parameters, as
    ``nn.MultiheadAttention``). Shapes: query ``(B, T, d)``, key/value ``(B, S, d)``, ``mask`` boolean and
    broadcastable to ``(B, h, T, S)`` with ``True`` = may attend -> ``(B, T, d)``.
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.d_k).transpose(1, 2)  # (B, h, n, d_k)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self._split(self.w_q(query)), self._split(self.w_k(key)), self._split(self.w_v(value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)  # (B, h, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        out = scores.softmax(dim=-1) @ v  # (B, h, T, d_k)
        b, _, t, _ = out.shape
        return self.w_o(out.transpose(1, 2).reshape(b, t, self.d_model))


class FeedForward(nn.Sequential):
    """``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`` (section 3.3): ``(B, n, d) -> (B, n, d)``."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: ``x = LN(x + Drop(SelfAttn(x))); x = LN(x + Drop(FFN(x)))``; ``(B, S, d)`` in and out.

    ``mask``: boolean, broadcastable to ``(B, h, S, S)`` (``True`` = may attend), e.g. source padding.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x, x, x, mask)))
        return self.norm2(x + self.drop(self.ff(x)))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: masked self-attention, attention over ``memory``, FFN; ``(B, T, d)`` in and out.

    ``self_mask`` broadcastable to ``(B, h, T, T)`` (the causal mask), ``memory_mask`` to ``(B, h, T, S)``.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, num_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff)
        self.norm3 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, memory: Tensor, self_mask: Tensor | None = None, memory_mask: Tensor | None = None
    ) -> Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x, x, x, self_mask)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory, memory, memory_mask)))
        return self.norm3(x + self.drop(self.ff(x)))


def _init_linear_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


SHARING = ("all", "decoder", "none")


class Transformer(nn.Module):
    """The encoder-decoder Transformer (see the module docstring); teacher-forced ``forward`` and greedy ``generate``.

    Args:
        src_vocab, tgt_vocab: input and output vocabulary sizes.
        d_model, num_heads, d_ff, num_encoder_layers, num_decoder_layers, dropout: as in the paper's Table 3.
        share_embeddings: ``"all"`` (the paper: source embedding = target embedding = pre-softmax weights; needs
            ``src_vocab == tgt_vocab``), ``"decoder"`` (target embedding = pre-softmax weights only) or ``"none"``.
        pad_id: source token id that is masked out of attention (``None``: no source masking).
        bos_id: the start token :meth:`generate` feeds first (the first token of ``tgt_in`` in training).

    Attributes: ``src_embed``, ``tgt_embed``, ``encoder`` and ``decoder`` (``nn.ModuleList`` of layers),
    ``generator`` (the pre-softmax ``Linear``, no bias), ``num_classes`` (= ``tgt_vocab``).
    """

    def __init__(
        self,
        *,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 512,
        num_heads: int = 8,
        d_ff: int = 2048,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dropout: float = 0.1,
        share_embeddings: str = "all",
        pad_id: int | None = 0,
        bos_id: int = 1,
    ) -> None:
        super().__init__()
        if share_embeddings not in SHARING:
            raise ValueError(f"share_embeddings must be one of {', '.join(SHARING)}, got {share_embeddings!r}")
        if share_embeddings == "all" and src_vocab != tgt_vocab:
            raise ValueError(
                f"share_embeddings='all' needs one vocabulary, got src_vocab {src_vocab} != tgt_vocab {tgt_vocab}; "
                "use share_embeddings='decoder' or 'none'"
            )
        if not 0 <= bos_id < tgt_vocab:
            raise ValueError(f"bos_id must be a target token id in [0, {tgt_vocab}), got {bos_id}")
        self.d_model, self.src_vocab, self.tgt_vocab = d_model, src_vocab, tgt_vocab
        self.num_classes = tgt_vocab
        self.pad_id, self.bos_id, self.share_embeddings = pad_id, bos_id, share_embeddings
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
        self.src_embed = self.tgt_embed if share_embeddings == "all" else nn.Embedding(src_vocab, d_model)
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_decoder_layers)
        )
        self.generator = nn.Linear(d_model, tgt_vocab, bias=False)
        self.drop = nn.Dropout(dropout)
        _init_linear_(self)
        for emb in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(emb.weight, std=d_model**-0.5)
        if share_embeddings != "none":
            self.generator.weight = self.tgt_embed.weight

    def _embed(self, embedding: nn.Embedding, tokens: Tensor) -> Tensor:
        x = embedding(tokens) * math.sqrt(self.d_model)
        return self.drop(x + sinusoidal_positions(tokens.shape[1], self.d_model, device=x.device, dtype=x.dtype))

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor | None]:
        """``src (B, S)`` -> memory ``(B, S, d)`` and the source mask ``(B, 1, 1, S)`` (``None`` without ``pad_id``)."""
        mask = None if self.pad_id is None else (src != self.pad_id)[:, None, None, :]
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            x = layer(x, mask)
        return x, mask

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        """``tgt_in (B, T)``, ``memory (B, S, d)`` -> logits ``(B, T, tgt_vocab)`` (causal: position t sees <= t)."""
        y = self._embed(self.tgt_embed, tgt_in)
        causal = causal_mask(tgt_in.shape[1], device=tgt_in.device)
        for layer in self.decoder:
            y = layer(y, memory, causal, memory_mask)
        return self.generator(y)

    def forward(self, *, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: ``src (B, S)``, ``tgt_in (B, T)`` (the targets shifted right after ``bos_id``) ->
        logits ``(B, T, tgt_vocab)``."""
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    @torch.no_grad()
    def generate(self, src: Tensor, *, max_len: int | None = None) -> Tensor:
        """Greedy decoding: ``src (B, S)`` -> ``(B, max_len)`` tokens (default ``max_len = S``), start token excluded.

        Step t feeds ``[bos, y_1, ..., y_{t-1}]`` and appends ``y_t = argmax`` of the last position's logits, so
        ``forward(src=src, tgt_in=[bos, y_1..y_{T-1}]).argmax(-1) == y`` (teacher forcing on its own output).
        No end-of-sequence handling: every sequence runs ``max_len`` steps.
        """
        max_len = src.shape[1] if max_len is None else int(max_len)
        memory, mask = self.encode(src)
        ys = torch.full((src.shape[0], 1), self.bos_id, dtype=torch.long, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(ys, memory, mask)[:, -1].argmax(-1, keepdim=True)
            ys = torch.cat([ys, nxt], dim=1)
        return ys[:, 1:]


def _check_vocab(num_classes: int, in_chans: int) -> None:
    if num_classes < 2 or in_chans < 2:
        raise ValueError(f"vocabulary sizes must be >= 2, got num_classes={num_classes}, in_chans={in_chans}")


@register_model(
    family="Transformer",
    source="hand-written (paper)",
    paper="Vaswani et al. 2017",
    small={"d_model": 64, "num_heads": 4, "d_ff": 256, "num_encoder_layers": 2, "num_decoder_layers": 2},
    staged=False,
)
def transformer_base(
    *,
    num_classes: int = 37000,
    in_chans: int = 37000,
    d_model: int = 512,
    num_heads: int = 8,
    d_ff: int = 2048,
    num_encoder_layers: int = 6,
    num_decoder_layers: int = 6,
    dropout: float = 0.1,
    share_embeddings: str = "all",
    pad_id: int | None = 0,
    bos_id: int = 1,
) -> Transformer:
    """The paper's base Transformer (Vaswani et al. 2017, Table 3): 63,082,496 parameters at a 37,000-token vocabulary.

    ``num_classes`` is the target vocabulary, ``in_chans`` the source vocabulary (the runner passes the dataset's
    ``num_classes`` and ``in_chans``); the paper shares one vocabulary and one embedding matrix for both and for the
    pre-softmax layer (``share_embeddings="all"``). Input: ``src (B, S)``, ``tgt_in (B, T)`` int64 ->
    ``(B, T, num_classes)``.

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     n = sum(p.numel() for p in transformer_base().parameters())
        >>> n
        63082496
    """
    _check_vocab(num_classes, in_chans)
    return Transformer(
        src_vocab=in_chans, tgt_vocab=num_classes, d_model=d_model, num_heads=num_heads, d_ff=d_ff,
        num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers, dropout=dropout,
        share_embeddings=share_embeddings, pad_id=pad_id, bos_id=bos_id,
    )  # fmt: skip


@register_model(family="Transformer", source="hand-written (paper)", paper="Vaswani et al. 2017", staged=False)
def transformer_tiny(
    *,
    num_classes: int = 12,
    in_chans: int = 12,
    d_model: int = 64,
    num_heads: int = 4,
    d_ff: int = 256,
    num_encoder_layers: int = 2,
    num_decoder_layers: int = 2,
    dropout: float = 0.0,
    share_embeddings: str = "all",
    pad_id: int | None = 0,
    bos_id: int = 1,
) -> Transformer:
    """The base Transformer narrowed for a CPU: d_model 64, 2 + 2 layers, 4 heads, d_ff 256, no dropout.

    234,240 parameters at a 12-token vocabulary (the ``seq2seq`` dataset's default: 10 symbols, pad, start).

    Example:
        >>> sum(p.numel() for p in transformer_tiny().parameters())
        234240
    """
    _check_vocab(num_classes, in_chans)
    return Transformer(
        src_vocab=in_chans, tgt_vocab=num_classes, d_model=d_model, num_heads=num_heads, d_ff=d_ff,
        num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers, dropout=dropout,
        share_embeddings=share_embeddings, pad_id=pad_id, bos_id=bos_id,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- encoder classifier


class PatchTokens(nn.Module):
    """Stem of the encoder classifier: non-overlapping ``p x p`` patches, linearly embedded, plus sinusoidal positions.

    ``(B, C, H, W) -> (B, N, d)`` with ``N = (H / p) (W / p)`` tokens in row-major order; the position of a token is
    its index in that order (the 1-D encoding of section 3.5); dropout on the sum as in the paper.
    """

    def __init__(self, in_chans: int, d_model: int, patch_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, d_model, kernel_size=patch_size, stride=patch_size)
        self.d_model, self.patch_size = d_model, patch_size
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, d)
        return self.drop(x + sinusoidal_positions(x.shape[1], self.d_model, device=x.device, dtype=x.dtype))


class MeanPoolHead(nn.Module):
    """Mean over tokens, then a linear classifier: ``(B, N, d) -> (B, num_classes)``."""

    def __init__(self, d_model: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=1))


class TransformerEncoderClassifier(StagedModel):
    """The Transformer encoder over patch tokens with a mean-pool classifier, Staged (DESIGN.md section 3.1).

    ``stem`` = :class:`PatchTokens` (``(B, C, H, W) -> (B, N, d)``), ``stages`` = the post-norm
    :class:`EncoderLayer` s (``(B, N, d)`` each), ``head`` = :class:`MeanPoolHead`. Token stages:
    ``output_fmt = "NLC"``, ``channels[i] = d``, ``strides[i] = patch_size``, ``num_tokens = N``,
    ``num_prefix_tokens = 0`` (no class token), ``grid_size`` (patches per side, row-major).
    """

    output_fmt = "NLC"


@register_model(
    family="Transformer",
    source="hand-written (paper)",
    paper="Vaswani et al. 2017",
    min_input_size=4,
    small={"d_model": 32, "num_heads": 4, "d_ff": 64, "num_layers": 2},
    small_input_size=32,
)
def transformer_encoder_classifier(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 32,
    patch_size: int = 4,
    d_model: int = 512,
    num_heads: int = 8,
    d_ff: int = 2048,
    num_layers: int = 6,
    dropout: float = 0.1,
) -> TransformerEncoderClassifier:
    """The base Transformer's encoder (6 layers, d 512, 8 heads, d_ff 2048) classifying 4x4 patch tokens of 32 px images.

    Post-norm encoder layers exactly as in the seq2seq model; the tokens are linear patch embeddings (no sqrt(d)
    scaling: that belongs to the looked-up token embeddings) plus sinusoidal positions; no class token: the
    head averages the last layer's tokens. 18,928,138 parameters at the defaults (1 channel, 10 classes).
    The sinusoidal positions accept any image size divisible by ``patch_size``; ``input_size`` records ``img_size``.

    Example:
        >>> import torch
        >>> net = transformer_encoder_classifier(d_model=32, num_heads=4, d_ff=64, num_layers=2).eval()
        >>> net.channels, net.strides, net.num_tokens, net.grid_size
        ([32, 32], [4, 4], 64, (8, 8))
        >>> net(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """
    if img_size % patch_size:
        raise ValueError(f"img_size ({img_size}) must be a multiple of patch_size ({patch_size})")
    layers = [EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)]
    net = TransformerEncoderClassifier(
        PatchTokens(in_chans, d_model, patch_size, dropout),
        layers,
        MeanPoolHead(d_model, num_classes),
        channels=[d_model] * num_layers,
        strides=[patch_size] * num_layers,
        input_size=(in_chans, img_size, img_size),
        num_classes=num_classes,
        num_features=d_model,
    )
    _init_linear_(net)
    grid = img_size // patch_size
    net.grid_size = (grid, grid)
    net.patch_size = patch_size
    net.num_prefix_tokens = 0
    net.num_tokens = grid * grid
    return net
