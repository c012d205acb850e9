"""Low-rank compression of ``nn.Linear`` and ``nn.Conv2d`` layers: truncated SVD and Fisher-weighted SVD (FWSVD).

**Truncated SVD.** A weight ``W`` of shape ``(m, n)`` (a linear layer's ``(out, in)``; a convolution's
``(out, in * kh * kw)``) is replaced by the product ``W ~ A B`` of ``A = U_r S_r`` ``(m, r)`` and ``B = V_r^T``
``(r, n)`` from its singular value decomposition ``W = U S V^T`` truncated to the ``r`` largest singular values
(Eckart-Young: the best rank-``r`` approximation in Frobenius norm). The layer becomes two layers: ``B`` (no bias;
for a convolution, a ``kh x kw`` convolution to ``r`` channels with the original stride, padding and dilation) then
``A`` (with the original bias; for a convolution, a ``1x1`` convolution). Parameters go from ``m n`` to
``r (m + n)``; it only saves when ``r < m n / (m + n)``.

**Fisher-weighted SVD** (Hsu, Hua, Tang, Liu, Lee, Jin, 2022, "Language model compression with weighted low-rank
factorization", ICLR). The plain SVD treats all of ``W``'s entries alike; FWSVD weights each row ``i`` by the
square root of its summed Fisher information ``I_i = sum_j F_ij`` (estimated as the sum of squared gradients of
the loss over a few minibatches), ``D = diag(sqrt(I_i))``, and solves ``min ||D (W - A B)||_F`` over rank-``r``
``A B``: ``A B = D^{-1} SVD_r(D W)``, i.e. ``A = D^{-1} U_r S_r``, ``B = V_r^T`` of ``D W``. Rows here are output
units (``W[i, :]`` produces output ``i``), as in the paper. Deviation: the paper sums squared *per-sample*
gradients; :func:`fisher_information` squares *minibatch* gradients (cheaper; a coarser estimate of the same
quantity, ``batch_size=1`` gives the paper's), and rows with zero Fisher get a small floor so ``D`` is invertible.

Shapes: ``W`` ``(m, n)`` -> ``A`` ``(m, r)``, ``B`` ``(r, n)``; a convolution ``(out, in, kh, kw)`` is flattened to
``(out, in * kh * kw)`` and its factor ``B`` reshaped to ``(r, in, kh, kw)``.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> lin = nn.Linear(20, 30)
    >>> small = factorize(lin, rank=4)
    >>> [tuple(m.weight.shape) for m in small], count_params(small), count_params(lin)
    ([(4, 20), (30, 4)], 230, 630)
    >>> torch.allclose(factorize(lin, rank=20)(torch.ones(2, 20)), lin(torch.ones(2, 20)), atol=1e-5)
    True
    >>> rank_for_ratio((30, 20), 0.5)
    6
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "LowRankConv2d",
    "LowRankLinear",
    "compress_model",
    "count_params",
    "factorizable_layers",
    "factorize",
    "fisher_information",
    "low_rank_factors",
    "rank_for_ratio",
]


def count_params(module: nn.Module) -> int:
    """The number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _matrix(weight: Tensor) -> Tensor:
    """A layer's weight as the ``(out, fan_in)`` matrix it multiplies with."""
    return weight.detach().reshape(weight.shape[0], -1)


