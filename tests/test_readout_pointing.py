"""The pointing-game scorer on hand-made cases, and the whole game on a tiny trained run."""

import doctest
import json

import pytest
import torch

from experiments import pointing
from experiments.data import ImageSet
from experiments.pointing import (
    PointingGame,
    box_mask,
    difficult_pairs,
    evaluate_pointing,
    format_pointing_table,
    ground_truth,
    is_hit,
    method_spec,
    point_of,
    summarize_pointing,
    tolerance_px,
)


def test_tolerance_scales_with_resolution():
    assert tolerance_px(224) == 15.0
    assert tolerance_px(32) == pytest.approx(15 * 32 / 224)
    assert tolerance_px(448) == 30.0


def test_point_is_column_row_and_ties_go_to_the_middle():
    m = torch.zeros(6, 9)
    m[4, 1] = 2.0
    assert point_of(m) == (1, 4)  # (u, v) = (x = column, y = row)
    flat = torch.zeros(5, 5)
    flat[1:4, 2:5] = 1.0  # a 3x3 plateau centred on (row 2, column 3)
    assert point_of(flat) == (3, 2)
    assert point_of(torch.ones(4, 4)) == (1, 1)  # four pixels tie around (1.5, 1.5): first in raster order


def test_hit_needs_distance_strictly_below_tolerance():
    gt = torch.zeros(10, 10, dtype=torch.bool)
    gt[5, 8] = True  # (u, v) = (8, 5)
    assert is_hit((8, 5), gt, tolerance=0.5)
    assert not is_hit((5, 5), gt, tolerance=3.0)  # distance exactly 3: a miss
    assert is_hit((5, 5), gt, tolerance=3.01)
    assert is_hit((6, 3), gt, tolerance=3.0)  # distance sqrt(8) < 3
    assert not is_hit((0, 0), torch.zeros(3, 3, dtype=torch.bool), tolerance=100.0)  # no ground truth: a miss


def test_boxes_union_and_masks():
    boxes = torch.tensor([[2.0, 0.0, 0.0, 2.0, 3.0], [2.0, 3.5, 1.0, 5.0, 2.0], [-1.0, -1.0, -1.0, -1.0, -1.0]])
    m = box_mask(boxes, 2, (4, 6))
    want = torch.zeros(4, 6, dtype=torch.bool)
    want[0:3, 0:2] = True  # box 1: x in [0, 2), y in [0, 3)
    want[1, 3:5] = True  # box 2: pixel centres 3.5 and 4.5 in [3.5, 5), 1.5 in [1, 2)
    assert torch.equal(m, want)
    assert not box_mask(boxes, 3, (4, 6)).any()
    ds = _scenes()
    assert torch.equal(ground_truth(ds, 0, 3, gt="mask"), ds.masks[0] == 4)
    assert ground_truth(ds, 0, 3, gt="box").sum() == 16
    with pytest.raises(ValueError, match="choose from"):
        ground_truth(ds, 0, 3, gt="polygon")


