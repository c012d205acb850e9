"""DeepWalk / node2vec (baselines/random_walk.py) and the community-recovery tool (experiments/tools/random_walk.py)."""

import doctest

import numpy as np
import pytest
import torch

from baselines import random_walk
from baselines.random_walk import deepwalk_embeddings, node2vec_embeddings, random_walks, skipgram_pairs
from experiments.data.graphs import sbm_adjacency
from experiments.tools import random_walk as tool
from experiments.tools.random_walk import community_scores


def test_doctests():
    for module in (random_walk, tool):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0


def easy_sbm(n: int = 90, blocks: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % blocks)
    return torch.from_numpy(sbm_adjacency(rng, labels, 0.3, 0.01)), torch.from_numpy(labels)


def test_walks_follow_edges_and_are_deterministic():
    adj, _ = easy_sbm()
    w = random_walks(adj, walks_per_node=3, walk_length=12, seed=1)
    assert w.shape == (270, 12) and torch.equal(w[:, 0], torch.arange(90).repeat(3))
    assert adj[w[:, :-1], w[:, 1:]].eq(1).all()  # every step is an edge (the graph has no isolated node)
    assert torch.equal(w, random_walks(adj, walks_per_node=3, walk_length=12, seed=1))
    w2 = random_walks(adj, walks_per_node=3, walk_length=12, p=0.5, q=2.0, seed=1)
    assert adj[w2[:, :-1], w2[:, 1:]].eq(1).all()


def test_node2vec_p_and_q_steer_the_walk():
    adj, _ = easy_sbm(seed=2)

    def back_rate(p, q):
        w = random_walks(adj, walks_per_node=5, walk_length=20, p=p, q=q, seed=0)
        return float((w[:, 2:] == w[:, :-2]).float().mean())

    assert back_rate(0.1, 1.0) > 2 * back_rate(1.0, 1.0) > 4 * back_rate(10.0, 1.0)


def test_node2vec_second_order_probabilities():
    # star-free path 0 - 1 - 2 plus edge 1 - 3 and 0 - 3: from 0 to 1, next is 0 (1/p), 3 (neighbour of 0: 1),
    # 2 (distance 2 from 0: 1/q)
    adj = torch.zeros(4, 4)
    for i, j in [(0, 1), (1, 2), (1, 3), (0, 3)]:
        adj[i, j] = adj[j, i] = 1.0
    p, q = 0.5, 4.0
    counts = torch.zeros(4)
    for seed in range(40):
        w = random_walks(adj, walks_per_node=200, walk_length=3, p=p, q=q, seed=seed)
        w = w[(w[:, 0] == 0) & (w[:, 1] == 1)]
        counts += torch.bincount(w[:, 2], minlength=4)
    expected = torch.tensor([1 / p, 0.0, 1 / q, 1.0])
    torch.testing.assert_close(counts / counts.sum(), expected / expected.sum(), atol=0.02, rtol=0)


def test_skipgram_pairs_window():
    c, o = skipgram_pairs(torch.tensor([[0, 1, 2, 3]]), window=2)
    assert sorted(zip(c.tolist(), o.tolist())) == sorted(
        [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (0, 2), (2, 0), (1, 3), (3, 1)])


@pytest.mark.parametrize("method", ["deepwalk", "node2vec", "deepwalk_softmax"])
def test_community_recovery_well_above_chance(method):
    adj, labels = easy_sbm()
    kw = dict(dim=16, walks_per_node=5, walk_length=20, window=4, seed=0)
    if method == "deepwalk":
        z = deepwalk_embeddings(adj, **kw)
    elif method == "node2vec":
        z = node2vec_embeddings(adj, p=1.0, q=0.5, **kw)
    else:
        z = deepwalk_embeddings(adj, negatives=0, **kw)
    scores = community_scores(z, labels, seed=0)
    assert scores["nmi"] > 0.8 and scores["acc"] > 85  # chance: nmi ~0, acc 33%
    chance = community_scores(torch.randn(90, 16, generator=torch.Generator().manual_seed(0)), labels, seed=0)
    assert chance["nmi"] < 0.2


def test_bad_input_raises():
    with pytest.raises(ValueError, match="square"):
        random_walks(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="p and q"):
        random_walks(torch.zeros(3, 3), p=0.0)


def test_tool_is_registered():
    from experiments.tools.run import TOOLS

    assert TOOLS["random_walk"] is tool.exp_random_walk
