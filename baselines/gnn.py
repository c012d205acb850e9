"""Graph neural networks on dense batched graphs: shared operators, the network wrapper and the MPNN.

Graphs come as dense tensors: node features ``x`` ``(B, n, d)`` and a symmetric adjacency ``adj`` ``(B, n, n)``
(0/1 or non-negative weights, zero diagonal), optionally a node ``mask`` ``(B, n)`` (``True`` for real nodes; padded
nodes have no edges). Every model here is called as ``model(x=..., adj=...)`` (the runner passes a dict batch as
keyword arguments: docs/tasks.md) and returns

- node-level logits ``(B, n, K)`` with ``level="node"`` (the ``tokens`` task: one class per node), or
- graph-level logits ``(B, K)`` with ``level="graph"`` (the ``classify`` task), after a sum or mean readout
  ``r = sum_i h_i`` (or ``/ n``) and a two-layer MLP head.

Permutation symmetry: for a permutation matrix ``P`` every layer satisfies ``f(PX, PAP^T) = P f(X, A)`` (node
outputs are equivariant) and the readout makes graph outputs invariant (tests/test_gnn.py checks both).

This module holds the operators shared by the layer families,

- :func:`gcn_norm`: ``A_hat = D~^{-1/2} (A + I) D~^{-1/2}`` with ``D~ = diag((A + I) 1)`` (Kipf & Welling 2017);
- :func:`laplacian`: ``L = D - A`` (combinatorial) or ``L = I - D^{-1/2} A D^{-1/2}`` (symmetric normalised;
  isolated nodes get ``D^{-1/2} = 0``);
- :func:`scaled_laplacian`: ``L~ = 2 L / lambda_max - I`` (Defferrard et al. 2016),

the wrapper :class:`GraphNet` (layers, activation, dropout, head, readout) and the message-passing neural network
(Gilmer et al. 2017, "Neural Message Passing for Quantum Chemistry", ICML):

.. math::

    m_i^{t+1} = \\sum_{j} A_{ij}\\, M(h_i^t, h_j^t), \\qquad h_i^{t+1} = U(h_i^t, m_i^{t+1}),

with the message ``M`` an MLP on ``[h_i; h_j]`` (``Linear(2d, d)``, ReLU, ``Linear(d, d)``) and the update ``U`` a
GRU cell (Gilmer et al.'s choice), shared over nodes. Deviation: each of the ``depth`` rounds has its own ``M`` and
``U`` (Gilmer et al. tie them across rounds), and the graph readout is a sum or mean, not set2set. The input is first
embedded by ``Linear(in_chans, hidden)`` (Gilmer et al. zero-pad it). The second message layer is linear, so its sum
over neighbours is taken before it: ``sum_j A_ij (W2 r_ij + b2) = W2 (sum_j A_ij r_ij) + b2 deg_i``, which is exact
and avoids a ``(B, n, n, d)`` matrix product. Edge features are not used (the graphs here have none).

The GCN, ChebNet and spectral (Bruna et al. 2014) layers live in :mod:`baselines.gcn`, :mod:`baselines.chebnet`
and :mod:`baselines.spectral_gnn`.

Example:
    >>> import torch
    >>> adj = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    >>> gcn_norm(adj)
    tensor([[[0.5000, 0.5000],
             [0.5000, 0.5000]]])
    >>> net = mpnn(num_classes=3, in_chans=4, hidden=8, level="graph")
    >>> net(x=torch.randn(2, 5, 4), adj=torch.ones(2, 5, 5) - torch.eye(5)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model

__all__ = ["LEVELS", "READOUTS", "GraphNet", "MPNNLayer", "gcn_norm", "laplacian", "mpnn", "scaled_laplacian"]

LEVELS = ("node", "graph")
READOUTS = ("sum", "mean")
LAPLACIANS = ("combinatorial", "sym")


def _check_adj(x: Tensor, adj: Tensor) -> None:
    if adj.dim() != 3 or adj.shape[1] != adj.shape[2]:
        raise ValueError(f"adj must be (B, n, n), got {tuple(adj.shape)}")
    if x.dim() != 3 or x.shape[:2] != adj.shape[:2]:
        raise ValueError(f"x must be (B, n, d) with the adjacency's B and n, got x {tuple(x.shape)}, "
                         f"adj {tuple(adj.shape)}")


def _inv_sqrt(deg: Tensor) -> Tensor:
    """``deg ** -1/2`` with 0 where ``deg`` is 0 (isolated or padded nodes)."""
    return torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))


def gcn_norm(adj: Tensor) -> Tensor:
    """The renormalised adjacency ``D~^{-1/2} (A + I) D~^{-1/2}`` (Kipf & Welling 2017, eq. (2)), ``(B, n, n)``."""
    a = adj + torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    s = _inv_sqrt(a.sum(-1))
    return s.unsqueeze(-1) * a * s.unsqueeze(-2)


def laplacian(adj: Tensor, kind: str = "combinatorial") -> Tensor:
    """``L = D - A`` (``combinatorial``) or ``I - D^{-1/2} A D^{-1/2}`` (``sym``) of ``adj`` ``(B, n, n)``.

    For ``sym``, isolated nodes get a zero row and column (``D^{-1/2} = 0`` there) and a 1 on the diagonal.

    Example:
        >>> laplacian(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
        tensor([[[ 1., -1.],
                 [-1.,  1.]]])
    """
    if kind not in LAPLACIANS:
        raise ValueError(f"unknown laplacian {kind!r}; choose from: {', '.join(LAPLACIANS)}")
    deg = adj.sum(-1)
    if kind == "combinatorial":
        return torch.diag_embed(deg) - adj
    s = _inv_sqrt(deg)
    eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    return eye - s.unsqueeze(-1) * adj * s.unsqueeze(-2)


def scaled_laplacian(adj: Tensor, lambda_max: float | None = 2.0) -> Tensor:
    """``L~ = 2 L / lambda_max - I`` with ``L`` the symmetric normalised Laplacian (spectrum in ``[-1, 1]``).

    ``lambda_max=None`` uses each graph's largest eigenvalue (``torch.linalg.eigvalsh``); the default 2.0 is the
    upper bound of the normalised Laplacian's spectrum (then ``L~ = -D^{-1/2} A D^{-1/2}``).
    """
    lap = laplacian(adj, "sym")
    if lambda_max is None:
        lam = torch.linalg.eigvalsh(lap)[..., -1].clamp_min(1e-6)[:, None, None]
    else:
        if not float(lambda_max) > 0:
            raise ValueError(f"lambda_max must be > 0 or None, got {lambda_max!r}")
        lam = torch.as_tensor(float(lambda_max), dtype=adj.dtype, device=adj.device)
    eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    return 2.0 * lap / lam - eye


class GraphNet(nn.Module):
    """Graph layers with an activation and dropout between them, then a node head or a readout and a graph head.

    Args:
        layers: modules called as ``layer(h, op)`` with ``op = operator(adj)`` computed once per forward.
        operator: ``adj (B, n, n) -> op`` (e.g. :func:`gcn_norm`); ``None`` passes ``adj`` itself.
        hidden: output features of the last layer.
        num_classes: outputs per node (``level="node"``) or per graph (``level="graph"``).
        level: ``node`` or ``graph``.
        readout: ``sum`` or ``mean`` over the (real) nodes, for ``level="graph"``.
        embed: applied to ``x`` before the layers (e.g. a ``Linear``), or ``None``.
        act_last: apply the activation after the last layer too (before the head).

    Shapes: ``x`` ``(B, n, in_chans)``, ``adj`` ``(B, n, n)``, optional ``mask`` ``(B, n)`` -> ``(B, n, K)`` or
    ``(B, K)``.
    """

    def __init__(self, layers: Sequence[nn.Module], *, operator: Callable[[Tensor], Any] | None, hidden: int,
                 num_classes: int, in_chans: int, level: str = "node", readout: str = "sum",
                 drop_rate: float = 0.0, embed: nn.Module | None = None, act_last: bool = True) -> None:
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; choose from: {', '.join(LEVELS)}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose from: {', '.join(READOUTS)}")
        self.operator = operator
        self.embed = embed if embed is not None else nn.Identity()
        self.layers = nn.ModuleList(layers)
        self.act, self.drop = nn.ReLU(), nn.Dropout(drop_rate)
        self.act_last = act_last
        self.level, self.readout = level, readout
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)
        if level == "node":
            self.head: nn.Module = nn.Linear(hidden, num_classes)
        else:
            self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(drop_rate),
                                      nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_adj(x, adj)
        adj = adj.to(x.dtype)
        op = adj if self.operator is None else self.operator(adj)
        h = self.embed(x)
        for i, layer in enumerate(self.layers):
            h = layer(self.drop(h), op)
            if self.act_last or i < len(self.layers) - 1:
                h = self.act(h)
        if mask is not None:
            h = h * mask.to(h.dtype).unsqueeze(-1)
        if self.level == "node":
            return self.head(self.drop(h))
        r = h.sum(1)
        if self.readout == "mean":
            count = mask.to(h.dtype).sum(1, keepdim=True) if mask is not None else torch.full_like(r[:, :1], h.shape[1])
            r = r / count.clamp_min(1.0)
        return self.head(r)


class MPNNLayer(nn.Module):
    """One message-passing round: ``m_i = sum_j A_ij MLP([h_i; h_j])``, ``h_i' = GRUCell(m_i, h_i)``.

    Shapes: ``h`` ``(B, n, d)``, ``adj`` ``(B, n, n)`` -> ``(B, n, d)``.

    Example:
        >>> layer = MPNNLayer(64)
        >>> sum(p.numel() for p in layer.parameters())
        37376
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.msg_in = nn.Linear(2 * dim, dim)  # [h_i; h_j] -> d
        self.msg_out = nn.Linear(dim, dim)
        self.update = nn.GRUCell(dim, dim)

    def forward(self, h: Tensor, adj: Tensor) -> Tensor:
        b, n, d = h.shape
        w = self.msg_in.weight
        hi = h @ w[:, :d].T + self.msg_in.bias  # the h_i part (receiver)
        hj = h @ w[:, d:].T  # the h_j part (sender)
        r = torch.relu(hi.unsqueeze(2) + hj.unsqueeze(1))  # (B, n_i, n_j, d)
        agg = torch.einsum("bij,bijd->bid", adj, r)
        m = self.msg_out(agg) + (adj.sum(-1, keepdim=True) - 1.0) * self.msg_out.bias
        return self.update(m.reshape(b * n, d), h.reshape(b * n, d)).reshape(b, n, d)


def check_common(*, hidden: int, depth: int, level: str, readout: str) -> tuple[int, int]:
    """Validate the options every graph model takes; return ``(hidden, depth)`` as ints."""
    if int(hidden) != hidden or hidden < 1:
        raise ValueError(f"hidden must be an integer >= 1, got {hidden!r}")
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (graph layers), got {depth!r}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from: {', '.join(LEVELS)}")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; choose from: {', '.join(READOUTS)}")
    return int(hidden), int(depth)