def _scenes():
    """Two 16x16 scenes: scene 0 holds class 3 (4x4 at top-left) and class 7 (a 9x9 square at bottom-right);
    scene 1 holds class 3 alone (at the centre)."""
    images = torch.zeros(2, 1, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[0, 1:5, 1:5] = 4
    masks[0, 7:16, 7:16] = 8
    masks[1, 6:10, 6:10] = 4
    images[:, 0][masks > 0] = 1.0
    boxes = torch.full((2, 2, 5), -1.0)
    boxes[0, 0] = torch.tensor([3.0, 1, 1, 5, 5])
    boxes[0, 1] = torch.tensor([7.0, 7, 7, 16, 16])
    boxes[1, 0] = torch.tensor([3.0, 6, 6, 10, 10])
    labels = torch.zeros(2, 10)
    labels[0, [3, 7]] = 1.0
    labels[1, 3] = 1.0
    return ImageSet(images=images, labels=labels, source_ids=torch.zeros(2, 2, dtype=torch.long), boxes=boxes,
                    masks=masks)


def test_difficult_means_several_classes_and_a_small_object():
    ds = _scenes()
    assert difficult_pairs(ds) == {(0, 3): True, (0, 7): False, (1, 3): False}  # 7 covers 81/256 > 1/4
    assert difficult_pairs(ds, small_fraction=0.5) == {(0, 3): True, (0, 7): True, (1, 3): False}


def test_accuracy_is_the_mean_of_class_accuracies():
    game = PointingGame(num_classes=4)
    for hit in (True, True, True, False):
        game.add(0, hit)
    game.add(2, False, difficult=True)
    assert game.class_accuracies() == [0.75, None, 0.0, None]
    assert game.accuracy() == pytest.approx(0.375)  # not the pooled 3/5
    assert game.accuracy(difficult=True) == 0.0 and game.pairs() == 5 and game.pairs(difficult=True) == 1
    assert torch.isnan(torch.tensor(PointingGame(2).accuracy()))


def test_evaluate_with_an_oracle_and_the_centre(monkeypatch):
    from feedback import readout

    ds = _scenes()

    def oracle(model, x, target, *, resize=False, **kw):  # points at the class's own mask
        out = []
        for img, t in zip(x, target):
            i = next(j for j in range(len(ds)) if torch.equal(ds.images[j], img))
            out.append((ds.masks[i] == int(t) + 1).float()[None])
        return torch.stack(out)

    monkeypatch.setitem(readout.METHODS, "oracle", oracle)
    model = torch.nn.Linear(1, 1)
    res = evaluate_pointing(model, ds, methods=["oracle", "centre"], num_classes=10)
    assert res["oracle"]["all"] == 1.0 and res["oracle"]["difficult"] == 1.0
    assert res["oracle"]["pairs"] == 3 and res["oracle"]["difficult_pairs"] == 1
    # the centre (7, 7) of a 16 px image: tolerance 15 * 16 / 224 = 1.07 px; it hits class 7's square (which
    # contains (7, 7)) and class 3 in scene 1, not class 3 in scene 0
    assert res["centre"]["class_acc"][3] == 0.5 and res["centre"]["class_acc"][7] == 1.0
    assert res["centre"]["all"] == 0.75 and res["centre"]["difficult"] == 0.0
    box = evaluate_pointing(model, ds, methods=["centre"], num_classes=10, gt="box")
    assert box["centre"]["all"] == 0.75
    with pytest.raises(ValueError, match="unknown readout method"):
        evaluate_pointing(model, ds, methods=["centr"])


def test_method_spec_and_summary_table():
    fn, kw = method_spec("wta@layer3")
    assert fn.__name__ == "selective_tuning" and kw == {"layer": "layer3"}
    assert method_spec("gradient@-1")[1] == {"layer": -1}
    reps = [{"backbone": "net", "results": {"eb": {"all": a, "difficult": d}}} for a, d in ((0.5, 0.4), (0.7, 0.6))]
    s = summarize_pointing(reps)
    assert s["net"]["eb"]["all"] == pytest.approx(0.6) and s["net"]["eb"]["all_std"] == pytest.approx(0.1414, 1e-3)
    table = format_pointing_table(s)
    assert "| eb | 60.0 ± 14.1 | 50.0 ± 14.1 |" in table


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-epoch LeNet-5 run on 64 cluttered scenes (seconds), trained by the public runner."""
    from experiments.config import load_experiment
    from experiments.train import train_run

    root = tmp_path_factory.mktemp("runs")
    cfg, _ = load_experiment("pointing_game", [
        f"runs_dir={root}", "model.backbone=lenet5_relu", "model.backbone_args={}", "train.epochs=1",
        "data.options.num_train=64", "data.options.num_test=8", "log.wandb=disabled", "log.progress=false"])
    run_dir = root / "pointing_game" / "lenet" / "seed0"
    train_run(cfg, run_dir, cell="lenet", variant={})
    return run_dir


def test_run_pointing_game_on_a_trained_run(tiny_run, tmp_path):
    rep = pointing.run_pointing_game(tiny_run, methods=["centre", "excitation", "contrastive@1"], out_dir=tmp_path)
    assert rep["backbone"] == "lenet5_relu" and rep["tolerance_px"] == pytest.approx(15 * 32 / 224)
    assert set(rep["results"]) == {"centre", "excitation", "contrastive@1"}
    for v in rep["results"].values():
        assert 0.0 <= v["all"] <= 1.0 and v["pairs"] >= 8
    assert json.loads((tmp_path / "pointing.json").read_text())["results"]["centre"]["pairs"] == rep["results"][
        "centre"]["pairs"]
    assert pointing.main([str(tiny_run.parent), "--methods", "centre", "--device", "cpu"]) == 0
    assert "| centre |" in (tiny_run.parent / "pointing.md").read_text()


@pytest.mark.parametrize("module", ["experiments.pointing", "experiments.attend"])
def test_docstring_examples_run(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_attend_writes_the_pictures(tiny_run, tmp_path):
    from experiments.attend import run_attend
    from experiments.config import ConfigError

    paths = run_attend(tiny_run, "contrastive", 3, tmp_path / "fig", extras=True)
    assert set(paths) == {"attend", "activations", "weights", "top_units", "tsne", "occlusion"}
    for p in paths.values():
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert run_attend(tiny_run, "wta@1", 2, tmp_path / "fig")["attend"].name == "attend_wta_at_1.png"
    with pytest.raises(ConfigError, match="unknown readout method"):
        run_attend(tiny_run, "excitaton", 2, tmp_path)
    with pytest.raises(ConfigError, match="no config.yaml"):
        run_attend(tmp_path, "excitation", 2, tmp_path)
