"""NeRF (Mildenhall et al. 2020): a radiance-field MLP on positionally encoded points, rendered by volume rendering.

Reference: B. Mildenhall, P. P. Srinivasan, M. Tancik, J. T. Barron, R. Ramamoorthi, R. Ng, "NeRF: Representing
Scenes as Neural Radiance Fields for View Synthesis", ECCV 2020.

Positional encoding (eq. 4), applied to each coordinate, ``L = 10`` for positions and ``L = 4`` for directions:

.. math::

    \\gamma(p) = (p, \\sin(2^0 s p), \\cos(2^0 s p), \\dots, \\sin(2^{L-1} s p), \\cos(2^{L-1} s p))

(the paper writes ``s = pi`` and leaves ``p`` out; the authors' code, whose layer sizes the paper's parameter count
comes from, uses ``s = 1`` and keeps ``p``: 63 and 27 features. ``s`` is ``pe_scale``, default 1.)

The MLP (Fig. 7): 8 ReLU layers of 256 units with ``gamma(x)`` concatenated again to the 5th layer's input, a
density head ``sigma = ReLU(w^T h)``, a 256-d feature, and a 128-unit ReLU layer on ``[feature, gamma(d)]`` followed by
a sigmoid colour head: 595,844 parameters (one MLP), 1,191,688 for the coarse and fine pair.

Volume rendering (eq. 3), with samples ``t_1 < ... < t_N`` on the ray ``r(t) = o + t d`` and
``delta_i = t_{i+1} - t_i`` (``delta_N = 1e10``, as the authors' code):

.. math::

    \\hat C(r) = \\sum_i T_i (1 - e^{-\\sigma_i \\delta_i}) c_i, \\qquad T_i = \\exp(-\\sum_{j<i} \\sigma_j \\delta_j)

``T_i`` is computed exactly, as the exponential of an exclusive cumulative sum (no ``cumprod(1 - alpha + eps)``).

Sampling (section 5.2): ``N_c = 64`` stratified samples ``t_i ~ U[t_n + (i-1)/N (t_f - t_n), t_n + i/N (t_f - t_n)]``
for the coarse network; then ``N_f = 128`` samples drawn by inverse transform from the piecewise-constant PDF of the
normalised coarse weights ``w_i = T_i alpha_i`` (one bin per coarse sample), and the fine network evaluated at all
``N_c + N_f`` sorted samples. Gradients do not flow through the sample positions. In eval mode the stratified
samples are the bin midpoints and the inverse-transform quantiles are evenly spaced (deterministic rendering).

Shapes: rays ``(B, 6)`` = origin and direction (or keyword tensors ``origins``, ``dirs``, each ``(B, 3)``; the
direction is normalised for the view encoding and used as given for the points) -> ``[coarse_rgb, fine_rgb]``, each
``(B, 3)`` in ``[0, 1]``; the last is the prediction (docs/tasks.md). Without a fine network (``num_fine=0``): one
output ``[coarse_rgb]``.

Deviations: ``nerf_tiny`` uses a softplus density by default (``density_act``); no ``raw_noise_std`` density noise
(the authors use it for real scenes only), no NDC rays; the background colour ``background`` is added with weight
``1 - sum_i w_i`` (0 by default: black).

Example:
    >>> import torch
    >>> net = nerf_tiny()
    >>> rays = torch.cat([torch.tensor([[0.0, 0.0, -4.0]]).expand(5, 3), torch.randn(5, 3)], dim=1)
    >>> [o.shape for o in net.eval()(rays)]
    [torch.Size([5, 3]), torch.Size([5, 3])]
    >>> sum(p.numel() for p in nerf().coarse.parameters())
    595844
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model

__all__ = [
    "NeRF",
    "NeRFMLP",
    "PositionalEncoding",
    "nerf",
    "nerf_tiny",
    "render_weights",
    "sample_pdf",
    "stratified_samples",
]


class PositionalEncoding(nn.Module):
    """``gamma(p)`` of eq. 4 per coordinate: ``[p, sin(2^k s p), cos(2^k s p) for k < L]`` (see module docstring).

    Shapes: ``(..., d)`` -> ``(..., d (include_input + 2 L))``, features ordered ``[p, sin(f_0 p), cos(f_0 p),
    sin(f_1 p), ...]`` (each block ``d`` wide).

    Example:
        >>> pe = PositionalEncoding(num_freqs=3, scale=1.0)
        >>> pe.freqs.tolist(), pe(torch.zeros(4, 3)).shape, pe.out_features(3)
        ([1.0, 2.0, 4.0], torch.Size([4, 21]), 21)
    """

    def __init__(self, num_freqs: int, *, scale: float = 1.0, include_input: bool = True) -> None:
        super().__init__()
        if int(num_freqs) < 0:
            raise ValueError(f"num_freqs must be >= 0, got {num_freqs}")
        self.num_freqs = int(num_freqs)
        self.include_input = bool(include_input)
        self.register_buffer("freqs", float(scale) * 2.0 ** torch.arange(self.num_freqs, dtype=torch.float32))

    def out_features(self, d: int) -> int:
        """Output width for ``d`` input coordinates."""
        return d * (int(self.include_input) + 2 * self.num_freqs)

    def forward(self, p: Tensor) -> Tensor:
        parts = [p] if self.include_input else []
        for f in self.freqs.to(p.dtype):
            parts += [torch.sin(f * p), torch.cos(f * p)]
        return torch.cat(parts, dim=-1)


DENSITY_ACTS = ("relu", "softplus")


class NeRFMLP(nn.Module):
    """The radiance MLP of Fig. 7: ``(gamma(x), gamma(d)) -> (sigma, rgb)``.

    Args:
        pos_features, dir_features: widths of ``gamma(x)`` and ``gamma(d)`` (63 and 27 in the paper).
        width, depth: hidden units and layers of the trunk (256 and 8).
        skips: trunk layers (0-based) whose input is ``[h, gamma(x)]``; ``(5,)``: ``gamma(x)`` joins the activations
            of the 5th layer (Fig. 7).
        view_width: the direction-dependent layer's width (128).
        density_act: ``relu`` (the paper) or ``softplus`` (as Mip-NeRF, Barron et al. 2021: the density never
            stops passing gradient; it trained faster in short CPU runs, experiments/configs/nerf_spheres.yaml).

    Shapes: ``(N, pos_features)``, ``(N, dir_features)`` -> ``sigma (N,)`` (>= 0) and ``rgb (N, 3)`` in ``[0, 1]``.
    """

    def __init__(
        self,
        *,
        pos_features: int = 63,
        dir_features: int = 27,
        width: int = 256,
        depth: int = 8,
        skips: Sequence[int] = (5,),
        view_width: int = 128,
        density_act: str = "relu",
    ) -> None:
        super().__init__()
        if density_act not in DENSITY_ACTS:
            raise ValueError(f"unknown density_act {density_act!r}; choose from: {', '.join(DENSITY_ACTS)}")
        self.density_act = density_act
        self.skips = tuple(int(s) for s in skips)
        if any(not 0 < s < depth for s in self.skips):
            raise ValueError(f"skips must be trunk layers 1..{depth - 1}, got {self.skips}")
        self.trunk = nn.ModuleList(
            nn.Linear(pos_features if i == 0 else width + (pos_features if i in self.skips else 0), width)
            for i in range(depth)
        )
        self.sigma = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.view = nn.Linear(width + dir_features, view_width)
        self.rgb = nn.Linear(view_width, 3)

    def forward(self, pos: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        h = pos
        for i, layer in enumerate(self.trunk):
            if i in self.skips:
                h = torch.cat([h, pos], dim=-1)
            h = F.relu(layer(h))
        raw = self.sigma(h).squeeze(-1)
        sigma = F.relu(raw) if self.density_act == "relu" else F.softplus(raw)
        v = F.relu(self.view(torch.cat([self.feature(h), dirs], dim=-1)))
        return sigma, torch.sigmoid(self.rgb(v))


def stratified_samples(near: float, far: float, num: int, shape: Sequence[int], *, jitter: bool,
                       device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``num`` sorted depths per ray in ``[near, far]``: one uniform draw per equal bin (``jitter``) or its midpoint.

    Shapes: -> ``(*shape, num)``.

    Example:
        >>> stratified_samples(2.0, 6.0, 4, (1,), jitter=False).tolist()
        [[2.5, 3.5, 4.5, 5.5]]
    """
    edges = torch.linspace(near, far, num + 1, device=device, dtype=dtype)
    lo, width = edges[:-1], edges[1:] - edges[:-1]
    u = torch.rand(*shape, num, device=device, dtype=dtype) if jitter else torch.full((*shape, num), 0.5, dtype=dtype,
                                                                                        device=device)
    return lo + width * u


