"""Deep Sets (Zaheer et al. 2017): permutation-invariant and permutation-equivariant networks on sets.

Reference: M. Zaheer, S. Kottur, S. Ravanbakhsh, B. Poczos, R. Salakhutdinov, A. Smola, "Deep Sets", NeurIPS 2017.
Written by hand from the paper's equations.

**Invariant model** (the paper's Theorem 2): a function of a set ``X = {x_1, ..., x_n}`` is

.. math::

    f(X) = \\rho\\Big(\\sum_{i=1}^{n} \\phi(x_i)\\Big),

with ``phi`` and ``rho`` networks (here MLPs). ``f(PX) = f(X)`` for every permutation ``P``. ``pool="mean"`` or
``"max"`` replaces the sum (the paper's point-cloud model uses max).

**Equivariant layer** (the paper's Lemma 3 and eq. (4)): for ``X`` of shape ``(n, d)``

.. math::

    f(X) = \\sigma\\big(X \\Lambda - \\mathbf{1}\\,\\mathrm{pool}(X)\\,\\Gamma + \\mathbf{1} b^\\top\\big),
    \\qquad \\mathrm{pool}(X) = \\mathbf{1}^\\top X \\;(\\text{sum}),\\; \\tfrac{1}{n}\\mathbf{1}^\\top X
    \\;(\\text{mean}) \\text{ or } \\max_i x_i \\;(\\text{max}),

so that ``f(PX) = P f(X)``: ``X Lambda`` acts on each element alone and the pooled term is the same for every
element. With the sum this is ``sigma(X Lambda - 1 1^T X Gamma)``; the official point-cloud model
("PermEqui2-max") uses the max.

Padding: a batch of sets of different sizes is ``x`` ``(B, n, ...)`` with a boolean ``mask`` ``(B, n)`` (``True``
for real elements). Padded elements are left out of every pool and their outputs are zero, so a set's result does
not depend on how much padding it has.

Models (``@register_model``, ``staged=False``):

- ``deepsets_sum``: ``phi`` = MLP on each element's ``in_chans`` features, sum pooling, ``rho`` = MLP. For sets of
  digit images (``experiments.data.sets.digit_sums``: flattened 8x8 images) predicting their sum.
- ``deepsets_points``: ``depth`` equivariant layers (ELU) on points ``(B, n, in_chans)``, max pooling, dropout and
  a two-layer head, as the official point-cloud model (PermEqui2-max x3, ELU, dropout).

Deviations: the paper's MNIST digit-sum model is ``phi``: embedding + MLP on MNIST images with a regression
output; here ``phi`` is an MLP on 8x8 scikit-learn digits and the sum is classified (``num_classes`` possible
sums). Initialisation: PyTorch's default.

Shapes: ``x`` ``(B, n, in_chans)`` (or ``(B, n, *element_shape)``, flattened per element), optional ``mask``
``(B, n)`` -> logits ``(B, num_classes)``.

Example:
    >>> import torch
    >>> net = deepsets_sum(num_classes=5, in_chans=4, width=8).eval()
    >>> x = torch.randn(2, 6, 4)
    >>> perm = torch.randperm(6)
    >>> torch.allclose(net(x), net(x[:, perm]), atol=1e-5)
    True
    >>> layer = PermEquivariant(4, 3, pool="max")
    >>> torch.allclose(layer(x)[:, perm], layer(x[:, perm]), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model

__all__ = ["POOLS", "DeepSets", "PermEquivariant", "deepsets_points", "deepsets_sum", "set_pool"]

POOLS = ("sum", "mean", "max")


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose from: {', '.join(POOLS)}")


def set_pool(h: Tensor, mask: Tensor | None, pool: str) -> Tensor:
    """Pool ``h`` ``(B, n, d)`` over its elements (dim 1) into ``(B, d)``, ignoring elements where ``mask`` is False.

    ``max`` of a set with no real element is 0; ``mean`` divides by the number of real elements (at least 1).

    Example:
        >>> h = torch.tensor([[[1.0], [2.0], [9.0]]])
        >>> m = torch.tensor([[True, True, False]])
        >>> [set_pool(h, m, p).item() for p in POOLS]
        [3.0, 1.5, 2.0]
    """
    _check_pool(pool)
    if mask is None:
        if pool == "sum":
            return h.sum(1)
        return h.mean(1) if pool == "mean" else h.amax(1)
    m = mask.to(h.dtype).unsqueeze(-1)
    if pool == "max":
        out = h.masked_fill(m == 0, float("-inf")).amax(1)
        return torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    total = (h * m).sum(1)
    return total if pool == "sum" else total / m.sum(1).clamp_min(1.0)


class PermEquivariant(nn.Module):
    """The permutation-equivariant layer ``X Lambda - 1 pool(X) Gamma + 1 b^T`` (Zaheer et al. 2017, eq. (4)).

    ``Lambda`` (with the bias ``b``) is a ``Linear(in_features, out_features)`` applied to every element, ``Gamma``
    a ``Linear(in_features, out_features, bias=False)`` applied to the pooled set. No activation (add one after).

    Shapes: ``(B, n, in_features)``, optional ``mask`` ``(B, n)`` -> ``(B, n, out_features)`` (zeros where masked).

    Example:
        >>> layer = PermEquivariant(3, 5, pool="sum")
        >>> layer(torch.randn(2, 7, 3)).shape
        torch.Size([2, 7, 5])
    """

    def __init__(self, in_features: int, out_features: int, *, pool: str = "max") -> None:
        super().__init__()
        _check_pool(pool)
        self.pool = pool
        self.lam = nn.Linear(in_features, out_features)
        self.gamma = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        out = self.lam(x) - self.gamma(set_pool(x, mask, self.pool)).unsqueeze(1)
        return out if mask is None else out * mask.to(out.dtype).unsqueeze(-1)


class DeepSets(nn.Module):
    """``rho(pool_i phi(x_i))``: optional equivariant layers first, then an element-wise ``phi``, a pool and ``rho``.

    Args:
        phi: applied to every element (``(B * n, ...)`` -> ``(B * n, d)``).
        rho: applied to the pooled ``(B, d)``.
        pool: ``sum``, ``mean`` or ``max``.
        equivariant: :class:`PermEquivariant` layers, each followed by ``act``, run before ``phi``.
        act: the activation after each equivariant layer.
        in_elem_dims: number of trailing dims that make one element (1 for vectors, 3 for ``(C, H, W)`` images).

    Shapes: ``x`` ``(B, n, *element)``, optional ``mask`` ``(B, n)`` -> ``rho``'s output ``(B, K)``.
    """

    def __init__(self, phi: nn.Module, rho: nn.Module, *, pool: str = "sum",
                 equivariant: list[PermEquivariant] | None = None, act: nn.Module | None = None,
                 num_classes: int = 0, in_chans: int = 0) -> None:
        super().__init__()
        _check_pool(pool)
        self.phi, self.rho, self.pool = phi, rho, pool
        self.equivariant = nn.ModuleList(equivariant or [])
        self.act = act if act is not None else nn.Identity()
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n = x.shape[:2]
        h = x.reshape(b, n, -1)
        for layer in self.equivariant:
            h = self.act(layer(h, mask))
        h = self.phi(h.reshape(b * n, -1)).reshape(b, n, -1)
        return self.rho(set_pool(h, mask, self.pool))


def _mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, *, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_act or i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _check_int(name: str, value: int, low: int) -> int:
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@register_model(family="sets", paper="Zaheer et al. 2017", source="hand-written (paper)", staged=False)
def deepsets_sum(*, num_classes: int = 46, in_chans: int = 64, width: int = 128, phi_depth: int = 2,
                 rho_depth: int = 2, pool: str = "sum") -> DeepSets:
    """Invariant Deep Sets ``rho(sum_i phi(x_i))`` with MLP ``phi`` and ``rho`` (the digit-sum model).

    Args:
        num_classes: outputs of ``rho`` (possible sums for ``digit_sums``: ``9 * max_size + 1``).
        in_chans: features per element (64 for flattened 8x8 digits).
        width: hidden units of ``phi`` and ``rho``; ``phi``'s output has ``width`` features.
        phi_depth: ``phi``'s Linear+ReLU layers (>= 1).
        rho_depth: ``rho``'s layers (>= 1; the last is the linear output).
        pool: ``sum`` (the paper's), ``mean`` or ``max``.

    Parameters for the defaults: ``(64 + 1) 128 + (128 + 1) 128 + (128 + 1) 128 + (128 + 1) 46`` = 47,278.

    Example:
        >>> sum(p.numel() for p in deepsets_sum().parameters())
        47278
        >>> deepsets_sum()(torch.rand(3, 5, 1, 8, 8), mask=torch.ones(3, 5, dtype=torch.bool)).shape
        torch.Size([3, 46])
    """
    width, phi_depth = _check_int("width", width, 1), _check_int("phi_depth", phi_depth, 1)
    rho_depth = _check_int("rho_depth", rho_depth, 1)
    phi = _mlp([int(in_chans)] + [width] * phi_depth)
    rho = _mlp([width] * rho_depth + [int(num_classes)], last_act=False)
    return DeepSets(phi, rho, pool=pool, num_classes=num_classes, in_chans=in_chans)


@register_model(family="sets", paper="Zaheer et al. 2017", source="hand-written (paper)", staged=False)
def deepsets_points(*, num_classes: int = 4, in_chans: int = 2, width: int = 128, depth: int = 3,
                    pool: str = "max", drop_rate: float = 0.2) -> DeepSets:
    """Point-cloud Deep Sets: ``depth`` equivariant layers (ELU), pool, dropout, ``Linear``-ELU-dropout-``Linear``.

    The official point-cloud classifier is "PermEqui2-max" x3 with ELU and dropout; the same ``pool`` is used in
    the equivariant layers and for the final (invariant) pooling.

    Args:
        num_classes: shape classes.
        in_chans: coordinates per point (2 or 3).
        width: features of every equivariant layer and of the head's hidden layer.
        depth: equivariant layers (>= 1).
        pool: ``max`` (the official model), ``mean`` or ``sum``.
        drop_rate: dropout before each head layer.

    Example:
        >>> net = deepsets_points(num_classes=4, in_chans=2).eval()
        >>> x = torch.randn(2, 50, 2)
        >>> net(x).shape, torch.allclose(net(x), net(x.flip(1)), atol=1e-5)
        (torch.Size([2, 4]), True)
    """
    width, depth = _check_int("width", width, 1), _check_int("depth", depth, 1)
    _check_pool(pool)
    eq = [PermEquivariant(int(in_chans) if i == 0 else width, width, pool=pool) for i in range(depth)]
    rho = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(width, width), nn.ELU(), nn.Dropout(drop_rate),
                        nn.Linear(width, int(num_classes)))
    return DeepSets(nn.Identity(), rho, pool=pool, equivariant=eq, act=nn.ELU(), num_classes=num_classes,
                    in_chans=in_chans)
