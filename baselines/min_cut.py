"""Exact minimisation of a binary pairwise energy with non-negative (submodular) Potts terms by an s-t minimum cut.

Energy over labels ``l_i in {0, 1}`` of ``n`` nodes:

    E(l) = sum_i U_i(l_i) + sum_{(i, j)} w_ij [l_i != l_j],      w_ij >= 0.

Construction (Greig, Porteous & Seheult 1989; Boykov & Jolly, ICCV 2001; Kolmogorov & Zabih, PAMI 2004): a source
``s`` (label 1) and a sink ``t`` (label 0); arc ``s -> i`` of capacity ``U_i(0) - m_i`` (cut when ``i`` ends on the
sink side, i.e. labelled 0), arc ``i -> t`` of capacity ``U_i(1) - m_i`` (``m_i = min(U_i(0), U_i(1))``, a constant
dropped), and arcs ``i <-> j`` of capacity ``w_ij`` both ways. Every s-t cut is a labelling and its capacity is
``E(l) - sum_i m_i``, so the minimum cut is a minimum-energy labelling. The max flow comes from
``scipy.sparse.csgraph.maximum_flow`` (Dinic); the nodes labelled 1 are those reachable from ``s`` in the residual
graph. Capacities are scaled to integers (the solver needs int32): the total capacity is mapped to ``2^30``, so the
rounding changes any cut's energy by at most ``(number of arcs) / 2^31`` of the total, far below any difference
that matters here.

Shapes: ``unary`` ``(n, 2)`` (columns: cost of label 0, of label 1); ``pairs`` ``(E, 2)`` int node indices;
``weights`` ``(E,)``; returns labels ``(n,)`` int64.

Example:
    >>> import numpy as np
    >>> unary = np.array([[0.0, 3.0], [2.0, 1.0], [5.0, 0.0]])       # node 0 wants 0, nodes 1 and 2 want 1
    >>> min_cut(unary, np.array([[0, 1], [1, 2]]), np.array([2.0, 0.5])).tolist()   # tie 0-1 costs 2 > 1
    [0, 0, 1]
    >>> energy(np.array([0, 0, 1]), unary, np.array([[0, 1], [1, 2]]), np.array([2.0, 0.5]))
    2.5
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

__all__ = ["energy", "min_cut"]

_TOTAL = 2**30


def _check(unary: np.ndarray, pairs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    unary = np.asarray(unary, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if unary.ndim != 2 or unary.shape[1] != 2:
        raise ValueError(f"unary must be (n, 2), got shape {unary.shape}")
    if len(pairs) != len(weights):
        raise ValueError(f"pairs ({len(pairs)}) and weights ({len(weights)}) must have the same length")
    if (weights < 0).any() or not np.isfinite(weights).all() or not np.isfinite(unary).all():
        raise ValueError("weights must be finite and >= 0 (a Potts term) and unaries finite")
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= len(unary)):
        raise ValueError(f"pairs must index nodes 0 .. {len(unary) - 1}")
    return unary, pairs, weights


def energy(labels: np.ndarray, unary: np.ndarray, pairs: np.ndarray, weights: np.ndarray) -> float:
    """``E(l)`` of the module docstring."""
    unary, pairs, weights = _check(unary, pairs, weights)
    labels = np.asarray(labels, dtype=np.int64)
    e = unary[np.arange(len(unary)), labels].sum()
    if len(pairs):
        e += weights[labels[pairs[:, 0]] != labels[pairs[:, 1]]].sum()
    return float(e)


def min_cut(unary: np.ndarray, pairs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A minimum-energy labelling ``(n,)`` of the module docstring's energy (exact, up to the integer scaling)."""
    unary, pairs, weights = _check(unary, pairs, weights)
    n = len(unary)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    u = unary - unary.min(1, keepdims=True)
    keep = (weights > 0) & (pairs[:, 0] != pairs[:, 1])
    pairs, weights = pairs[keep], weights[keep]
    total = u.sum() + 2 * weights.sum()
    if total <= 0:
        return np.zeros(n, dtype=np.int64)
    scale = _TOTAL / total
    s, t = n, n + 1
    nodes = np.arange(n)
    rows = np.concatenate([np.full(n, s), nodes, pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([nodes, np.full(n, t), pairs[:, 1], pairs[:, 0]])
    cap = np.concatenate([u[:, 0], u[:, 1], weights, weights]) * scale
    cap = np.rint(cap).astype(np.int64)
    graph = csr_array((cap, (rows, cols)), shape=(n + 2, n + 2))  # duplicate arcs are summed
    graph.sum_duplicates()
    graph = csr_array((graph.data.astype(np.int32), graph.indices, graph.indptr), shape=graph.shape)
    flow = maximum_flow(graph, s, t).flow
    residual = csr_array(graph.astype(np.int64) - flow.astype(np.int64))
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    labels = np.zeros(n + 2, dtype=np.int64)
    labels[reach] = 1
    return labels[:n]