def low_rank_factors(w: Tensor, rank: int, *, row_weights: Tensor | None = None,
                     eps: float = 1e-8, zero_dead: bool = False) -> tuple[Tensor, Tensor]:
    """Rank-``rank`` factors ``(A, B)`` with ``A @ B ~ w``: truncated SVD, or Fisher-weighted when ``row_weights``.

    Args:
        w: ``(m, n)`` matrix.
        rank: ``1 <= rank <= min(m, n)``.
        row_weights: ``(m,)`` non-negative row importances ``I_i`` (FWSVD: summed Fisher information of row ``i``);
            the factorization minimises ``||diag(sqrt(I)) (w - A B)||_F``. Rows with ``I_i <= eps * max(I)`` are
            floored to that value.
        zero_dead: with ``row_weights``, rows whose importance is at the floor (units that never mattered on the
            data: dead ReLUs) get ``A_i = 0`` instead of their projection ``w_i B^T``, so they stay silent rather
            than come back to life with a distorted filter.

    Given ``B``, the best ``A`` is ``w B^T`` row by row whatever the weights (each row's error decouples); the
    weights only choose ``B``. It is computed that way (not as ``D^{-1} U S``), which is exact and never divides
    by a tiny weight.
    Returns:
        ``A`` ``(m, rank)`` and ``B`` ``(rank, n)`` (float64 internally, returned in ``w``'s dtype).

    Example:
        >>> a, b = torch.randn(6, 2, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
        >>> A, B = low_rank_factors(a @ b, 2)
        >>> torch.allclose(A @ B, a @ b)
        True
    """
    if w.dim() != 2:
        raise ValueError(f"low_rank_factors needs a 2-D matrix, got shape {tuple(w.shape)}")
    m, n = w.shape
    if not 1 <= int(rank) <= min(m, n):
        raise ValueError(f"rank must be between 1 and min{tuple(w.shape)} = {min(m, n)}, got {rank}")
    r = int(rank)
    w64 = w.detach().double()
    if row_weights is not None:
        iw = row_weights.detach().double().reshape(-1)
        if iw.numel() != m or bool((iw < 0).any()):
            raise ValueError(f"row_weights must be {m} non-negative numbers, got shape {tuple(row_weights.shape)}")
        floor = max(float(iw.max()) * eps, 1e-30)
        d = iw.clamp_min(floor).sqrt()
        _, _, vh = torch.linalg.svd(d[:, None] * w64, full_matrices=False)
        a = w64 @ vh[:r].T
        if zero_dead:
            a[iw <= floor] = 0.0
    else:
        u, s, vh = torch.linalg.svd(w64, full_matrices=False)
        a = u[:, :r] * s[:r]
    return a.to(w.dtype), vh[:r].contiguous().to(w.dtype)


def rank_for_ratio(shape: tuple[int, ...], ratio: float) -> int:
    """The largest rank whose two factors hold at most ``ratio`` of a ``shape`` weight's parameters (at least 1).

    A ``(m, n)`` matrix (convolutions: ``n = in * kh * kw``) has ``m n`` weights, its rank-``r`` factors
    ``r (m + n)``; the rank is ``floor(ratio m n / (m + n))`` clipped to ``[1, min(m, n)]``.
    """
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    m = int(shape[0])
    n = 1
    for s in shape[1:]:
        n *= int(s)
    return max(1, min(min(m, n), int(ratio * m * n / (m + n))))


class LowRankLinear(nn.Sequential):
    """``Linear(n, m)`` as ``Linear(n, r, bias=False)`` then ``Linear(r, m)``: ``y = A (B x) + b``.

    Shapes: ``(..., n) -> (..., m)``. Built by :func:`factorize`.
    """

    def __init__(self, a: Tensor, b: Tensor, bias: Tensor | None) -> None:
        r, n = b.shape
        m = a.shape[0]
        first, second = nn.Linear(n, r, bias=False), nn.Linear(r, m, bias=bias is not None)
        with torch.no_grad():
            first.weight.copy_(b)
            second.weight.copy_(a)
            if bias is not None:
                second.bias.copy_(bias)
        super().__init__(first, second)
        self.rank = r


