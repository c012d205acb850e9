"""Graph datasets as dense batched graphs: ``{"x": (N, n, d), "adj": (N, n, n)}`` (docs/tasks.md, baselines.gnn).

Both are deterministic functions of their options (``seed`` included), built in memory with no network. Every
graph has the same number of nodes ``n`` (no padding), a symmetric 0/1 adjacency with zero diagonal, and its nodes
in random order.

``sbm_nodes`` (node classification, ``tokens`` task, targets ``(N, n)``): each sample is a graph from a stochastic
block model (Holland et al. 1983) with ``blocks`` equal blocks, edge probability ``p_in`` within a block and
``p_out`` between blocks; the target of a node is its block. A block's *identity* cannot come from structure alone
(relabelling the blocks gives the same distribution), so node features are weakly informative:
``x_i = signal * onehot(block_i) + N(0, I)``. Structure is what makes the task solvable well: averaging the
features of a node's neighbours (mostly its own block) denoises them. Two reference points, measured on the test
split and stated in the description: the majority class (``100 / blocks`` %) and the features-only rule
``argmax_c x_ic`` (the Bayes rule without the graph).

``graph_motifs`` (graph classification, ``classify`` task): a random recursive tree on ``base_nodes`` nodes with a
6-node motif attached by one edge (from the motif's last node to a uniform tree node); the class is the motif.
Node features carry structure only: ``features="degree"`` (default) one-hot encodes each node's degree, capped at
``MAX_DEGREE`` (``in_chans = MAX_DEGREE + 1``; the usual input for featureless graphs, as in Xu et al. 2019's GIN
experiments), ``features="constant"`` is a constant 1 (``in_chans = 1``; with it, GCN's normalised propagation
of a constant is nearly constant across nodes, see below). Two motif sets:

- ``motifs="cycles"`` (default): a cycle of length ``L`` in {3, 4, 5, 6} over the first ``L`` motif nodes plus a
  path over the rest; every motif has 6 nodes and 6 edges and the graphs of all classes have the same degree
  multiset, so no node count, edge count or degree statistic separates the classes: only the cycle length does.
- ``motifs="shapes"``: ``path`` (P6, 5 edges), ``cycle`` (C6, 6 edges), ``star`` (a hub and 5 leaves, 5 edges),
  ``wheel`` (a hub and a 5-cycle, 10 edges): easier, the classes differ in degrees too.

With ``features="constant"`` the cycles task is hard for these models: in our trials (10-20 epochs) GCN, MPNN
and the spectral GNN stayed at chance and ChebNet reached 41%; with ``features="degree"`` a 4-layer GCN reached
99% test accuracy in 10 epochs.
Majority class: 25 % (classes drawn uniformly).

Example::

    from experiments.data import create_dataset

    s = create_dataset("sbm_nodes", num_train=10, num_test=5)
    s.train.inputs["x"].shape, s.train.inputs["adj"].shape, s.train.targets.shape   # (10, 48, 3) (10, 48, 48) (10, 48)
    g = create_dataset("graph_motifs", num_train=10, num_test=5)
    g.train.inputs["adj"].shape, g.num_classes, g.task                              # (10, 20, 20), 4, 'classify'
"""

from __future__ import annotations

import numpy as np
import torch

from ._registry import DatasetSplits, SampleSet, register_dataset

__all__ = ["MOTIF_CYCLES", "MOTIF_SHAPES", "cycle_motif_edges", "graph_motifs", "random_tree_edges", "sbm_adjacency",
           "sbm_nodes", "shape_motif_edges"]

MOTIF_CYCLES = (3, 4, 5, 6)
MOTIF_SHAPES = ("path", "cycle", "star", "wheel")
MOTIF_NODES = 6
MAX_DEGREE = 6


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def sbm_adjacency(rng: np.random.Generator, labels: np.ndarray, p_in: float, p_out: float) -> np.ndarray:
    """A symmetric 0/1 adjacency ``(n, n)`` (zero diagonal): edge ``ij`` with probability ``p_in`` if
    ``labels[i] == labels[j]``, else ``p_out``, independently."""
    same = labels[:, None] == labels[None, :]
    upper = np.triu(rng.uniform(size=same.shape) < np.where(same, p_in, p_out), k=1)
    return (upper | upper.T).astype(np.float32)


@register_dataset
def sbm_nodes(*, seed: int = 0, num_train: int = 1000, num_test: int = 200, num_nodes: int = 48, blocks: int = 3,
              p_in: float = 0.25, p_out: float = 0.03, signal: float = 0.8) -> DatasetSplits:
    """Stochastic-block-model graphs; each node's block from weak features + structure (``tokens`` task).

    Args:
        seed: seed of everything.
        num_train, num_test: number of graphs.
        num_nodes: nodes per graph (blocks as equal as ``num_nodes`` allows).
        blocks: blocks = classes; the node features have ``blocks`` dimensions.
        p_in, p_out: edge probabilities within and between blocks.
        signal: mean of the feature of a node's own block (the other features have mean 0; all have std 1).
    """
    _check_positive(num_train=num_train, num_test=num_test, num_nodes=num_nodes)
    if int(blocks) != blocks or blocks < 2:
        raise ValueError(f"blocks must be an integer >= 2, got {blocks!r}")
    _check_prob("p_in", p_in)
    _check_prob("p_out", p_out)
    n, k = int(num_nodes), int(blocks)
    rng = np.random.default_rng(seed)

    def make(num: int) -> SampleSet:
        y = np.stack([rng.permutation(np.arange(n) % k) for _ in range(num)])
        adj = np.stack([sbm_adjacency(rng, y[i], p_in, p_out) for i in range(num)])
        x = float(signal) * np.eye(k, dtype=np.float32)[y] + rng.standard_normal((num, n, k)).astype(np.float32)
        return SampleSet(inputs={"x": torch.from_numpy(x), "adj": torch.from_numpy(adj)},
                         targets=torch.from_numpy(y.astype(np.int64)))

    train, test = make(int(num_train)), make(int(num_test))
    feat_acc = 100.0 * float((test.inputs["x"].argmax(-1) == test.targets).float().mean())
    return DatasetSplits(
        train=train, test=test, num_classes=k, in_chans=k, image_size=0, multilabel=False, task="tokens",
        class_names=[f"block{c}" for c in range(k)],
        description=(f"SBM node classification: {n} nodes, {k} blocks, p_in={p_in}, p_out={p_out}, features "
                     f"{signal}*onehot(block)+N(0,1), seed={seed}; majority {100.0 / k:.1f}%, features-only argmax "
                     f"{feat_acc:.1f}% (test)"),
    )


