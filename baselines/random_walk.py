"""Random-walk node embeddings: DeepWalk (Perozzi et al. 2014) and node2vec (Grover & Leskovec 2016).

References: B. Perozzi, R. Al-Rfou, S. Skiena, "DeepWalk: Online Learning of Social Representations", KDD 2014;
A. Grover, J. Leskovec, "node2vec: Scalable Feature Learning for Networks", KDD 2016; the skip-gram with negative
sampling of T. Mikolov et al., "Distributed Representations of Words and Phrases and their Compositionality",
NeurIPS 2013. Written by hand from the papers' equations.

Both methods treat short random walks as sentences and nodes as words, and learn an embedding ``z_u`` per node
with the skip-gram objective: nodes that co-occur within ``window`` steps of a walk should have similar embeddings.

**Walks.** DeepWalk walks are first order: ``P(v_{t+1} = x | v_t = v) = A_vx / d_v``. node2vec walks are second
order with return parameter ``p`` and in-out parameter ``q``: coming from ``t`` to ``v``, the next node ``x`` has
unnormalised probability ``A_vx * alpha_pq(t, x)`` with

.. math::

    \\alpha_{pq}(t, x) = 1/p \\;\\text{if } x = t, \\qquad 1 \\;\\text{if } A_{tx} > 0, \\qquad 1/q \\;\\text{otherwise}

(``q > 1``: stay near ``t``, breadth-first-like; ``q < 1``: move outward, depth-first-like). ``p = q = 1`` is
DeepWalk's walk. Every node starts ``walks_per_node`` walks of ``walk_length`` nodes; a node without neighbours
repeats itself.

**Skip-gram with negative sampling** (node2vec's choice) over the (centre ``u``, context ``v``) pairs at most
``window`` steps apart:

.. math::

    \\mathcal L = -\\log \\sigma(z_u^\\top z'_v) - \\sum_{k=1}^{K} \\log \\sigma(-z_u^\\top z'_{n_k}),
    \\qquad n_k \\sim P(n) \\propto \\mathrm{count}(n)^{3/4},

with separate context embeddings ``z'`` (Mikolov et al.). ``negatives=0`` uses the full softmax
``-log softmax_v(z_u^T Z')`` instead (exact and cheap on the small graphs here). Deviations: DeepWalk used a
hierarchical softmax and SGD with a linearly decaying rate; here both methods use negative sampling (or the full
softmax) and Adam on minibatches of pairs, and node2vec samples its walk on the fly (no alias tables).

Shapes: ``adj`` ``(n, n)`` non-negative, symmetric -> embeddings ``(n, dim)``.

Example:
    >>> import torch
    >>> adj = torch.zeros(6, 6)
    >>> for i, j in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]:  # two triangles
    ...     adj[i, j] = adj[j, i] = 1.0
    >>> walks = random_walks(adj, walks_per_node=2, walk_length=5, seed=0)
    >>> walks.shape, bool(((walks < 3).all(1) | (walks >= 3).all(1)).all())  # walks never leave a triangle
    (torch.Size([12, 5]), True)
    >>> z = deepwalk_embeddings(adj, dim=4, walks_per_node=5, walk_length=10, window=2, epochs=20, seed=0)
    >>> z.shape
    torch.Size([6, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["deepwalk_embeddings", "node2vec_embeddings", "random_walks", "skipgram_embeddings", "skipgram_pairs"]


def _check_adj(adj: Tensor) -> Tensor:
    if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adj must be a square (n, n) matrix, got {tuple(adj.shape)}")
    if (adj < 0).any():
        raise ValueError("adj must be non-negative (edge weights)")
    return adj.float()


def _check_int(name: str, value: int, low: int) -> int:
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def random_walks(adj: Tensor, *, walks_per_node: int = 10, walk_length: int = 40, p: float = 1.0, q: float = 1.0,
                 seed: int = 0) -> Tensor:
    """Walks from every node, ``walks_per_node`` times: int64 ``(n * walks_per_node, walk_length)``.

    First order (DeepWalk) when ``p == q == 1``, else node2vec's second-order walk with return parameter ``p`` and
    in-out parameter ``q``. All walks advance together (one ``torch.multinomial`` per step); ``seed`` fixes them.
    Row ``r`` starts at node ``r % n``.
    """
    adj = _check_adj(adj)
    walks_per_node, walk_length = _check_int("walks_per_node", walks_per_node, 1), _check_int("walk_length",
                                                                                                walk_length, 1)
    if not (p > 0 and q > 0):
        raise ValueError(f"p and q must be > 0, got p={p!r}, q={q!r}")
    n = adj.shape[0]
    g = torch.Generator().manual_seed(int(seed))
    cur = torch.arange(n).repeat(walks_per_node)
    rows = torch.arange(cur.numel())
    walk = [cur]
    prev = None
    for _ in range(walk_length - 1):
        w = adj[cur].clone()
        if prev is not None and (p != 1.0 or q != 1.0):
            w = w * (1.0 / q + (1.0 - 1.0 / q) * (adj[prev] > 0).float())  # 1 next to prev, 1/q farther away
            w[rows, prev] = adj[cur, prev] / p  # going back
        stuck = w.sum(1) <= 0
        w[stuck, cur[stuck]] = 1.0  # a node without neighbours repeats itself
        nxt = torch.multinomial(w, 1, generator=g).squeeze(1)
        prev, cur = cur, nxt
        walk.append(cur)
    return torch.stack(walk, 1)


def skipgram_pairs(walks: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """All (centre, context) node pairs at most ``window`` steps apart in a walk, both directions: two ``(P,)``.

    Example:
        >>> c, o = skipgram_pairs(torch.tensor([[0, 1, 2]]), window=1)
        >>> sorted(zip(c.tolist(), o.tolist()))
        [(0, 1), (1, 0), (1, 2), (2, 1)]
    """
    window = _check_int("window", window, 1)
    centres, contexts = [], []
    for s in range(1, min(window, walks.shape[1] - 1) + 1):
        a, b = walks[:, :-s].reshape(-1), walks[:, s:].reshape(-1)
        centres += [a, b]
        contexts += [b, a]
    if not centres:
        raise ValueError("walks must have at least 2 nodes to form skip-gram pairs")
    return torch.cat(centres), torch.cat(contexts)


def skipgram_embeddings(walks: Tensor, num_nodes: int, *, dim: int = 32, window: int = 5, negatives: int = 5,
                        epochs: int = 1, lr: float = 0.025, batch_size: int = 1024, seed: int = 0) -> Tensor:
    """Train skip-gram embeddings ``(num_nodes, dim)`` on the walks (negative sampling, or full softmax if
    ``negatives=0``) with Adam; returns the centre embeddings ``z`` (detached)."""
    dim, epochs = _check_int("dim", dim, 1), _check_int("epochs", epochs, 1)
    negatives, batch_size = _check_int("negatives", negatives, 0), _check_int("batch_size", batch_size, 1)
    g = torch.Generator().manual_seed(int(seed))
    centre, context = skipgram_pairs(walks, window)
    z = ((torch.rand(num_nodes, dim, generator=g) - 0.5) / dim).requires_grad_()
    zc = torch.zeros(num_nodes, dim, requires_grad=True)
    opt = torch.optim.Adam([z, zc], lr=lr)
    noise = torch.bincount(walks.reshape(-1), minlength=num_nodes).float().pow(0.75)
    for _ in range(epochs):
        order = torch.randperm(centre.numel(), generator=g)
        for i in range(0, order.numel(), batch_size):
            idx = order[i : i + batch_size]
            u, v = z[centre[idx]], context[idx]
            if negatives == 0:
                loss = F.cross_entropy(u @ zc.T, v)
            else:
                neg = torch.multinomial(noise, idx.numel() * negatives, replacement=True, generator=g)
                pos = (u * zc[v]).sum(-1)
                negs = torch.einsum("bd,bkd->bk", u, zc[neg].view(idx.numel(), negatives, dim))
                loss = -(F.logsigmoid(pos) + F.logsigmoid(-negs).sum(-1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return z.detach()


def deepwalk_embeddings(adj: Tensor, *, dim: int = 32, walks_per_node: int = 10, walk_length: int = 40,
                        window: int = 5, negatives: int = 5, epochs: int = 1, lr: float = 0.025,
                        seed: int = 0) -> Tensor:
    """DeepWalk: first-order random walks + skip-gram. ``adj`` ``(n, n)`` -> embeddings ``(n, dim)``.

    Args:
        adj: symmetric non-negative adjacency (edge weights).
        dim: embedding size.
        walks_per_node, walk_length: walks started from every node, and their length in nodes.
        window: context size (pairs at most ``window`` steps apart).
        negatives: negative samples per pair; 0 for the full softmax.
        epochs: passes over all pairs.
        lr: Adam's learning rate.
        seed: seed of the walks, the initialisation and the minibatches.
    """
    walks = random_walks(adj, walks_per_node=walks_per_node, walk_length=walk_length, seed=seed)
    return skipgram_embeddings(walks, adj.shape[0], dim=dim, window=window, negatives=negatives, epochs=epochs,
                               lr=lr, seed=seed)


def node2vec_embeddings(adj: Tensor, *, p: float = 1.0, q: float = 1.0, dim: int = 32, walks_per_node: int = 10,
                        walk_length: int = 40, window: int = 5, negatives: int = 5, epochs: int = 1,
                        lr: float = 0.025, seed: int = 0) -> Tensor:
    """node2vec: second-order ``(p, q)`` walks + skip-gram. ``adj`` ``(n, n)`` -> ``(n, dim)``.

    ``p``: return parameter (large: rarely step back); ``q``: in-out parameter (``q < 1`` explores outward,
    ``q > 1`` stays local). Other arguments as :func:`deepwalk_embeddings`.
    """
    walks = random_walks(adj, walks_per_node=walks_per_node, walk_length=walk_length, p=p, q=q, seed=seed)
    return skipgram_embeddings(walks, adj.shape[0], dim=dim, window=window, negatives=negatives, epochs=epochs,
                               lr=lr, seed=seed)
