"""Community recovery from random-walk embeddings (DeepWalk, node2vec) on stochastic-block-model graphs.

DeepWalk and node2vec (``baselines.random_walk``) learn node embeddings without labels, from random walks and a
skip-gram objective, so they are not a supervised minibatch task for the runner: this tool embeds the nodes of one
SBM graph per setting and scores how well the embeddings recover the blocks:

- ``nmi``: normalised mutual information between k-means clusters of the embeddings (k = number of blocks, 10
  restarts) and the blocks (0: chance, 1: perfect; label permutations do not matter);
- ``acc``: accuracy of a logistic regression trained on the embeddings of half of the nodes (stratified) and
  tested on the other half (chance: 1 / blocks).

References on the same table: a spectral embedding (the ``dim`` eigenvectors of the normalised Laplacian
``I - D^-1/2 A D^-1/2`` with the smallest eigenvalues, Ng, Jordan & Weiss 2002's spectral clustering) and random
Gaussian embeddings (chance). Run it with ``python -m experiments.tools.run random_walk [--quick]``.

Example:
    >>> import torch
    >>> from experiments.data.graphs import sbm_adjacency
    >>> import numpy as np
    >>> labels = np.arange(60) % 2
    >>> adj = torch.from_numpy(sbm_adjacency(np.random.default_rng(0), labels, 0.5, 0.02))
    >>> scores = community_scores(spectral_embedding(adj, dim=2), torch.from_numpy(labels), seed=0)
    >>> scores["nmi"] > 0.9, scores["acc"] > 90
    (True, True)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["community_scores", "exp_random_walk", "spectral_embedding"]


def spectral_embedding(adj: Tensor, *, dim: int) -> Tensor:
    """The ``dim`` eigenvectors of ``I - D^-1/2 A D^-1/2`` with the smallest eigenvalues, rows normalised: ``(n, dim)``."""
    deg = adj.sum(1)
    s = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    lap = torch.eye(adj.shape[0]) - s[:, None] * adj * s[None, :]
    _, u = torch.linalg.eigh(lap.double())
    z = u[:, :dim].float()
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def community_scores(emb: Tensor, labels: Tensor, *, seed: int = 0) -> dict[str, float]:
    """``nmi`` (k-means on ``emb`` vs ``labels``) and ``acc`` (%, logistic regression, stratified half/half split).

    Shapes: ``emb`` ``(n, dim)``, ``labels`` int ``(n,)``.
    """
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = emb.double().numpy(), labels.numpy()
    k = int(y.max()) + 1
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    nmi = float(normalized_mutual_info_score(y, clusters))
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(xtr), ytr)
    acc = 100.0 * float((clf.predict(scaler.transform(xte)) == yte).mean())
    return {"nmi": nmi, "acc": acc}


def exp_random_walk(*, quick: bool, seed: int) -> tuple[dict, dict]:
    """DeepWalk, node2vec (two ``(p, q)``), spectral and random embeddings on SBM graphs of rising difficulty."""
    from baselines.random_walk import deepwalk_embeddings, node2vec_embeddings
    from experiments.data.graphs import sbm_adjacency

    n, blocks, p_in = (150, 3, 0.15) if quick else (300, 3, 0.1)
    p_outs = (0.01, 0.03) if quick else (0.005, 0.01, 0.02, 0.03, 0.04)
    dim = 16
    walk = dict(walks_per_node=5 if quick else 10, walk_length=20 if quick else 40, window=5, dim=dim, epochs=1)
    rows: list[dict[str, Any]] = []
    for p_out in p_outs:
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.arange(n) % blocks)
        adj = torch.from_numpy(sbm_adjacency(rng, labels, p_in, p_out))
        y = torch.from_numpy(labels)
        avg_in = p_in * (n / blocks - 1)
        avg_out = p_out * n * (blocks - 1) / blocks
        methods = {
            "deepwalk": lambda a: deepwalk_embeddings(a, seed=seed, **walk),
            "node2vec p=1 q=0.5": lambda a: node2vec_embeddings(a, p=1.0, q=0.5, seed=seed, **walk),
            "node2vec p=1 q=2": lambda a: node2vec_embeddings(a, p=1.0, q=2.0, seed=seed, **walk),
            "spectral": lambda a: spectral_embedding(a, dim=blocks),
            "random (chance)": lambda a: torch.randn(a.shape[0], dim, generator=torch.Generator().manual_seed(seed)),
        }
        for name, fn in methods.items():
            t0 = time.perf_counter()
            z = fn(adj)
            seconds = time.perf_counter() - t0
            rows.append({"p_out": p_out, "in/out degree": f"{avg_in:.1f}/{avg_out:.1f}", "method": name,
                         **community_scores(z, y, seed=seed), "seconds": seconds})
    meta = {"nodes": n, "blocks": blocks, "p_in": p_in, "p_outs": list(p_outs), **walk,
            "notes": [f"One SBM graph per p_out ({n} nodes, {blocks} equal blocks, p_in={p_in}). nmi: k-means "
                      "(k = blocks) on the embeddings vs the blocks; acc %: logistic regression on half of the "
                      f"nodes, tested on the other half (chance {100 / blocks:.1f}%). Walks: "
                      f"{walk['walks_per_node']} per node of {walk['walk_length']} nodes, window {walk['window']}, "
                      f"skip-gram with 5 negatives, dim {dim}, 1 epoch of Adam (lr 0.025). spectral: the {blocks} "
                      "smallest eigenvectors of the normalised Laplacian, rows normalised."]}
    return {"random_walk": (rows, ["p_out", "in/out degree", "method", "nmi", "acc", "seconds"])}, meta