class LowRankConv2d(nn.Sequential):
    """``Conv2d(c_in, c_out, k)`` as ``Conv2d(c_in, r, k, stride, padding, dilation, bias=False)`` then a ``1x1``
    ``Conv2d(r, c_out)`` with the bias: the same function when ``r`` is full, since a convolution is the matrix
    ``(c_out, c_in k_h k_w)`` applied to every input patch.

    Shapes: ``(B, c_in, H, W) -> (B, c_out, H', W')`` as the original layer. Built by :func:`factorize`.
    """

    def __init__(self, conv: nn.Conv2d, a: Tensor, b: Tensor) -> None:
        r = b.shape[0]
        first = nn.Conv2d(conv.in_channels, r, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                          dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
        second = nn.Conv2d(r, conv.out_channels, 1, bias=conv.bias is not None)
        with torch.no_grad():
            first.weight.copy_(b.reshape(r, *conv.weight.shape[1:]))
            second.weight.copy_(a.reshape(conv.out_channels, r, 1, 1))
            if conv.bias is not None:
                second.bias.copy_(conv.bias)
        super().__init__(first, second)
        self.rank = r


def factorize(layer: nn.Module, *, rank: int | None = None, ratio: float | None = None,
              row_weights: Tensor | None = None, zero_dead: bool = False) -> nn.Module:
    """Replace ``layer`` (``nn.Linear`` or an ungrouped ``nn.Conv2d``) by its rank-``r`` factorization.

    Exactly one of ``rank`` and ``ratio`` (target share of the weight's parameters, see :func:`rank_for_ratio`).
    ``row_weights`` (``(out,)``) switches to Fisher-weighted SVD. Returns a new module; ``layer`` is unchanged.
    """
    if not isinstance(layer, (nn.Linear, nn.Conv2d)) or (isinstance(layer, nn.Conv2d) and layer.groups != 1):
        raise TypeError(f"factorize handles nn.Linear and ungrouped nn.Conv2d, got {type(layer).__name__}")
    if (rank is None) == (ratio is None):
        raise ValueError("pass exactly one of rank= and ratio=")
    w = _matrix(layer.weight)
    r = rank if rank is not None else rank_for_ratio(tuple(layer.weight.shape), float(ratio))
    a, b = low_rank_factors(w, r, row_weights=row_weights, zero_dead=zero_dead)
    if isinstance(layer, nn.Linear):
        out: nn.Module = LowRankLinear(a, b, None if layer.bias is None else layer.bias.detach())
    else:
        out = LowRankConv2d(layer, a, b)
    return out.to(device=layer.weight.device)


def factorizable_layers(model: nn.Module, *, skip: Iterable[str] = ()) -> list[str]:
    """Names of the ``nn.Linear`` and ungrouped ``nn.Conv2d`` modules of ``model``, in order, except ``skip``."""
    skip = set(skip)
    return [name for name, m in model.named_modules()
            if name not in skip and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))]


def fisher_information(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                       loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> dict[str, Tensor]:
    """Per-weight Fisher information estimate ``F = sum_batches (dL/dW)^2`` for every parameter of ``model``.

    ``loss_fn(model, x, y)`` returns the scalar loss of a minibatch. Returns ``{parameter name: F}`` with each
    parameter's shape. The model's ``.grad`` fields are left cleared.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model, x, y).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    return fisher


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def compress_model(model: nn.Module, *, ratio: float, fisher: dict[str, Tensor] | None = None,
                   skip: Iterable[str] = (), zero_dead: bool = False) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` with every factorizable layer (except ``skip``) replaced at the target ``ratio``.

    Each layer gets the rank of :func:`rank_for_ratio`; a layer whose factors would not be smaller than it stays
    dense. With ``fisher`` (from :func:`fisher_information`, keyed by parameter name) the factorization is FWSVD
    with row weights ``fisher[name + '.weight']`` summed over all but the output dimension.

    Returns:
        ``(compressed model, {layer name: rank})`` (layers left dense are absent).
    """
    new = copy.deepcopy(model)
    ranks: dict[str, int] = {}
    for name in factorizable_layers(model, skip=skip):
        layer = model.get_submodule(name)
        r = rank_for_ratio(tuple(layer.weight.shape), ratio)
        m, n = _matrix(layer.weight).shape
        if r * (m + n) >= m * n:
            continue
        rows = None
        if fisher is not None:
            f = fisher[f"{name}.weight"]
            rows = f.reshape(f.shape[0], -1).sum(dim=1)
        _set_module(new, name, factorize(layer, rank=r, row_weights=rows, zero_dead=zero_dead))
        ranks[name] = r
    return new, ranks
