"""Perceiver (Jaegle et al. 2021): a latent array that repeatedly cross-attends to the input's pixels, then self-attends.

Reference: A. Jaegle, F. Gimeno, A. Brock, A. Zisserman, O. Vinyals, J. Carreira, "Perceiver: General Perception
with Iterative Attention", ICML 2021, sections 2-3. Written by hand from the paper (reference/methods.md section 6;
no code copied from lucidrains/perceiver-pytorch or deepmind-research).

The input is a **byte array** of M = H W tokens: each pixel's C channel values **concatenated** with Fourier
features of its position. Per axis d, with positions ``x_d`` spaced linearly in [-1, 1] and K frequencies
``f_k = linspace(1, mu / 2, K)`` (``mu`` = ``max_freq``, the Nyquist frequency of the resolution):

.. math::

    \\mathrm{pos}(x) = \\big[x_d,\\; \\sin(\\pi f_k x_d),\\; \\cos(\\pi f_k x_d)\\big]_{d = 1..D,\\; k = 1..K}
    \\quad (D (2 K + 1) \\text{ channels})

A learned **latent array** ``z`` (N x D_lat) then goes through ``num_cross_attends`` repeats of

.. math::

    z \\leftarrow z + \\mathrm{CrossAttn}(\\mathrm{LN}(z), \\mathrm{LN}(\\mathrm{bytes})), \\quad
    z \\leftarrow z + \\mathrm{MLP}(\\mathrm{LN}(z)), \\quad
    \\text{then } L \\times \\big[z \\leftarrow z + \\mathrm{SelfAttn}(\\mathrm{LN}(z)),\\;
    z \\leftarrow z + \\mathrm{MLP}(\\mathrm{LN}(z))\\big]

(pre-norm residual blocks; MLP = Linear, GELU, Linear with widening factor 1 as in the paper; cross-attention with
one head whose query/key/value width is the byte width, self-attention with 8 heads). The logits are a linear map of
``LN(mean_n z_n)``. Cost: O(M N) per cross-attend and O(N^2) per self-attention, never O(M^2).

**Weight sharing** (the paper's ImageNet model): cross-attends 2..8 share one set of weights and the first has its
own (``cross_sharing="all_but_first"``); one latent transformer (``L = 6`` blocks) is shared by all eight repeats
(``latent_sharing="all"``), so the network is an RNN unrolled in depth. Parameters are stored once
(``cross_blocks``, ``latent_towers``); ``cross_index`` / ``tower_index`` say which one each repeat uses.

``perceiver_imagenet``: 224 px RGB, 64 frequency bands (byte width 3 + 2 (2 * 64 + 1) = 261), 512 latents of
width 1024, 8 cross-attends, 6 self-attention blocks of 8 heads x 128 per tower, 1000 classes: **44,894,304
parameters**, the number reference/architectures.md section 9 reaches for the paper's 44.9M. lucidrains'
``Perceiver`` differs (GEGLU MLPs widened x4, an unshared first latent tower: 233,508,860 tied / 929,381,432
untied for the same shape); ``cross_sharing`` / ``latent_sharing`` / ``widening`` select those variants.

Deviations and choices: frequencies are spaced **linearly** (the official code; the paper's text says
"log-linearly": reference/methods.md section 6.5). Query/key/value projections have no bias, the output projection
has one. Initialisation (not in the paper): latents truncated normal with std 0.02, linear layers PyTorch's default.
The Fourier features are computed in ``forward`` from the input's own size (any resolution; ``max_freq`` stays fixed).

Permutations: nothing but cross-attention reads the byte array, and attention is a sum over keys, so the output is
**invariant to any permutation of the M byte tokens** (:meth:`Perceiver.forward_bytes`): permuting an image's pixels
together with their position features changes nothing (up to float summation order). Permuting only the pixels (the
positions stay on the grid) is a fixed relabelling of positions, which a Perceiver learns as easily (it has no
locality prior to lose), unlike a CNN.

Shapes: images ``(B, C, H, W)`` -> logits ``(B, num_classes)``; byte arrays ``(B, M, C + 2 (2 K + 1))`` (``forward``
takes either).

Example:
    >>> import torch
    >>> net = perceiver_tiny().eval()
    >>> x = torch.rand(2, 1, 32, 32)
    >>> net(x).shape, net.byte_array(x).shape
    (torch.Size([2, 10]), torch.Size([2, 1024, 35]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model

__all__ = [
    "CrossAttendBlock",
    "LatentBlock",
    "Perceiver",
    "fourier_position_features",
    "perceiver_imagenet",
    "perceiver_tiny",
]

SHARING = ("all", "all_but_first", "none")


def fourier_position_features(
    sizes: tuple[int, ...], *, num_bands: int, max_freq: float, device: Any = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Fourier features of a grid's positions: ``(prod(sizes), len(sizes) * (2 * num_bands + 1))``, row-major.

    Per axis: the position ``x`` in [-1, 1], then ``sin(pi f_k x)`` for k = 1..K, then ``cos(pi f_k x)``, with
    ``f_k = linspace(1, max_freq / 2, K)``.

    Example:
        >>> f = fourier_position_features((2, 3), num_bands=2, max_freq=4.0)
        >>> f.shape, [round(v, 4) + 0.0 for v in f[0, :5].tolist()]  # pixel (0, 0): row -1, sin(-pi), sin(-2pi), cos..
        (torch.Size([6, 10]), [-1.0, 0.0, 0.0, -1.0, 1.0])
    """
    axes = [torch.linspace(-1.0, 1.0, int(n), device=device) for n in sizes]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))  # (M, D)
    freqs = torch.linspace(1.0, max_freq / 2.0, num_bands, device=device)  # (K,)
    angles = math.pi * pos[..., None] * freqs  # (M, D, K)
    feats = torch.cat([pos[..., None], torch.sin(angles), torch.cos(angles)], dim=-1)  # (M, D, 2K + 1)
    return feats.reshape(pos.shape[0], -1).to(dtype)


