"""ChebNet: spectral graph convolution with Chebyshev polynomial filters (Defferrard et al. 2016), dense batched.

Reference: M. Defferrard, X. Bresson, P. Vandergheynst, "Convolutional Neural Networks on Graphs with Fast
Localized Spectral Filtering", NeurIPS 2016. Written by hand from eqs. (4)-(5): a filter of order ``K`` is a
polynomial of the scaled Laplacian,

.. math::

    y = \\sum_{k=0}^{K-1} T_k(\\tilde L)\\, X\\, \\Theta_k, \\qquad \\tilde L = 2 L / \\lambda_{max} - I,

with ``L = I - D^{-1/2} A D^{-1/2}`` and the Chebyshev recursion ``T_0(L~) X = X``, ``T_1(L~) X = L~ X``,
``T_k(L~) X = 2 L~ T_{k-1}(L~) X - T_{k-2}(L~) X``: ``K - 1`` sparse-able products, no eigendecomposition, and the
filter is exactly ``K - 1``-hop localised. ``lambda_max`` defaults to 2 (the bound of the normalised spectrum; the
paper estimates it per graph, which ``lambda_max=None`` does with ``eigvalsh``). A bias follows the sum.

Model: ``chebnet`` (``level="node"`` or ``"graph"``: see :mod:`baselines.gnn`). Deviation: no graph coarsening or
pooling layers (the paper's graph pooling targets images on regular grids).

Shapes: ``x`` ``(B, n, in_chans)``, ``adj`` ``(B, n, n)`` -> ``(B, n, K)`` or ``(B, K)``.

Example:
    >>> import torch
    >>> sum(p.numel() for p in ChebLayer(1433, 16, order=3).parameters())
    68800
    >>> net = chebnet(num_classes=3, in_chans=4, hidden=8, order=3)
    >>> net(x=torch.randn(2, 5, 4), adj=torch.ones(2, 5, 5) - torch.eye(5)).shape
    torch.Size([2, 5, 3])
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .gnn import GraphNet, check_common, scaled_laplacian

__all__ = ["ChebLayer", "chebnet", "chebyshev_basis"]


def chebyshev_basis(l_tilde: Tensor, x: Tensor, order: int) -> list[Tensor]:
    """``[T_0(L~) x, ..., T_{order-1}(L~) x]`` by the recursion ``T_k = 2 L~ T_{k-1} - T_{k-2}``.

    Shapes: ``l_tilde`` ``(B, n, n)``, ``x`` ``(B, n, d)`` -> ``order`` tensors ``(B, n, d)``.

    Example:
        >>> l = torch.tensor([[[0.0, 0.5], [0.5, 0.0]]])
        >>> x = torch.tensor([[[1.0], [0.0]]])
        >>> [t[0, :, 0].tolist() for t in chebyshev_basis(l, x, 3)]  # T_2(l) = 2 l^2 - I
        [[1.0, 0.0], [0.0, 0.5], [-0.5, 0.0]]
    """
    out = [x]
    if order > 1:
        out.append(l_tilde @ x)
    for _ in range(2, order):
        out.append(2.0 * (l_tilde @ out[-1]) - out[-2])
    return out


class ChebLayer(nn.Module):
    """``sum_k T_k(L~) X Theta_k + b``: ``h`` ``(B, n, in)``, ``l_tilde`` ``(B, n, n)`` -> ``(B, n, out)``."""

    def __init__(self, in_features: int, out_features: int, *, order: int = 3) -> None:
        super().__init__()
        if int(order) != order or order < 1:
            raise ValueError(f"order (K, the number of Chebyshev terms) must be an integer >= 1, got {order!r}")
        self.order = int(order)
        self.theta = nn.ModuleList(nn.Linear(in_features, out_features, bias=False) for _ in range(self.order))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, h: Tensor, l_tilde: Tensor) -> Tensor:
        terms = chebyshev_basis(l_tilde, h, self.order)
        return sum(lin(t) for lin, t in zip(self.theta, terms)) + self.bias


@register_model(family="GNN", paper="Defferrard et al. 2016", source="hand-written (paper)", staged=False)
def chebnet(*, num_classes: int = 2, in_chans: int = 4, hidden: int = 64, depth: int = 2, order: int = 3,
            lambda_max: float | None = 2.0, level: str = "node", readout: str = "sum",
            drop_rate: float = 0.0) -> GraphNet:
    """ChebNet: ``depth`` Chebyshev layers of order ``order`` (``K`` terms, ``K - 1`` hops), ReLU, then the head.

    Args:
        num_classes: classes per node (``level="node"``) or per graph.
        in_chans: node input features.
        hidden: features of every layer.
        depth: Chebyshev layers.
        order: Chebyshev terms ``K`` per filter (``K = 1``: a per-node linear map; ``K = 2``: one hop).
        lambda_max: the Laplacian's largest eigenvalue used for scaling (``None``: computed per graph).
        level: ``node`` or ``graph``.
        readout: ``sum`` or ``mean`` (graph level).
        drop_rate: dropout before every layer and the head.
    """
    hidden, depth = check_common(hidden=hidden, depth=depth, level=level, readout=readout)
    if lambda_max is not None and not float(lambda_max) > 0:
        raise ValueError(f"lambda_max must be > 0 or None (computed per graph), got {lambda_max!r}")
    layers = [ChebLayer(int(in_chans) if i == 0 else hidden, hidden, order=order) for i in range(depth)]
    op = functools.partial(scaled_laplacian, lambda_max=lambda_max)
    return GraphNet(layers, operator=op, hidden=hidden, num_classes=num_classes, in_chans=in_chans, level=level,
                    readout=readout, drop_rate=drop_rate, act_last=True)
