"""Recursive Cortical Network (baselines/rcn.py): known answers on tiny hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import baselines
from baselines.rcn import (
    RCN,
    backtrace_tree,
    dilate,
    edge_features,
    learn_laterals,
    oriented_filters,
    sparsify,
    tree_max_product,
)


def _square(shift=(0, 0), size=32):
    x = torch.zeros(1, 1, size, size)
    x[0, 0, 9 + shift[0]:21 + shift[0], 9 + shift[1]:21 + shift[1]] = 1.0
    return x


def _bar(size=32):
    x = torch.zeros(1, 1, size, size)
    x[0, 0, 5:27, 14:18] = 1.0
    return x


@pytest.mark.parametrize("dark_side,orient", [("left", 0), ("top", 4), ("right", 8), ("bottom", 12)])
def test_edge_filters_respond_to_the_right_orientation(dark_side, orient):
    img = torch.zeros(1, 16, 16)
    if dark_side == "left":
        img[:, :, 8:] = 1
    elif dark_side == "right":
        img[:, :, :8] = 1
    elif dark_side == "top":
        img[:, 8:, :] = 1
    else:
        img[:, :8, :] = 1
    E, S = edge_features(img, oriented_filters(16, 1.0), threshold=0.1)
    assert E.sum() > 0
    per_orient = E[0].sum((1, 2))
    assert per_orient.argmax().item() == orient and per_orient.sum() == per_orient[orient]
    # non-max suppression: one pixel thick across the edge
    across = E[0, orient].sum(1 if dark_side in ("left", "right") else 0)
    assert across.max() == 1


def test_dilate_is_a_square_max_within_the_radius():
    x = torch.full((2, 7, 7), -1.0)
    x[:, 3, 3] = 5.0
    out = dilate(x, torch.tensor([1, 2]))
    assert (out[0] == 5).sum() == 9 and (out[1] == 5).sum() == 25
    assert out[0, 1, 1] == -1 and out[1, 1, 1] == 5


def test_max_product_over_a_pool_picks_the_max_within_the_pool_radius():
    model = RCN(num_classes=1, pool_radius=2, n_iters=0)
    model._set_buffers(torch.tensor([[[0, 10, 10]]]), torch.tensor([0]), torch.tensor([[[-1, 0, 0]]]),
                       torch.full((1, 1, 3), -1))
    ev = -torch.ones(3, 16, 24, 24)
    ev[0, 0, 11, 12] = 1.0  # inside the pool (displacement (1, 2))
    ev[1, 0, 13, 10] = 1.0  # outside (3 rows away)
    ev[2, 1, 10, 10] = 1.0  # right place, wrong orientation
    assert model.forward_scores(ev)[:, 0].tolist() == [1.0, -1.0, -1.0]


def test_lateral_constraints_forbid_inconsistent_placements():
    P = 9
    ev = -torch.ones(1, 2, P, P)
    ev[0, 0, 0, 0] = 1.0  # root's evidence at displacement (0, 0)
    ev[0, 1, 8, 8] = 1.0  # child's at (8, 8): consistent only if the lateral allows 8 pixels of relative shift
    parent, depth = torch.tensor([-1, 0]), torch.tensor([0, 1])
    tight = tree_max_product(ev, parent, torch.tensor([0, 1]), depth)[0, 0].max().item()
    loose = tree_max_product(ev, parent, torch.tensor([0, 8]), depth)[0, 0].max().item()
    assert tight == 0.0 and loose == 2.0
    d = backtrace_tree(tree_max_product(ev, parent, torch.tensor([0, 8]), depth), parent, torch.tensor([0, 8]), depth)
    assert d[0].tolist() == [[0, 0], [8, 8]]
    d = backtrace_tree(tree_max_product(ev, parent, torch.tensor([0, 1]), depth), parent, torch.tensor([0, 1]), depth)
    assert (d[0, 0] - d[0, 1]).abs().max() <= 1  # the decoded placement respects the constraint


def test_sparsify_and_laterals():
    E = np.zeros((2, 10, 10), dtype=np.float32)
    E[0, 2, 2:9] = 1  # a row of 7 edge pixels
    S = E.copy()
    S[0, 2, 5] = 2.0  # the strongest is taken first
    fr = sparsify(E, S, suppress_radius=2)
    assert fr.tolist() == [[0, 2, 5], [0, 2, 2], [0, 2, 8]]
    lat = learn_laterals(fr[:, 1:], perturb_factor=2.0, tolerance=0.0)
    # neighbours at distance 3 are joined (r = round(1.5) = 2); the far pair (6 apart) is already allowed 4 <= 3 + 0?
    # no: 4 > 3, so it is joined as well with r = 3
    assert sorted(map(tuple, lat.tolist())) == [(0, 1, 2), (0, 2, 2), (1, 2, 3)]
    lat = learn_laterals(fr[:, 1:], perturb_factor=2.0, tolerance=1.0)
    assert len(lat) == 2  # with tolerance 1 the chain's 4 <= 3 + 1 suffices


def test_trained_on_one_image_classifies_a_shifted_copy_and_rejects_another_shape():
    model = baselines.create_model("rcn", num_classes=2, in_chans=1)
    assert not any(p.requires_grad for p in model.parameters())
    assert model(_square()).abs().sum() == 0  # unfitted: zeros
    model.fit(torch.cat([_square(), _bar()]), torch.tensor([0, 1]))
    shifted = _square((2, -3))
    assert model(shifted).argmax(1).item() == 0
    assert model(_bar()).argmax(1).item() == 1
    # the square's model explains its shifted copy better than the bar
    out = model.explain(torch.cat([shifted, _bar()]))
    assert out["forward"][0, 0] > out["forward"][1, 0]


def test_backtracing_returns_the_winning_models_features_at_the_winning_positions():
    model = RCN(num_classes=2)
    model.fit(torch.cat([_square(), _bar()]), torch.tensor([0, 1]))
    out = model.explain(_square((2, -3)))
    assert out["winner"].item() == 0
    pos = out["winner_positions"][0]
    feats = model.feats[0]
    valid = feats[:, 0] >= 0
    assert (pos[valid, 0] == feats[valid, 0]).all()  # same features ...
    ev = model.evidence(out["edges"])[0]
    on_edge = ev[pos[valid, 0], pos[valid, 1], pos[valid, 2]]
    assert (on_edge == 1).float().mean() == 1.0  # ... each placed on an edge of its orientation
    # across an edge the placement is determined: vertical edges moved by the true column shift, horizontal edges by
    # the true row shift (along an edge a feature may slide: the evidence is the same)
    f, shift = feats[valid, 0], pos[valid, 1:] - feats[valid, 1:]
    vertical, horizontal = (f == 0) | (f == 8), (f == 4) | (f == 12)
    assert vertical.sum() >= 4 and horizontal.sum() >= 4
    # (a corner feature may take a neighbouring orientation's edge: orientation pooling is +-1)
    assert (shift[vertical, 1] == -3).float().mean() >= 0.8 and (shift[horizontal, 0] == 2).float().mean() >= 0.8
    assert math.isfinite(out["scores"][0].max().item())


def test_buffers_round_trip_through_a_state_dict():
    model = RCN(num_classes=2)
    model.fit(torch.cat([_square(), _bar()]), torch.tensor([0, 1]))
    other = RCN(num_classes=2)
    other.fit(torch.cat([_square(), _bar()]), torch.tensor([0, 1]))
    other.load_state_dict(model.state_dict())
    x = torch.cat([_square((1, 1)), _bar()])
    assert torch.equal(model(x), other(x))


# ------------------------------------------------------------------------------- scoring ("llr") and fast inference
def _forest_model(score, rates=None, pool_radius=1):
    """Two hand-made models without laterals (every feature its own root): model 0 has 2 features, model 1 has 6."""
    kw = {} if rates is None else {"object_rate": rates[0], "background_rate": rates[1]}
    model = RCN(num_classes=2, pool_radius=pool_radius, score=score, **kw)
    feats = torch.full((2, 6, 3), -1, dtype=torch.long)
    feats[0, :2] = torch.tensor([[0, 4, 4], [0, 4, 10]])
    feats[1] = torch.tensor([[1, 4, 4], [1, 4, 10], [1, 4, 16], [1, 10, 4], [1, 10, 10], [1, 10, 16]])
    tree = torch.full((2, 6, 3), -1, dtype=torch.long)
    tree[0, :2] = torch.tensor([-1, 0, 0])
    tree[1] = torch.tensor([-1, 0, 0])
    model._set_buffers(feats, torch.tensor([0, 1]), tree, torch.full((2, 1, 3), -1))
    if rates is not None:
        model.rates = torch.tensor(rates)
    ev = -torch.ones(1, 2, 20, 20)
    ev[0, 0, 4, 5] = ev[0, 0, 3, 10] = 1.0  # both of model 0's features found (within the pool)
    ev[0, 1, 4, 4] = ev[0, 1, 4, 10] = ev[0, 1, 4, 16] = ev[0, 1, 10, 4] = ev[0, 1, 11, 11] = 1.0  # 5 of model 1's 6
    return model, ev


def test_llr_score_prefers_a_fully_explained_small_model_over_a_larger_partly_explained_one():
    q, b = 0.9, 0.7
    a, c = math.log(q / b), math.log((1 - q) / (1 - b))
    model, ev = _forest_model("llr", (q, b))
    assert model.llr_weights() == pytest.approx((a, c))
    u = model.unary(ev)
    assert u[0, 0, 4, 5].item() == pytest.approx(a) and u[0, 0, 0, 0].item() == pytest.approx(c)
    s = model.forward_scores(u)[0]
    assert s.tolist() == pytest.approx([2 * a, 5 * a + c], abs=1e-5)  # 0.503 > 0.158: model 0 wins
    assert s[0] > s[1]
    # the +-1 "sum" score counts hits minus misses, so the larger model wins (2 < 5 - 1)
    model, ev = _forest_model("sum")
    assert model.forward_scores(model.unary(ev))[0].tolist() == [2.0, 4.0]
    # symmetric rates (q = 1 - b) reproduce "sum" scaled by log(q / b)
    model, ev = _forest_model("llr", (0.8, 0.2))
    assert model.forward_scores(model.unary(ev))[0].tolist() == pytest.approx([2 * math.log(4), 4 * math.log(4)])


def test_fit_calibrates_the_rates_from_the_training_images():
    # two identical copies per class: a model finds all its features on its twin (q -> 1 - eps); the square's and the
    # bar's models find fewer on each other (b < q)
    x = torch.cat([_square(), _square(), _bar(), _bar()])
    model = RCN(num_classes=2)
    model.fit(x, torch.tensor([0, 0, 1, 1]))
    q, b = model.rates.tolist()
    assert q == pytest.approx(0.999) and 0.0 < b < 0.9
    # b by hand: mean hit fraction (s + K) / 2K of each model's forward MAP on the other class's images
    E, _ = model.preprocess(x)
    s = model.forward_scores(model.evidence(E))
    K = (model.feats[..., 0] >= 0).sum(1).float()
    hit = (s + K) / (2 * K)
    other = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert b == pytest.approx(hit[other].mean().item(), abs=1e-6)
    # one image per class: q cannot be estimated and falls back to 0.9; given rates are kept
    one = RCN(num_classes=2)
    one.fit(torch.cat([_square(), _bar()]), torch.tensor([0, 1]))
    assert one.rates[0].item() == pytest.approx(0.9) and one.rates[1].item() == pytest.approx(b, abs=1e-6)
    given = RCN(num_classes=2, object_rate=0.8, background_rate=0.3)
    given.fit(x, torch.tensor([0, 0, 1, 1]))
    assert given.rates.tolist() == pytest.approx([0.8, 0.3])
    for bad in ({"score": "mean"}, {"object_rate": 1.0}, {"object_rate": 0.3, "background_rate": 0.5}):
        with pytest.raises(ValueError):
            RCN(**bad)


def test_dilate_matches_a_brute_force_window_max():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 7, 9, generator=g)
    radius = torch.randint(0, 10, (40,), generator=g)
    out = dilate(x, radius)
    for n in range(40):
        r = int(radius[n])
        for u in range(7):
            for v in range(9):
                want = x[n, max(0, u - r):u + r + 1, max(0, v - r):v + r + 1].max()
                assert out[n, u, v] == want


def _digits_model(per_class=3, score="llr", **kw):
    from experiments.data.digits import digits

    d = digits(seed=0, image_size=32, per_class=per_class)
    model = RCN(num_classes=10, score=score, **kw)
    model.fit(d.train.images, d.train.labels)
    return model, d.test.images[:12]


@pytest.mark.parametrize("score", ["llr", "sum"])
def test_pruned_fast_path_equals_the_exhaustive_slow_path(score):
    model, x = _digits_model(score=score, num_candidates=3)
    E, _ = model.preprocess(x)
    ev = model.unary(model.evidence(E))
    full = model.forward_scores(ev)  # every model, the reference
    M = full.shape[1]
    b_idx, m_idx = torch.meshgrid(torch.arange(len(x)), torch.arange(M), indexing="ij")
    assert torch.allclose(model.pair_scores(ev, b_idx.reshape(-1), m_idx.reshape(-1)).view(len(x), M), full,
                          atol=1e-5)
    bound = model.upper_bound(ev)
    assert (bound >= full - 1e-5).all()
    pruned, computed = model.pruned_forward_scores(ev, 3, round_size=4)
    assert computed.float().mean() < 0.9  # something was pruned ...
    assert torch.allclose(pruned[computed], full[computed], atol=1e-5) and (pruned[~computed] == -math.inf).all()
    top = full.sort(dim=1, descending=True, stable=True).indices[:, :3]  # ... but not a candidate nor a class maximum
    assert computed.gather(1, top).all()
    cls_best = torch.full((len(x), 10), -math.inf).scatter_reduce(1, model.labels.expand(len(x), -1), full, "amax")
    cls_pruned = torch.full((len(x), 10), -math.inf).scatter_reduce(1, model.labels.expand(len(x), -1), pruned, "amax")
    assert torch.allclose(cls_best, cls_pruned, atol=1e-5)
    slow = RCN(num_classes=10, score=score, num_candidates=3, prune=False)
    slow.load_state_dict(model.state_dict())
    a, b = model.explain(x), slow.explain(x)
    assert torch.equal(a["candidates"], b["candidates"]) and torch.allclose(a["scores"], b["scores"])
    assert torch.allclose(model(x), slow(x))


def test_upper_bound_is_exact_for_single_feature_models():
    model = RCN(num_classes=1, pool_radius=2)
    model._set_buffers(torch.tensor([[[0, 10, 10]]]), torch.tensor([0]), torch.tensor([[[-1, 0, 0]]]),
                       torch.full((1, 1, 3), -1))
    ev = torch.randn(3, 2, 24, 24, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.upper_bound(ev), model.forward_scores(ev))


def test_a_state_dict_without_rates_loads_with_the_symmetric_rates():
    model = RCN(num_classes=2)
    model.fit(torch.cat([_square(), _square(), _bar()]), torch.tensor([0, 0, 1]))
    sd = {k: v for k, v in model.state_dict().items() if k != "rates"}  # as saved before the "llr" score
    other = RCN(num_classes=2)
    other.load_state_dict(sd)
    assert other.rates.tolist() == pytest.approx([0.9, 0.1])
    assert torch.equal(other(_square()).argmax(1), torch.tensor([0]))
