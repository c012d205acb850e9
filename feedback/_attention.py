r"""Small attention helpers shared by the routing kinds (``brims``, ``layer_attention``, ``latents``).

Stage shapes come in three layouts (per sample, no batch dimension): a map ``(C, H, W)``, a vector ``(C,)`` and
tokens ``(N, D)`` (a ViT). Every helper here treats the *channel* axis (``C``, or ``D`` for tokens) as the feature
axis and the rest as positions:

- :func:`layout`, :func:`channels`, :func:`to_tokens` / :func:`from_tokens` (``(B, M, C)`` with ``M = H W``, 1 or
  ``N`` positions) and :func:`pool` (mean over positions, ``(B, C)``);
- :class:`Resample`: a learned channel projection followed by a parameter-free change of resolution, mapping any
  stage shape to any other of a compatible layout (maps <-> maps, vectors <-> anything, tokens <-> tokens);
- :class:`GroupLinear`: ``K`` independent linear maps applied to ``K`` groups at once (a ``(K, d_in, d_out)``
  weight and one ``einsum``: the grouped weights the reference notes recommend over zeroed off-diagonal blocks);
- :class:`CrossAttention`: multi-head scaled dot-product attention :math:`\mathrm{softmax}(QK^\top/\sqrt{d})V`
  with pre-layer-norm on both sides (as the Perceiver), through ``F.scaled_dot_product_attention``;
- :func:`fourier_positions`: the Perceiver's Fourier position features of a ``H x W`` grid.

Example:
    >>> import torch
    >>> r = Resample((16, 4, 4), (8, 8, 8))
    >>> r(torch.randn(2, 16, 4, 4)).shape
    torch.Size([2, 8, 8, 8])
    >>> Resample((10,), (6, 5, 5))(torch.randn(2, 10)).shape
    torch.Size([2, 6, 5, 5])
    >>> attn = CrossAttention(q_dim=8, kv_dim=12, dim=16, heads=2, out_dim=8)
    >>> attn(torch.randn(2, 5, 8), torch.randn(2, 7, 12)).shape
    torch.Size([2, 5, 8])
    >>> fourier_positions(4, 6, bands=3).shape  # 2 axes x (2 x 3 + 1)
    torch.Size([24, 14])
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CrossAttention",
    "GroupLinear",
    "Resample",
    "channels",
    "fourier_positions",
    "from_tokens",
    "layout",
    "pool",
    "to_tokens",
]


def layout(shape: tuple[int, ...]) -> str:
    """``"map"`` for (C, H, W), ``"vec"`` for (C,), ``"tok"`` for (N, D); ``ValueError`` otherwise."""
    kinds = {1: "vec", 2: "tok", 3: "map"}
    if len(shape) not in kinds:
        raise ValueError(f"stage shape {tuple(shape)} is none of (C,), (N, D), (C, H, W)")
    return kinds[len(shape)]


def channels(shape: tuple[int, ...]) -> int:
    """The feature axis' size: C for maps and vectors, D for tokens."""
    return shape[-1] if layout(shape) == "tok" else shape[0]


def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H W, C); (B, C) -> (B, 1, C); (B, N, D) unchanged."""
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 2:
        return x[:, None, :]
    return x


def from_tokens(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`to_tokens` for a per-sample ``shape``."""
    kind = layout(shape)
    if kind == "map":
        return t.transpose(1, 2).reshape(t.shape[0], *shape)
    if kind == "vec":
        return t[:, 0, :]
    return t


def pool(x: Tensor) -> Tensor:
    """Mean over positions: (B, C, H, W) -> (B, C); (B, N, D) -> (B, D); (B, C) unchanged."""
    if x.dim() == 4:
        return x.mean((2, 3))
    if x.dim() == 3:
        return x.mean(1)
    return x


