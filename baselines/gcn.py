"""Graph convolutional network (Kipf & Welling 2017) on dense batched graphs.

Reference: T. N. Kipf, M. Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017.
Written by hand from eq. (2) of the paper: each layer is

.. math::

    H^{(l+1)} = \\sigma\\big(\\hat A H^{(l)} W^{(l)}\\big), \\qquad
    \\hat A = \\tilde D^{-1/2} (A + I) \\tilde D^{-1/2}, \\quad \\tilde D_{ii} = \\sum_j (A + I)_{ij}

(the "renormalisation trick": a first-order Chebyshev filter with self-loops). The bias is added after the
propagation, ``A_hat (H W) + b``. ``A_hat`` is computed once per forward (:func:`baselines.gnn.gcn_norm`).

Models: ``gcn`` with ``level="node"`` (logits ``(B, n, K)``, Kipf & Welling's node classification; their model is
``depth=2`` with dropout) or ``level="graph"`` (sum/mean readout and an MLP head, ``(B, K)``). See
:mod:`baselines.gnn` for the input format and the permutation symmetry.

Shapes: ``x`` ``(B, n, in_chans)``, ``adj`` ``(B, n, n)`` -> ``(B, n, K)`` or ``(B, K)``.

Example:
    >>> import torch
    >>> layer = GCNLayer(1433, 16)
    >>> sum(p.numel() for p in layer.parameters()) + sum(p.numel() for p in GCNLayer(16, 7).parameters())
    23063
    >>> net = gcn(num_classes=3, in_chans=4, hidden=8)
    >>> net(x=torch.randn(2, 5, 4), adj=torch.ones(2, 5, 5) - torch.eye(5)).shape
    torch.Size([2, 5, 3])
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .gnn import GraphNet, check_common, gcn_norm

__all__ = ["GCNLayer", "gcn"]


class GCNLayer(nn.Module):
    """``A_hat H W + b`` (no activation): ``h`` ``(B, n, in)``, ``a_hat`` ``(B, n, n)`` -> ``(B, n, out)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, h: Tensor, a_hat: Tensor) -> Tensor:
        return a_hat @ self.linear(h) + self.bias


@register_model(family="GNN", paper="Kipf & Welling 2017", source="hand-written (paper)", staged=False)
def gcn(*, num_classes: int = 2, in_chans: int = 4, hidden: int = 64, depth: int = 2, level: str = "node",
        readout: str = "sum", drop_rate: float = 0.0) -> GraphNet:
    """GCN: ``depth`` layers ``relu(A_hat H W + b)`` (the last without ReLU at node level), then the head.

    At node level the last GCN layer already has ``hidden`` outputs and a ``Linear(hidden, K)`` head follows
    (Kipf & Welling's 2-layer model ends in the GCN layer itself; here the head is a per-node linear map).

    Args:
        num_classes: classes per node (``level="node"``) or per graph.
        in_chans: node input features.
        hidden: features of every GCN layer.
        depth: GCN layers.
        level: ``node`` or ``graph``.
        readout: ``sum`` or ``mean`` (graph level).
        drop_rate: dropout before every layer and the head.
    """
    hidden, depth = check_common(hidden=hidden, depth=depth, level=level, readout=readout)
    layers = [GCNLayer(int(in_chans) if i == 0 else hidden, hidden) for i in range(depth)]
    return GraphNet(layers, operator=gcn_norm, hidden=hidden, num_classes=num_classes, in_chans=in_chans,
                    level=level, readout=readout, drop_rate=drop_rate, act_last=True)