def random_tree_edges(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Edges of a random recursive tree on nodes ``0..n-1``: node ``i`` attaches to a uniform node ``< i``."""
    return [(i, int(rng.integers(0, i))) for i in range(1, n)]


def cycle_motif_edges(length: int, offset: int) -> list[tuple[int, int]]:
    """The ``cycles`` motif on nodes ``offset..offset+5``: a cycle over the first ``length`` and a path over the
    rest, attached to the cycle's first node; always 6 edges."""
    if length not in MOTIF_CYCLES:
        raise ValueError(f"motif cycle length must be one of {MOTIF_CYCLES}, got {length!r}")
    nodes = [offset + i for i in range(MOTIF_NODES)]
    edges = [(nodes[i], nodes[(i + 1) % length]) for i in range(length)]
    path = [nodes[0]] + nodes[length:]
    edges += [(path[i], path[i + 1]) for i in range(len(path) - 1)]
    return edges


def shape_motif_edges(shape: str, offset: int) -> list[tuple[int, int]]:
    """The ``shapes`` motif on nodes ``offset..offset+5``: ``path``, ``cycle``, ``star`` (hub ``offset``) or
    ``wheel`` (hub ``offset``, rim ``offset+1..offset+5``)."""
    v = [offset + i for i in range(MOTIF_NODES)]
    if shape == "path":
        return [(v[i], v[i + 1]) for i in range(5)]
    if shape == "cycle":
        return [(v[i], v[(i + 1) % 6]) for i in range(6)]
    if shape == "star":
        return [(v[0], v[i]) for i in range(1, 6)]
    if shape == "wheel":
        return [(v[0], v[i]) for i in range(1, 6)] + [(v[i], v[i % 5 + 1]) for i in range(1, 6)]
    raise ValueError(f"unknown motif shape {shape!r}; choose from: {', '.join(MOTIF_SHAPES)}")


@register_dataset
def graph_motifs(*, seed: int = 0, num_train: int = 2000, num_test: int = 500, base_nodes: int = 14,
                 motifs: str = "cycles", features: str = "degree") -> DatasetSplits:
    """Random trees with a planted 6-node motif; the class is its cycle length 3-6 (or its shape: path, cycle, ...).

    Args:
        seed: seed of everything.
        num_train, num_test: number of graphs (classes drawn uniformly).
        base_nodes: nodes of the random tree the motif is attached to (graphs have ``base_nodes + 6`` nodes).
        motifs: ``shapes`` or ``cycles`` (see the module docstring).
        features: ``degree`` (one-hot degree, capped at ``MAX_DEGREE``) or ``constant`` (all ones).
    """
    if features not in ("degree", "constant"):
        raise ValueError(f"unknown features {features!r}; choose from: degree, constant")
    if motifs not in ("shapes", "cycles"):
        raise ValueError(f"unknown motifs {motifs!r}; choose from: shapes, cycles")
    _check_positive(num_train=num_train, num_test=num_test, base_nodes=base_nodes)
    b = int(base_nodes)
    n = b + MOTIF_NODES
    rng = np.random.default_rng(seed)

    def make(num: int) -> SampleSet:
        y = rng.integers(0, 4, num)
        adj = np.zeros((num, n, n), dtype=np.float32)
        for g in range(num):
            motif = (shape_motif_edges(MOTIF_SHAPES[y[g]], b) if motifs == "shapes"
                     else cycle_motif_edges(MOTIF_CYCLES[y[g]], b))
            edges = random_tree_edges(rng, b) + motif
            edges.append((b + MOTIF_NODES - 1, int(rng.integers(0, b))))
            perm = rng.permutation(n)
            e = perm[np.array(edges)]
            adj[g, e[:, 0], e[:, 1]] = 1.0
            adj[g, e[:, 1], e[:, 0]] = 1.0
        a = torch.from_numpy(adj)
        if features == "constant":
            x = torch.ones(num, n, 1)
        else:
            x = torch.nn.functional.one_hot(a.sum(-1).long().clamp_max(MAX_DEGREE), MAX_DEGREE + 1).float()
        return SampleSet(inputs={"x": x, "adj": a},
                         targets=torch.from_numpy(y.astype(np.int64)))

    train, test = make(int(num_train)), make(int(num_test))
    return DatasetSplits(
        train=train, test=test, num_classes=4, in_chans=1 if features == "constant" else MAX_DEGREE + 1,
        image_size=0, multilabel=False, task="classify", class_names=list(MOTIF_SHAPES) if motifs == "shapes" else [f"cycle{c}" for c in MOTIF_CYCLES],
        description=(f"random recursive tree on {b} nodes + a 6-node motif ({motifs}: "
                     f"{', '.join(MOTIF_SHAPES) if motifs == 'shapes' else 'cycle of length 3/4/5/6 + path'}), "
                     f"{n} nodes, {features} features, seed={seed}; majority 25%"),
    )