class Attention(nn.Module):
    """Multi-head attention of ``query (B, N, q_dim)`` over ``context (B, M, kv_dim)`` -> ``(B, N, q_dim)``.

    ``heads`` heads of width ``head_dim``; Q, K, V projections without bias, output projection with bias.
    """

    def __init__(self, q_dim: int, kv_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(q_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, q_dim)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        b, n, _ = query.shape
        m = context.shape[1]
        q = self.to_q(query).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(context).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(context).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        w = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(dim=-1)  # (B, h, N, M)
        return self.to_out((w @ v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class MLP(nn.Sequential):
    """Pre-norm MLP: ``LN, Linear(d, w d), GELU, Linear(w d, d)`` (``w`` = widening factor)."""

    def __init__(self, dim: int, widening: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * widening), nn.GELU(), nn.Linear(dim * widening, dim))


class CrossAttendBlock(nn.Module):
    """``z += CrossAttn(LN(z), LN(bytes)); z += MLP(z)``: latents ``(B, N, D)``, bytes ``(B, M, C)`` -> ``(B, N, D)``."""

    def __init__(self, latent_dim: int, byte_dim: int, heads: int, head_dim: int, widening: int) -> None:
        super().__init__()
        self.norm_latents = nn.LayerNorm(latent_dim)
        self.norm_bytes = nn.LayerNorm(byte_dim)
        self.attn = Attention(latent_dim, byte_dim, heads, head_dim)
        self.mlp = MLP(latent_dim, widening)

    def forward(self, z: Tensor, data: Tensor) -> Tensor:
        z = z + self.attn(self.norm_latents(z), self.norm_bytes(data))
        return z + self.mlp(z)


class LatentBlock(nn.Module):
    """``z += SelfAttn(LN(z)); z += MLP(z)``: ``(B, N, D) -> (B, N, D)``."""

    def __init__(self, latent_dim: int, heads: int, head_dim: int, widening: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(latent_dim)
        self.attn = Attention(latent_dim, latent_dim, heads, head_dim)
        self.mlp = MLP(latent_dim, widening)

    def forward(self, z: Tensor) -> Tensor:
        h = self.norm(z)
        z = z + self.attn(h, h)
        return z + self.mlp(z)


def _schedule(sharing: str, repeats: int, what: str) -> list[int]:
    if sharing not in SHARING:
        raise ValueError(f"{what} must be one of {', '.join(SHARING)}, got {sharing!r}")
    if sharing == "all":
        return [0] * repeats
    if sharing == "all_but_first":
        return [0] + [1] * (repeats - 1)
    return list(range(repeats))


class Perceiver(nn.Module):
    """The Perceiver classifier on images (see the module docstring).

    Args:
        num_classes, in_chans: classes and image channels.
        img_size: the image side the model is built for (``input_size``; any size works, see ``max_freq``).
        num_latents, latent_dim: the latent array (N x D).
        num_cross_attends: repeats of cross-attend + latent transformer.
        self_per_cross: self-attention blocks per latent transformer (tower).
        cross_heads, cross_head_dim: cross-attention heads and head width (``None``: the byte width, as the paper).
        latent_heads, latent_head_dim: self-attention heads and head width.
        widening: MLP hidden width = ``widening * latent_dim`` (paper: 1).
        num_bands, max_freq: Fourier features (``max_freq`` default: ``img_size``, the Nyquist rate is half of it);
            ``num_bands=0`` gives no position features (a set model over pixel values).
        cross_sharing, latent_sharing: ``"all"``, ``"all_but_first"`` or ``"none"`` (paper: ``"all_but_first"`` for
            cross-attends, ``"all"`` for latent towers). No dropout (the paper's ImageNet model uses none).

    Attributes: ``latents``, ``cross_blocks``, ``latent_towers`` (unique modules), ``cross_index``, ``tower_index``
    (which one repeat r uses), ``layers`` (per repeat: ``(cross block, tower)``), ``head``, ``input_size``,
    ``num_classes``, ``byte_dim``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        img_size: int,
        num_latents: int,
        latent_dim: int,
        num_cross_attends: int,
        self_per_cross: int,
        cross_heads: int = 1,
        cross_head_dim: int | None = None,
        latent_heads: int = 8,
        latent_head_dim: int = 64,
        widening: int = 1,
        num_bands: int = 64,
        max_freq: float | None = None,
        cross_sharing: str = "all_but_first",
        latent_sharing: str = "all",
    ) -> None:
        super().__init__()
        if num_cross_attends < 1 or self_per_cross < 0 or num_bands < 0:
            raise ValueError(
                f"need num_cross_attends >= 1, self_per_cross >= 0, num_bands >= 0; got {num_cross_attends}, "
                f"{self_per_cross}, {num_bands}"
            )
        self.num_classes, self.in_chans, self.num_bands = num_classes, in_chans, num_bands
        self.max_freq = float(img_size if max_freq is None else max_freq)
        self.input_size = (in_chans, img_size, img_size)
        self.byte_dim = in_chans + (2 * (2 * num_bands + 1) if num_bands else 0)
        self.cross_index = _schedule(cross_sharing, num_cross_attends, "cross_sharing")
        self.tower_index = _schedule(latent_sharing, num_cross_attends, "latent_sharing")
        head_dim = self.byte_dim if cross_head_dim is None else cross_head_dim
        self.latents = nn.Parameter(torch.empty(num_latents, latent_dim))
        self.cross_blocks = nn.ModuleList(
            CrossAttendBlock(latent_dim, self.byte_dim, cross_heads, head_dim, widening)
            for _ in range(max(self.cross_index) + 1)
        )
        self.latent_towers = nn.ModuleList(
            nn.Sequential(*(LatentBlock(latent_dim, latent_heads, latent_head_dim, widening) for _ in range(self_per_cross)))
            for _ in range(max(self.tower_index) + 1)
        )
        self.head = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, num_classes))
        nn.init.trunc_normal_(self.latents, std=0.02, a=-0.04, b=0.04)

    @property
    def layers(self) -> list[tuple[CrossAttendBlock, nn.Sequential]]:
        """Per repeat: the cross-attend block and the latent tower it uses (shared modules appear repeatedly)."""
        return [(self.cross_blocks[c], self.latent_towers[t]) for c, t in zip(self.cross_index, self.tower_index)]

    def byte_array(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> bytes ``(B, H W, C + 2 (2 K + 1))``: pixel values, then position features."""
        b, c, h, w = x.shape
        pixels = x.flatten(2).transpose(1, 2)  # (B, HW, C), row-major
        if not self.num_bands:
            return pixels
        pos = fourier_position_features((h, w), num_bands=self.num_bands, max_freq=self.max_freq, device=x.device,
                                        dtype=x.dtype)  # fmt: skip
        return torch.cat([pixels, pos.expand(b, -1, -1)], dim=-1)

    def forward_bytes(self, data: Tensor) -> Tensor:
        """A byte array ``(B, M, byte_dim)`` (any M, any token order) -> logits ``(B, num_classes)``."""
        z = self.latents.repeat(data.shape[0], 1, 1)  # a copy: a view of a leaf made under no_grad trips autograd hooks
        for cross, tower in self.layers:
            z = tower(cross(z, data))
        return self.head(z.mean(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)``, or ready-made byte arrays ``(B, M, byte_dim)`` -> logits ``(B, num_classes)``.

        A byte array must hold, per token, the ``C`` channel values followed by position features of the same
        width as :meth:`byte_array` makes (e.g. the ``permuted_digits`` dataset with ``tokens=true``, whose
        Fourier features are computed before the pixels are permuted, so they travel with their pixels).
        """
        if x.dim() == 3:
            if x.shape[-1] != self.byte_dim:
                raise ValueError(f"a byte array (B, M, D) needs D = byte_dim = {self.byte_dim} (in_chans "
                                 f"{self.in_chans} + position features), got {tuple(x.shape)}")  # fmt: skip
            return self.forward_bytes(x)
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W) or bytes (B, M, {self.byte_dim}), "
                             f"got {tuple(x.shape)}")  # fmt: skip
        return self.forward_bytes(self.byte_array(x))


@register_model(
    family="Perceiver",
    source="hand-written (paper)",
    paper="Jaegle et al. 2021",
    small={"num_latents": 16, "latent_dim": 32, "num_cross_attends": 2, "self_per_cross": 1, "latent_heads": 2,
           "latent_head_dim": 16, "num_bands": 4},
    small_input_size=32,
    staged=False,
)  # fmt: skip
def perceiver_imagenet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int = 224,
    num_latents: int = 512,
    latent_dim: int = 1024,
    num_cross_attends: int = 8,
    self_per_cross: int = 6,
    cross_heads: int = 1,
    cross_head_dim: int | None = None,
    latent_heads: int = 8,
    latent_head_dim: int = 128,
    widening: int = 1,
    num_bands: int = 64,
    max_freq: float | None = None,
    cross_sharing: str = "all_but_first",
    latent_sharing: str = "all",
) -> Perceiver:
    """The paper's ImageNet Perceiver (Jaegle et al. 2021): 44,894,304 parameters (224 px RGB, 1000 classes).

    512 x 1024 latents, 8 cross-attends (1 head, width 261 = the byte width), a 6-block latent transformer (8 heads
    x 128) shared by all repeats, cross-attends shared except the first, MLP widening 1, 64 Fourier bands up to
    ``max_freq`` = 224. Not Staged: every repeat reads the input as well as the latents.

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     n = sum(p.numel() for p in perceiver_imagenet().parameters())
        >>> n
        44894304
    """
    return Perceiver(
        num_classes=num_classes, in_chans=in_chans, img_size=img_size, num_latents=num_latents,
        latent_dim=latent_dim, num_cross_attends=num_cross_attends, self_per_cross=self_per_cross,
        cross_heads=cross_heads, cross_head_dim=cross_head_dim, latent_heads=latent_heads,
        latent_head_dim=latent_head_dim, widening=widening, num_bands=num_bands, max_freq=max_freq,
        cross_sharing=cross_sharing, latent_sharing=latent_sharing,
    )  # fmt: skip


@register_model(family="Perceiver", source="hand-written (paper)", paper="Jaegle et al. 2021", staged=False)
def perceiver_tiny(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 32,
    num_latents: int = 32,
    latent_dim: int = 64,
    num_cross_attends: int = 2,
    self_per_cross: int = 2,
    cross_heads: int = 1,
    cross_head_dim: int | None = None,
    latent_heads: int = 4,
    latent_head_dim: int = 16,
    widening: int = 1,
    num_bands: int = 8,
    max_freq: float | None = None,
    cross_sharing: str = "all_but_first",
    latent_sharing: str = "all",
) -> Perceiver:
    """The ImageNet Perceiver's design narrowed for digits on a CPU: 32 x 64 latents, 2 cross-attends, 2-block tower.

    32 px grey images by default (byte width 1 + 2 (2 * 8 + 1) = 35), 4 heads x 16, same sharing as the paper.
    """
    return Perceiver(
        num_classes=num_classes, in_chans=in_chans, img_size=img_size, num_latents=num_latents,
        latent_dim=latent_dim, num_cross_attends=num_cross_attends, self_per_cross=self_per_cross,
        cross_heads=cross_heads, cross_head_dim=cross_head_dim, latent_heads=latent_heads,
        latent_head_dim=latent_head_dim, widening=widening, num_bands=num_bands, max_freq=max_freq,
        cross_sharing=cross_sharing, latent_sharing=latent_sharing,
    )  # fmt: skip