class Resample(nn.Module):
    """Map a stage tensor of per-sample shape ``source`` to per-sample shape ``target``.

    A linear map on the channel axis (a 1x1 convolution for maps), then a change of resolution without
    parameters: adaptive average pooling where the target is coarser, nearest-neighbour upsampling where it is
    finer, broadcasting from a vector (one position) and averaging into a vector. Tokens change count the same way
    along the token axis. Maps and tokens do not convert into each other (``ValueError``).

    Parameters: ``C_source C_target + C_target``.
    """

    def __init__(self, source: tuple[int, ...], target: tuple[int, ...]) -> None:
        super().__init__()
        self.source, self.target = tuple(source), tuple(target)
        ls, lt = layout(self.source), layout(self.target)
        if {ls, lt} == {"map", "tok"}:
            raise ValueError(f"cannot resample between a map and tokens: {self.source} -> {self.target}")
        self.proj = nn.Linear(channels(self.source), channels(self.target))

    def forward(self, y: Tensor) -> Tensor:
        ls, lt = layout(self.source), layout(self.target)
        if ls == "map":
            y = F.conv2d(y, self.proj.weight[:, :, None, None], self.proj.bias)
        else:
            y = self.proj(y)
        if lt == "vec":
            return pool(y)
        if lt == "map":
            size = self.target[1:]
            if ls == "vec":
                return y[:, :, None, None].expand(-1, -1, *size)
            if y.shape[-2] >= size[0] and y.shape[-1] >= size[1]:
                return y if tuple(y.shape[-2:]) == size else F.adaptive_avg_pool2d(y, size)
            return F.interpolate(y, size=size, mode="nearest")
        n = self.target[0]  # tokens
        if ls == "vec":
            return y[:, None, :].expand(-1, n, -1)
        if y.shape[1] == n:
            return y
        y = y.transpose(1, 2)
        y = F.adaptive_avg_pool1d(y, n) if y.shape[-1] > n else F.interpolate(y, size=n, mode="nearest")
        return y.transpose(1, 2)


class GroupLinear(nn.Module):
    """``K`` independent linear maps: (B, K, d_in) -> (B, K, d_out), weight (K, d_in, d_out), bias (K, d_out)."""

    def __init__(self, groups: int, d_in: int, d_out: int, *, bias: bool = True) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(groups, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(groups, d_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("bki,kio->bko", x, self.weight)
        return y if self.bias is None else y + self.bias


class CrossAttention(nn.Module):
    r"""Multi-head attention of queries (B, M, q_dim) over keys/values (B, N, kv_dim) -> (B, M, out_dim).

    .. math:: \mathrm{out} = W_o\,\mathrm{concat}_h\,\mathrm{softmax}\big(Q_h K_h^\top / \sqrt{d_h}\big) V_h,
              \quad Q = \mathrm{LN}(q) W_q,\; K = \mathrm{LN}(kv) W_k,\; V = \mathrm{LN}(kv) W_v.

    With ``kv_dim=None`` it is self-attention of the queries (one layer norm; call it with ``kv=None``).
    """

    def __init__(self, *, q_dim: int, kv_dim: int | None, dim: int, heads: int = 1, out_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.norm_q = nn.LayerNorm(q_dim)
        self.norm_kv = nn.LayerNorm(kv_dim) if kv_dim is not None else None
        kv_dim = q_dim if kv_dim is None else kv_dim
        self.q = nn.Linear(q_dim, dim, bias=False)
        self.k = nn.Linear(kv_dim, dim, bias=False)
        self.v = nn.Linear(kv_dim, dim, bias=False)
        self.out = nn.Linear(dim, out_dim if out_dim is not None else q_dim)

    def forward(self, q: Tensor, kv: Tensor | None = None) -> Tensor:
        qn = self.norm_q(q)
        if (kv is None) != (self.norm_kv is None):
            raise ValueError("pass kv to a cross-attention (kv_dim set) and only to it")
        kvn = qn if kv is None else self.norm_kv(kv)
        b, m, _ = q.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        qh, kh, vh = split(self.q(qn)), split(self.k(kvn)), split(self.v(kvn))
        if kh.dtype != qh.dtype:
            kh, vh = kh.to(qh.dtype), vh.to(qh.dtype)
        o = F.scaled_dot_product_attention(qh, kh, vh)
        return self.out(o.transpose(1, 2).reshape(b, m, -1))


def fourier_positions(h: int, w: int, *, bands: int) -> Tensor:
    """Fourier features of an ``h x w`` grid, (h w, 2 (2 bands + 1)), row-major like :func:`to_tokens`.

    Positions ``x_d`` in [-1, 1] per axis, frequencies ``f_k = linspace(1, n_d / 2, bands)`` (linear spacing, as the
    Perceiver's official code; the paper says "log-linearly"), features ``[sin(pi f_k x_d), cos(pi f_k x_d), x_d]``.
    """
    feats = []
    for n, idx in ((h, 0), (w, 1)):
        pos = torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1)
        f = torch.linspace(1.0, max(n / 2.0, 1.0), bands)
        ang = math.pi * pos[:, None] * f[None, :]
        axis = torch.cat([torch.sin(ang), torch.cos(ang), pos[:, None]], 1)  # (n, 2 bands + 1)
        feats.append(axis[:, None, :].expand(-1, w, -1) if idx == 0 else axis[None, :, :].expand(h, -1, -1))
    return torch.cat(feats, -1).reshape(h * w, -1)