def render_weights(sigma: Tensor, t: Tensor, *, last_delta: float = 1e10) -> Tensor:
    """Compositing weights ``w_i = T_i (1 - exp(-sigma_i delta_i))``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` (eq. 3).

    Shapes: densities ``sigma`` and sorted depths ``t``, both ``(..., N)`` -> weights ``(..., N)``; the last interval is
    ``last_delta`` long.

    Example:
        >>> w = render_weights(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 2.0]))
        >>> [round(v, 4) for v in w.tolist()]  # 1 - e^-1, then e^-1 (1 - 0) for the infinite last interval
        [0.0, 0.6321, 0.3679]
    """
    delta = torch.cat([t[..., 1:] - t[..., :-1], torch.full_like(t[..., :1], last_delta)], dim=-1)
    tau = sigma * delta
    # exclusive cumulative optical depth: T_i = exp(-sum_{j<i} tau_j)
    trans = torch.exp(-torch.cat([torch.zeros_like(tau[..., :1]), torch.cumsum(tau[..., :-1], dim=-1)], dim=-1))
    return trans * -torch.expm1(-tau)


def sample_pdf(edges: Tensor, weights: Tensor, num: int, *, deterministic: bool, eps: float = 1e-5) -> Tensor:
    """Inverse-transform sampling of the piecewise-constant PDF with bin ``edges`` ``(..., M + 1)`` and ``weights``.

    The PDF is ``(w_i + eps) / sum_j (w_j + eps)`` on bin ``[e_i, e_{i+1})`` (``eps`` keeps an all-zero ray sampled
    uniformly); a quantile ``u`` maps linearly inside the bin where the CDF crosses it. The quantiles are
    ``(k + 1/2) / num`` (``deterministic``) or uniform draws. Shapes: -> ``(..., num)``, sorted when deterministic.

    Example:
        >>> s = sample_pdf(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.0]), 4, deterministic=True,
        ...                eps=0.0)
        >>> s.tolist()
        [1.125, 1.375, 1.625, 1.875]
    """
    w = weights + eps
    pdf = w / w.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # (..., M + 1)
    cdf[..., -1] = 1.0
    shape = (*cdf.shape[:-1], num)
    if deterministic:
        u = ((torch.arange(num, device=cdf.device, dtype=cdf.dtype) + 0.5) / num).expand(shape).contiguous()
    else:
        u = torch.rand(shape, device=cdf.device, dtype=cdf.dtype)
    m = pdf.shape[-1]
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, m) - 1  # bin i with cdf_i <= u < cdf_{i+1}
    c0, c1 = cdf.gather(-1, idx), cdf.gather(-1, idx + 1)
    e0, e1 = edges.expand(*cdf.shape).gather(-1, idx), edges.expand(*cdf.shape).gather(-1, idx + 1)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return e0 + frac * (e1 - e0)


