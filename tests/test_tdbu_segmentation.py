"""Borenstein & Ullman's combined segmentation: known answers for every inference step, and one tiny ``feedback run``.

Covers baselines/graph_segmentation.py (Felzenszwalb-Huttenlocher criterion, min-size merge, region adjacency),
baselines/fragments.py (NCC, mutual information, top-down voting), baselines/min_cut.py (against brute force),
baselines/tdbu_segmentation.py (modes, fit, state dict) and experiments/data/figure_ground.py.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

import baselines
from baselines.fragments import Fragments, conditional_information, mutual_information, ncc_map, topdown_map
from baselines.graph_segmentation import felzenszwalb, region_adjacency
from baselines.min_cut import energy, min_cut
from baselines.tdbu_segmentation import border_contrast
from experiments.data import create_dataset


# ------------------------------------------------------------------------------------ bottom-up: FH segmentation
def test_felzenszwalb_merges_two_flat_regions_exactly_when_k_reaches_the_criterion():
    img = np.zeros((3, 4))
    img[:, 2:] = 1.0  # two flat 3x2 regions (size 6, Int 0) joined by edges of weight 1: merge iff 1 <= k / 6
    assert felzenszwalb(img, k=5.9, min_size=1).tolist() == [[0, 0, 1, 1]] * 3
    assert (felzenszwalb(img, k=6.0, min_size=1) == 0).all()
    assert (felzenszwalb(img, k=1e6, min_size=1) == 0).all()


def test_felzenszwalb_min_size_merges_a_speck_and_colour_distance_is_euclidean():
    img = np.zeros((3, 5, 5))
    img[0, 2, 2] = 1.0  # one bright pixel: its own segment unless min_size > 1
    assert felzenszwalb(img, k=0.1, min_size=1).max() == 1
    assert felzenszwalb(img, k=0.1, min_size=2).max() == 0
    img2 = np.zeros((3, 1, 2))
    img2[:, 0, 1] = 1.0  # colour step of length sqrt(3) between two single pixels: merge iff sqrt(3) <= k
    assert felzenszwalb(img2, k=1.73, min_size=1).max() == 1 and felzenszwalb(img2, k=1.74, min_size=1).max() == 0


def test_region_adjacency_of_three_stripes():
    img = np.zeros((4, 6))
    img[:, 2:4], img[:, 4:] = 0.5, 0.75
    lab = np.repeat(np.array([[0, 0, 1, 1, 2, 2]]), 4, 0)
    pairs, length, contrast = region_adjacency(lab, img)
    assert pairs.tolist() == [[0, 1], [1, 2]] and length.tolist() == [4, 4]
    np.testing.assert_allclose(contrast, [0.5, 0.25])


def test_border_contrast_is_zero_on_the_border_and_the_colour_gap_inside():
    img = np.full((3, 8, 8), 0.2)
    img[:, 2:6, 2:6] = 0.6
    lab = np.zeros((8, 8), dtype=np.int64)
    lab[2:6, 2:6] = 1
    np.testing.assert_allclose(border_contrast(lab, img), [0.0, math.sqrt(3) * 0.4])


# ------------------------------------------------------------------------------------ top-down: fragments
def test_ncc_is_one_where_a_fragment_was_cut_and_invariant_to_gain_and_offset():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 20, 20, generator=g)
    frag = img[:, :, 5:10, 8:13]  # centre (7, 10)
    ncc = ncc_map(torch.cat([img, 2 * img + 0.3, 1 - img]), frag, torch.ones(1, 1, 5, 5))
    assert ncc.shape == (3, 1, 20, 20)
    assert ncc[0, 0].flatten().argmax() == 7 * 20 + 10
    assert ncc[0, 0, 7, 10] == pytest.approx(1.0, abs=1e-5) and ncc[1, 0, 7, 10] == pytest.approx(1.0, abs=1e-5)
    assert ncc[2, 0, 7, 10] == pytest.approx(-1.0, abs=1e-5)
    assert ncc.abs().max() <= 1 + 1e-5
    flat = ncc_map(torch.ones(1, 1, 9, 9), frag, torch.ones(1, 1, 5, 5))
    assert (flat[..., 2:7, 2:7] == 0).all()  # no contrast, no match (the border windows see the zero padding)


def test_ncc_with_a_smaller_support_ignores_the_padding():
    img = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(1, 1, 7, 7)
    t[..., 2:5, 2:5] = img[..., 5:8, 5:8]  # a 3x3 fragment padded to 7x7, centre (6, 6)
    t[..., 0, 0] = 9.0  # outside the support: must not matter
    sup = torch.zeros(1, 1, 7, 7)
    sup[..., 2:5, 2:5] = 1
    small = ncc_map(img, img[..., 5:8, 5:8], torch.ones(1, 1, 3, 3))
    torch.testing.assert_close(ncc_map(img, t, sup), small, atol=1e-5, rtol=0)


def test_mutual_information_known_values():
    y = torch.tensor([1, 1, 0, 0])
    d = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]])
    torch.testing.assert_close(mutual_information(d, y), torch.tensor([1.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    # given the first feature, a copy of it adds nothing; the uninformative one adds nothing either
    torch.testing.assert_close(conditional_information(d, d[0], y), torch.zeros(3), atol=1e-5, rtol=0)


def test_topdown_map_votes_the_fragment_mask_at_its_detection():
    img = torch.zeros(1, 1, 12, 12)
    img[0, 0, 3:8, 3:8] = torch.arange(25.0).view(5, 5) / 25
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., :, :2] = 1.0  # left two columns are figure
    frags = Fragments(templates=img[:, :, 3:8, 3:8].clone(), supports=torch.ones(1, 1, 5, 5), masks=mask,
                      theta=torch.tensor([0.99]), weight=torch.tensor([2.0]), prior=torch.tensor(0.25))
    T, cover = topdown_map(img, frags, strength=1.0)
    assert cover[0, 5, 5] == 2.0 and cover.sum() == 2.0 * 25  # one detection at the centre (5, 5)
    assert T[0, 4, 3] == pytest.approx((2.0 + 0.25) / 3.0) and T[0, 4, 6] == pytest.approx(0.25 / 3.0)
    assert T[0, 0, 0] == pytest.approx(0.25) and T[0, 11, 11] == pytest.approx(0.25)  # uncovered: the prior


# ------------------------------------------------------------------------------------ combination: min cut
def test_min_cut_matches_brute_force_on_small_graphs():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(1, 7))
        all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        pick = rng.choice(len(all_pairs), size=int(rng.integers(0, len(all_pairs) + 1)), replace=False)
        pairs = np.array([all_pairs[k] for k in pick], dtype=np.int64).reshape(-1, 2)
        unary, w = rng.random((n, 2)) * 3, rng.random(len(pairs)) * 2
        best = min(energy(np.array(c), unary, pairs, w) for c in itertools.product((0, 1), repeat=n))
        assert energy(min_cut(unary, pairs, w), unary, pairs, w) == pytest.approx(best, abs=1e-6)


def test_min_cut_rejects_negative_weights():
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        min_cut(np.zeros((2, 2)), np.array([[0, 1]]), np.array([-1.0]))


def test_combine_smooths_over_weak_boundaries_and_keeps_strong_ones():
    model = baselines.create_model("tdbu_segmentation", num_classes=2, in_chans=1)
    lab = np.array([[0, 1, 2]])  # three one-pixel segments in a row
    T = np.array([[0.9, 0.45, 0.1]])  # segment 1 leans to ground (tau = 0.5)
    bu = {"labels": lab, "count": np.ones(3), "d": np.zeros(3), "pairs": np.array([[0, 1], [1, 2]]),
          "w": np.array([1.0, 0.01])}  # weak edge 0-1 (costly to cut), strong edge 1-2 (cheap)
    p = dict(tau=0.5, tau_bu=1.0, mu=0.0)
    assert model.combine(bu, T, lam=0.0, **p).tolist() == [[True, False, False]]  # top-down alone
    assert model.combine(bu, T, lam=1.0, **p).tolist() == [[True, True, False]]  # cut moved to the strong edge


# ------------------------------------------------------------------------------------ the model
def _toy(n: int = 8):
    x = torch.zeros(n, 1, 24, 24)
    y = torch.zeros(n, 24, 24, dtype=torch.long)
    for i in range(n):
        o = 3 + i % 8
        x[i, 0, o:o + 9, o:o + 9] = 1.0
        y[i, o:o + 9, o:o + 9] = 1
        x[i, 0, 20, 1:6] = 1.0  # a bright bar (5 pixels) that is not figure
    return x, y


def _iou(model, x, y) -> float:
    p = model(x).argmax(1) == 1
    return float((p & (y == 1)).sum() / (p | (y == 1)).sum())


def test_modes_on_a_toy_class_only_the_top_down_prior_rejects_the_distractor():
    x, y = _toy()
    ious = {}
    for mode in ("bottom_up", "top_down", "combined"):
        m = baselines.create_model("tdbu_segmentation", num_classes=2, in_chans=1, mode=mode, num_candidates=40,
                                   num_fragments=8, sizes=(5, 7), sigma=0.0)
        assert (m(x).argmax(1) == 0).all()  # unfitted: all ground
        m.fit(x, y)
        ious[mode] = _iou(m, x, y)
    assert ious["bottom_up"] == pytest.approx(81 / 86)  # flat segments: the bar is as salient as the square
    assert ious["top_down"] > ious["bottom_up"] and ious["combined"] == 1.0


def test_state_dict_round_trip_after_refit():
    x, y = _toy()
    kw = dict(num_classes=2, in_chans=1, num_candidates=40, num_fragments=8, sizes=(5, 7))
    a = baselines.create_model("tdbu_segmentation", **kw)
    a.fit(x, y)
    b = baselines.create_model("tdbu_segmentation", **kw, seed=1)
    b.fit(x[:6], y[:6])
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    assert not any(p.requires_grad for p in a.parameters())


def test_bad_options_are_one_line_errors_naming_the_choices():
    with pytest.raises(ValueError, match="bottom_up, top_down, combined"):
        baselines.create_model("tdbu_segmentation", num_classes=2, in_chans=1, mode="joint")
    with pytest.raises(ValueError, match="num_classes must be 2"):
        baselines.create_model("tdbu_segmentation", num_classes=3, in_chans=1)
    with pytest.raises(ValueError, match="circle, square"):
        create_dataset("shapes_figure_ground", figure="star", num_train=1, num_test=1)


def test_figure_ground_datasets():
    base = create_dataset("cluttered_digits", seed=3, num_train=6, num_test=4)
    fg = create_dataset("cluttered_figure_ground", seed=3, num_train=6, num_test=4)
    assert fg.task == "segment" and fg.num_classes == 2
    assert torch.equal(fg.train.inputs, base.train.images) and torch.equal(fg.test.targets, (base.test.masks > 0).long())
    shp = create_dataset("shapes_segment", seed=2, num_train=6, num_test=4)
    sfg = create_dataset("shapes_figure_ground", seed=2, figure="square", num_train=6, num_test=4)
    assert torch.equal(sfg.train.targets, (shp.train.targets == 2).long())  # square is class 1 -> mask value 2


def test_feedback_run_end_to_end(tmp_path):
    from experiments.cli import main

    code = main(["run", "tdbu_segmentation", f"runs_dir={tmp_path}", "log.wandb=disabled",
                 "model.backbone_args.mode=combined", "data.options.clutter=6",
                 "data.options.clutter_size=5", "data.options.num_train=12", "data.options.num_test=6",
                 "model.backbone_args.num_candidates=30", "model.backbone_args.num_fragments=4",
                 "model.backbone_args.lambdas=[0.0,1.0]", "model.backbone_args.mus=[0.0]"])
    assert code == 0
    (result,) = list(tmp_path.glob("tdbu_segmentation/*/seed0/result.json"))
    assert (result.parent / "DONE").exists()
    metrics = json.loads(result.read_text())["metrics"]
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["pixel_acc"] > 0.5
