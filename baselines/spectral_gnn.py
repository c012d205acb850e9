"""Spectral graph convolution in the Laplacian eigenbasis (Bruna et al. 2014), dense batched.

Reference: J. Bruna, W. Zaremba, A. Szlam, Y. LeCun, "Spectral Networks and Locally Connected Networks on Graphs",
ICLR 2014, section 3 (the "spectral construction"). Written by hand from the paper's equation: with ``L = U
diag(lambda) U^T`` (eigenvalues ascending) and ``U_k`` its first ``k`` eigenvectors (the smoothest), a layer maps
``d_in`` to ``d_out`` features by

.. math::

    y_j = \\sum_{i=1}^{d_{in}} U_k\\, \\mathrm{diag}(\\theta_{ij})\\, U_k^\\top x_i + b_j,
    \\qquad \\theta_{ij} \\in \\mathbb{R}^k,

i.e. a learned multiplier per eigenvector, input and output feature (``k d_in d_out`` weights plus the bias).
``L = D - A`` (``laplacian="combinatorial"``, the default) or the symmetric normalised one (``"sym"``). The
eigenbasis is computed once per forward with ``torch.linalg.eigh``.

Fixed graph size: the weights are indexed by eigenvector, so every graph needs at least ``k`` nodes, and the
filter means the same thing across graphs only as far as their ``k`` lowest eigenvectors correspond; the method
is meant for one fixed graph size (``k = n`` keeps the full basis). Symmetry: ``u u^T`` does not depend on an
eigenvector's sign, so a layer is permutation-equivariant whenever the ``k`` lowest eigenvalues are distinct from
each other and from the ``k+1``-th (a repeated eigenvalue, e.g. 0 for a graph with several components, leaves
the basis of its eigenspace arbitrary and breaks exact equivariance).

Deviations: no smooth (spline-interpolated) multipliers and no spatial pooling; the multipliers are initialised
``N(0, 1/d_in)``.

Model: ``spectral_gnn`` (``level="node"`` or ``"graph"``: see :mod:`baselines.gnn`).

Shapes: ``x`` ``(B, n, in_chans)``, ``adj`` ``(B, n, n)`` -> ``(B, n, K)`` or ``(B, K)``.

Example:
    >>> import torch
    >>> layer = SpectralLayer(1433, 16, k=100, bias=False)
    >>> sum(p.numel() for p in layer.parameters())
    2292800
    >>> net = spectral_gnn(num_classes=3, in_chans=4, hidden=8, k=5)
    >>> net(x=torch.randn(2, 5, 4), adj=torch.ones(2, 5, 5) - torch.eye(5)).shape
    torch.Size([2, 5, 3])
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .gnn import LAPLACIANS, GraphNet, check_common, laplacian

__all__ = ["EigenBasis", "SpectralLayer", "spectral_gnn"]


class EigenBasis(nn.Module):
    """``adj`` ``(B, n, n)`` -> ``U_k`` ``(B, n, k)``: the ``k`` eigenvectors of the Laplacian with the smallest
    eigenvalues (``torch.linalg.eigh``, ascending).

    Example:
        >>> adj = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
        >>> u = EigenBasis(k=2)(adj)
        >>> torch.allclose(u[0].abs(), torch.full((2, 2), 0.5 ** 0.5))  # constant and alternating vectors
        True
    """

    def __init__(self, *, k: int, kind: str = "combinatorial") -> None:
        super().__init__()
        if kind not in LAPLACIANS:
            raise ValueError(f"unknown laplacian {kind!r}; choose from: {', '.join(LAPLACIANS)}")
        self.k, self.kind = int(k), kind

    def forward(self, adj: Tensor) -> Tensor:
        n = adj.shape[-1]
        if n < self.k:
            raise ValueError(f"the spectral layer keeps k={self.k} eigenvectors but the graphs have n={n} nodes; "
                             f"set k <= {n}")
        _, u = torch.linalg.eigh(laplacian(adj, self.kind))
        return u[..., : self.k]


class SpectralLayer(nn.Module):
    """``y_j = sum_i U_k diag(theta_ij) U_k^T x_i + b_j``: ``h`` ``(B, n, in)``, ``u`` ``(B, n, k)`` -> ``(B, n, out)``.
    """

    def __init__(self, in_features: int, out_features: int, *, k: int, bias: bool = True) -> None:
        super().__init__()
        if int(k) != k or k < 1:
            raise ValueError(f"k (eigenvectors kept) must be an integer >= 1, got {k!r}")
        self.k = int(k)
        self.theta = nn.Parameter(torch.randn(self.k, in_features, out_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, h: Tensor, u: Tensor) -> Tensor:
        spec = u.transpose(1, 2) @ h  # (B, k, in): the graph Fourier transform
        out = u @ torch.einsum("bei,eio->beo", spec, self.theta)  # per-eigenvector multipliers, back to nodes
        return out if self.bias is None else out + self.bias


@register_model(family="GNN", paper="Bruna et al. 2014", source="hand-written (paper)", staged=False)
def spectral_gnn(*, num_classes: int = 2, in_chans: int = 4, hidden: int = 32, depth: int = 2, k: int = 16,
                 laplacian: str = "combinatorial", level: str = "node", readout: str = "sum",
                 drop_rate: float = 0.0) -> GraphNet:
    """Spectral GNN: ``depth`` Bruna layers in the ``k`` lowest Laplacian eigenvectors, ReLU, then the head.

    Args:
        num_classes: classes per node (``level="node"``) or per graph.
        in_chans: node input features.
        hidden: features of every layer.
        depth: spectral layers.
        k: eigenvectors kept (at most the graphs' node count; ``n`` for the full basis).
        laplacian: ``combinatorial`` (``D - A``) or ``sym`` (``I - D^-1/2 A D^-1/2``).
        level: ``node`` or ``graph``.
        readout: ``sum`` or ``mean`` (graph level).
        drop_rate: dropout before every layer and the head.
    """
    hidden, depth = check_common(hidden=hidden, depth=depth, level=level, readout=readout)
    basis = EigenBasis(k=k, kind=laplacian)
    layers = [SpectralLayer(int(in_chans) if i == 0 else hidden, hidden, k=k) for i in range(depth)]
    net = GraphNet(layers, operator=basis, hidden=hidden, num_classes=num_classes, in_chans=in_chans, level=level,
                   readout=readout, drop_rate=drop_rate, act_last=True)
    return net