class NeRF(nn.Module):
    """Coarse and fine radiance MLPs with stratified and hierarchical sampling (see the module docstring).

    Attributes: ``coarse``, ``fine`` (``None`` when ``num_fine = 0``), ``pos_enc``, ``dir_enc``, ``near``, ``far``,
    ``num_coarse``, ``num_fine``, ``num_classes`` (3).
    """

    def __init__(
        self,
        *,
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        pe_scale: float = 1.0,
        width: int = 256,
        depth: int = 8,
        skips: Sequence[int] = (5,),
        view_width: int = 128,
        density_act: str = "relu",
        num_coarse: int = 64,
        num_fine: int = 128,
        near: float = 2.0,
        far: float = 6.0,
        background: float = 0.0,
        chunk: int = 65536,
    ) -> None:
        super().__init__()
        if not 0.0 <= near < far:
            raise ValueError(f"need 0 <= near < far, got near={near}, far={far}")
        if num_coarse < 2 or num_fine < 0:
            raise ValueError(f"need num_coarse >= 2 and num_fine >= 0, got {num_coarse}, {num_fine}")
        self.pos_enc = PositionalEncoding(pos_freqs, scale=pe_scale)
        self.dir_enc = PositionalEncoding(dir_freqs, scale=pe_scale)
        kw = dict(pos_features=self.pos_enc.out_features(3), dir_features=self.dir_enc.out_features(3), width=width,
                  depth=depth, skips=skips, view_width=view_width, density_act=density_act)
        self.coarse = NeRFMLP(**kw)
        self.fine = NeRFMLP(**kw) if num_fine > 0 else None
        self.near, self.far = float(near), float(far)
        self.num_coarse, self.num_fine = int(num_coarse), int(num_fine)
        self.background = float(background)
        self.chunk = int(chunk)
        self.num_classes = 3

    def _render(self, mlp: NeRFMLP, origins: Tensor, dirs: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Colour ``(B, 3)`` and weights ``(B, N)`` of the rays at depths ``t`` ``(B, N)``."""
        pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]  # (B, N, 3)
        viewdirs = F.normalize(dirs, dim=-1)[:, None, :].expand_as(pts)
        pos, vd = self.pos_enc(pts.reshape(-1, 3)), self.dir_enc(viewdirs.reshape(-1, 3))
        outs = [mlp(pos[i : i + self.chunk], vd[i : i + self.chunk]) for i in range(0, pos.shape[0], self.chunk)]
        sigma = torch.cat([o[0] for o in outs]).view(t.shape)
        rgb = torch.cat([o[1] for o in outs]).view(*t.shape, 3)
        w = render_weights(sigma, t)
        color = (w[..., None] * rgb).sum(dim=-2) + (1.0 - w.sum(dim=-1, keepdim=True)) * self.background
        return color, w

    def forward(self, x: Tensor | None = None, *, origins: Tensor | None = None, dirs: Tensor | None = None
                ) -> list[Tensor]:
        """``[coarse_rgb, fine_rgb]`` (each ``(B, 3)``) for rays ``x`` ``(B, 6)`` or ``origins``/``dirs`` ``(B, 3)``."""
        if x is not None:
            if x.dim() != 2 or x.shape[-1] != 6:
                raise ValueError(f"NeRF takes rays (B, 6) = origin and direction, got {tuple(x.shape)}")
            origins, dirs = x[:, :3], x[:, 3:]
        elif origins is None or dirs is None:
            raise ValueError("NeRF takes rays (B, 6), or both origins (B, 3) and dirs (B, 3)")
        t = stratified_samples(self.near, self.far, self.num_coarse, (origins.shape[0],), jitter=self.training,
                               device=origins.device, dtype=origins.dtype)
        coarse, w = self._render(self.coarse, origins, dirs, t)
        if self.fine is None:
            return [coarse]
        mids = 0.5 * (t[..., 1:] + t[..., :-1])
        edges = torch.cat([torch.full_like(t[..., :1], self.near), mids, torch.full_like(t[..., :1], self.far)], -1)
        t_fine = sample_pdf(edges, w.detach(), self.num_fine, deterministic=not self.training)
        t_all, _ = torch.sort(torch.cat([t, t_fine.detach()], dim=-1), dim=-1)
        fine, _ = self._render(self.fine, origins, dirs, t_all)
        return [coarse, fine]


def _build(num_classes: int, in_chans: int, **kw: object) -> NeRF:
    if int(num_classes) != 3 or int(in_chans) not in (3, 6):
        raise ValueError(
            f"NeRF renders RGB from rays: num_classes must be 3 and in_chans 6 (or 3), got {num_classes}, {in_chans}"
        )
    return NeRF(**kw)  # type: ignore[arg-type]


@register_model(
    family="nerf",
    source="hand-written (paper)",
    paper="Mildenhall et al. 2020",
    staged=False,
    small={"width": 32, "depth": 2, "skips": (1,), "view_width": 16, "num_coarse": 8, "num_fine": 8},
)
def nerf(
    *,
    num_classes: int = 3,
    in_chans: int = 6,
    pos_freqs: int = 10,
    dir_freqs: int = 4,
    pe_scale: float = 1.0,
    width: int = 256,
    depth: int = 8,
    skips: Sequence[int] = (5,),
    view_width: int = 128,
    density_act: str = "relu",
    num_coarse: int = 64,
    num_fine: int = 128,
    near: float = 2.0,
    far: float = 6.0,
    background: float = 0.0,
) -> NeRF:
    """NeRF at the paper's size: two 8x256 MLPs (595,844 parameters each), L = 10 / 4, 64 coarse + 128 fine samples.

    Args:
        num_classes: 3 (RGB). in_chans: 6 (ray origin and direction).
        pos_freqs, dir_freqs: ``L`` of the position and direction encodings.
        pe_scale: ``s`` of the encoding (1: the authors' code; pi: the paper's eq. 4).
        width, depth, skips, view_width, density_act: the MLP (:class:`NeRFMLP`).
        num_coarse, num_fine: samples per ray (``num_fine = 0``: coarse network only).
        near, far: the depth range sampled on every ray.
        background: colour behind the scene (added with weight ``1 - sum w``).

    Example:
        >>> sum(p.numel() for p in nerf().parameters())
        1191688
    """
    return _build(num_classes, in_chans, pos_freqs=pos_freqs, dir_freqs=dir_freqs, pe_scale=pe_scale, width=width,
                  depth=depth, skips=skips, view_width=view_width, density_act=density_act, num_coarse=num_coarse,
                  num_fine=num_fine,
                  near=near, far=far, background=background)


@register_model(family="nerf", source="hand-written (paper)", paper="Mildenhall et al. 2020", staged=False)
def nerf_tiny(
    *,
    num_classes: int = 3,
    in_chans: int = 6,
    pos_freqs: int = 6,
    dir_freqs: int = 2,
    pe_scale: float = 1.0,
    width: int = 64,
    depth: int = 4,
    skips: Sequence[int] = (2,),
    view_width: int = 32,
    density_act: str = "softplus",
    num_coarse: int = 32,
    num_fine: int = 32,
    near: float = 2.0,
    far: float = 6.0,
    background: float = 0.0,
) -> NeRF:
    """A CPU-sized NeRF: two 4x64 MLPs (skip at layer 3), L = 6 / 2, 32 coarse + 32 fine samples per ray, softplus
    density (``density_act``; see :class:`NeRFMLP`)."""
    return _build(num_classes, in_chans, pos_freqs=pos_freqs, dir_freqs=dir_freqs, pe_scale=pe_scale, width=width,
                  depth=depth, skips=skips, view_width=view_width, density_act=density_act, num_coarse=num_coarse,
                  num_fine=num_fine,
                  near=near, far=far, background=background)