@register_model(family="GNN", paper="Gilmer et al. 2017", source="hand-written (paper)", staged=False)
def mpnn(*, num_classes: int = 2, in_chans: int = 4, hidden: int = 64, depth: int = 3, level: str = "node",
         readout: str = "sum", drop_rate: float = 0.0) -> GraphNet:
    """Message-passing neural network: ``Linear`` embedding, ``depth`` MPNN rounds (MLP message, GRU update), head.

    Args:
        num_classes: classes per node (``level="node"``) or per graph.
        in_chans: node input features.
        hidden: node state size ``d``.
        depth: message-passing rounds (untied weights).
        level: ``node`` (logits ``(B, n, K)``) or ``graph`` (``(B, K)``).
        readout: ``sum`` or ``mean`` (graph level).
        drop_rate: dropout on node states before each round and the head.

    Example:
        >>> net = mpnn(num_classes=3, in_chans=4, hidden=16, depth=2)
        >>> net(x=torch.randn(2, 6, 4), adj=torch.zeros(2, 6, 6)).shape
        torch.Size([2, 6, 3])
    """
    hidden, depth = check_common(hidden=hidden, depth=depth, level=level, readout=readout)
    return GraphNet([MPNNLayer(hidden) for _ in range(depth)], operator=None, hidden=hidden,
                    num_classes=num_classes, in_chans=in_chans, level=level, readout=readout, drop_rate=drop_rate,
                    embed=nn.Linear(int(in_chans), hidden), act_last=False)
