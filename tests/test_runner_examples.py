"""Predicted examples (experiments/examples.py, docs/tasks.md section 8): the segment, detect and caption tasks'
``examples`` hooks, the files a run writes under ``<run>/examples/``, their wandb mirror, and ``log.examples``."""

import json

import pytest
import torch
import torch.nn as nn
from torchvision.io import read_image

from experiments.cli import main
from experiments.config import ConfigError, ExperimentConfig, apply_overrides
from experiments.examples import colour_mask, draw_boxes, hstack, to_rgb, upscale, write_examples
from experiments.tasks import create_task
from experiments.tracking import NullLogger
from feedback import PlainNet

FAST = ["train.epochs=1", "log.progress=false", "log.wandb=disabled"]


def _run_dir(root, experiment):
    dirs = sorted(root.glob(f"{experiment}/*/seed0"))
    assert len(dirs) == 1 and (dirs[0] / "DONE").exists()
    return dirs[0]


def _rows(run):
    return [json.loads(ln) for ln in (run / "examples" / "examples.jsonl").read_text().splitlines()]


def _metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _check_pngs(run, rows, height, width):
    for r in rows:
        img = read_image(str(run / r["image"]))
        assert img.dtype == torch.uint8 and tuple(img.shape) == (3, height, width), r["image"]


# ------------------------------------------------------------------------------------------- runs, one per task


def test_segment_run_writes_panels_every_epoch(tmp_path):
    argv = ["run", "segment_shapes", "model.backbone=unet_bn", "data.options.num_train=32",
            "data.options.num_test=8", "data.batch_size=16", "train.epochs=2", "log.examples_every=1",
            "log.examples=3", "log.progress=false", "log.wandb=disabled", f"runs_dir={tmp_path}"]
    assert main(argv) == 0
    run = _run_dir(tmp_path, "segment_shapes")
    rows = _rows(run)
    assert [(r["epoch"], r["index"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert sorted(p.name for p in (run / "examples").iterdir()) == ["epoch_000", "epoch_001", "examples.jsonl"]
    steps = {m["epoch"]: m["step"] for m in _metrics(run) if "test/miou" in m and "epoch" in m}
    assert {r["epoch"]: r["step"] for r in rows} == steps  # the step of the matching test/* row in metrics.jsonl
    _check_pngs(run, rows, 128, 3 * 128 + 2 * 2)  # 32 px scaled by 4: input | ground truth | prediction
    for r in rows:
        assert set(r) == {"epoch", "step", "index", "image", "title", "pixel_acc", "true_classes",
                          "predicted_classes"}
        assert 0.0 <= r["pixel_acc"] <= 1.0 and "background" in r["true_classes"]
    # the middle third is the colour-coded ground truth of test sample 0
    from experiments.data import create_dataset

    mask = create_dataset("shapes_segment", seed=0, num_train=32, num_test=8).test.targets[0]
    panel = read_image(str(run / rows[0]["image"]))
    assert torch.equal(panel[:, :, 130:258], upscale(colour_mask(mask), 4))


def test_detect_run_draws_boxes_with_labels(tmp_path):
    argv = ["run", "detect_digits", "model.backbone=yolo_v1_small", "data.options.num_train=32",
            "data.options.num_test=4", *FAST, f"runs_dir={tmp_path}"]
    assert main(argv) == 0
    run = _run_dir(tmp_path, "detect_digits")
    rows = _rows(run)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and {r["epoch"] for r in rows} == {0}  # default log.examples
    _check_pngs(run, rows, 128, 2 * 128 + 2)  # 64 px scaled by 2: ground truth | prediction
    assert any({"test/map50", "test/recall50"} <= set(m) for m in _metrics(run))
    for r in rows:
        assert {"recall50", "ground_truth", "predictions", "title"} <= set(r)
        assert r["ground_truth"] and all(set(g) == {"class", "box"} and len(g["box"]) == 4 for g in r["ground_truth"])
        assert all(set(p) == {"class", "score", "box"} for p in r["predictions"])
        scores = [p["score"] for p in r["predictions"]]
        assert len(scores) <= 10 and scores == sorted(scores, reverse=True)


def test_caption_run_writes_a_table_and_mirrors_it_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # wandb stages table media here
    argv = ["run", "caption_shapes", "data.options.num_train=64", "data.options.num_test=4", "train.epochs=1",
            "log.progress=false", "log.wandb=offline", "log.examples=2", f"runs_dir={tmp_path / 'runs'}"]
    assert main(argv) == 0
    run = _run_dir(tmp_path / "runs", "caption_shapes")
    rows = _rows(run)
    assert len(rows) == 2
    _check_pngs(run, rows, 128, 128)
    assert any({"test/bleu4", "test/acc"} <= set(m) for m in _metrics(run))
    for r in rows:
        assert set(r) == {"epoch", "step", "index", "image", "title", "references", "prediction", "correct"}
        assert len(r["references"]) == 1 and r["references"][0].startswith("a ")  # "a red circle ..."
        assert isinstance(r["prediction"], str) and r["correct"] == (r["prediction"] in r["references"])
    tables = list(run.glob("wandb/offline-run-*/files/media/table/examples/caption_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert {"image", "file", "references", "prediction"} <= set(table["columns"]) and len(table["data"]) == 2
    col = table["columns"].index("file")
    assert [row[col] for row in table["data"]] == [r["image"] for r in rows]
    assert len(list(run.glob("wandb/offline-run-*/files/media/images/examples/caption/*.png"))) == 2


def test_classification_runs_have_no_examples(tmp_path):
    from experiments.train import train_run

    cfg = apply_overrides(ExperimentConfig(), {
        "name": "c", "runs_dir": str(tmp_path), "model.backbone": "lenet5_relu", "data.name": "digits",
        "data.options": {"image_size": 32, "per_class": 10}, "train.epochs": 1, "log.wandb": "disabled", "log.progress": False,
        "eval.samples": 0, "log.examples": 4, "log.examples_every": 1})
    train_run(cfg, tmp_path / "run", cell="c", variant={})
    assert not (tmp_path / "run" / "examples").exists()


def test_a_failing_hook_warns_and_the_run_finishes(tmp_path, monkeypatch, capsys):
    from experiments.tasks_segment import SegmentTask
    from experiments.train import train_run

    def broken(self, *a, **k):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(SegmentTask, "examples", broken)
    cfg = apply_overrides(ExperimentConfig(), {
        "name": "s", "runs_dir": str(tmp_path), "model.backbone": "unet_bn", "model.preset": "small",
        "data.name": "shapes_segment", "data.options": {"num_train": 16, "num_test": 4}, "data.batch_size": 16,
        "train.epochs": 1, "log.wandb": "disabled", "log.progress": False, "eval.samples": 0})
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    assert "miou" in r["metrics"] and (tmp_path / "run" / "result.json").exists()
    assert "drawing examples failed (RuntimeError: cannot draw); set log.examples=0" in capsys.readouterr().err
    assert not (tmp_path / "run" / "examples").exists()


@pytest.mark.parametrize("key", ["log.examples", "log.examples_every"])
def test_negative_example_counts_are_config_errors(key):
    with pytest.raises(ConfigError, match=r"log.examples and log.examples_every must be >= 0"):
        apply_overrides(ExperimentConfig(), {key: -1})


# ------------------------------------------------------------------------------------------------ drawing units


def _outline(h, w, boxes):
    """The one-pixel outlines of integer boxes (x0, y0, x1, y1), corners inclusive (PIL's rectangle)."""
    m = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        m[y0, x0 : x1 + 1] = m[y1, x0 : x1 + 1] = True
        m[y0 : y1 + 1, x0] = m[y0 : y1 + 1, x1] = True
    return m


def _inside(h, w, boxes):
    m = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def test_draw_boxes_changes_exactly_the_outline():
    image = to_rgb(torch.full((1, 40, 50), 0.5))
    boxes = [(3, 4, 20, 30), (25, 2, 45, 12)]
    drawn = draw_boxes(image, torch.tensor(boxes, dtype=torch.float32), colour=(255, 0, 0))
    assert torch.equal((drawn != image).any(0), _outline(40, 50, boxes))
    assert drawn[:, 4, 3].tolist() == [255, 0, 0]
    # reversed and out-of-image corners are ordered and clipped, not an error; no boxes: unchanged
    flipped = draw_boxes(image, torch.tensor([[20.0, 30.0, 3.0, 4.0], [25.0, -5.0, 80.0, 12.0]]), colour=(255, 0, 0))
    assert torch.equal((flipped != image).any(0), _outline(40, 50, [(3, 4, 20, 30), (25, 0, 49, 12)]))
    assert torch.equal(draw_boxes(image, torch.zeros(0, 4), colour=(255, 0, 0)), image)


def test_detect_panel_differs_from_the_image_only_where_boxes_are():
    task = create_task("detect")
    image = torch.full((1, 1, 32, 32), 0.5)
    target = torch.tensor([[[3.0, 2.0, 3.0, 20.0, 21.0], [7.0, 12.0, 22.0, 30.0, 31.0]]])
    output = torch.tensor([[[2.0, 3.0, 21.0, 20.0, 0.9, 3.0], [12.0, 22.0, 29.0, 31.0, 0.2, 1.0],
                            [0.0, 0.0, 5.0, 5.0, 0.1, 4.0], [-1.0] * 6]])
    (rec,) = task.examples(output, image, target, class_names=[str(k) for k in range(10)])
    panel = rec["image"]
    assert tuple(panel.shape) == (3, 128, 258)  # scale 4, two panes and a 2-pixel gap
    base = upscale(to_rgb(image[0]), 4)
    gt = [(8, 12, 80, 84), (48, 88, 120, 124)]  # the target boxes times 4
    shown = [(8, 12, 84, 80), (48, 88, 116, 124)]  # the two best detections (two objects, none below 0.5 extra)
    for pane, boxes, colour in ((panel[:, :, :128], gt, [0, 255, 0]), (panel[:, :, 130:], shown, [255, 0, 0])):
        diff = (pane != base).any(0)
        assert not (diff & ~_inside(128, 128, boxes)).any()  # nothing changes outside the boxes
        assert (diff & _outline(128, 128, boxes)).sum() == _outline(128, 128, boxes).sum()  # every outline pixel
        assert (diff & ~_outline(128, 128, boxes)).any()  # the class labels, inside the boxes
        assert pane[:, boxes[0][1], boxes[0][0]].tolist() == colour
    assert (panel[:, :, 128:130] == 255).all()
    assert rec["recall50"] == 0.5  # the class-3 box is found, the class-7 object is not (class 1 predicted)
    assert [p["class"] for p in rec["predictions"]] == ["3", "1"] and rec["predictions"][0]["score"] == 0.9
    assert [g["class"] for g in rec["ground_truth"]] == ["3", "7"]


def test_segment_and_caption_records():
    seg = create_task("segment")
    logits = torch.zeros(2, 3, 8, 8)
    logits[:, 1] = 1.0  # class 1 everywhere
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :4] = 1
    target[1, 0, 0] = 255
    recs = seg.examples(logits, torch.rand(2, 3, 8, 8), target, class_names=["bg", "a", "b"])
    assert [r["pixel_acc"] for r in recs] == [0.5, 0.0]
    assert recs[0]["true_classes"] == ["bg", "a"] and recs[1]["true_classes"] == ["bg"]
    assert recs[0]["predicted_classes"] == ["a"]
    assert tuple(recs[0]["image"].shape) == (3, 128, 3 * 128 + 4)  # 8 px scaled by 16
    assert recs[1]["image"][:, 0, 128 + 2].tolist() == [255, 255, 255]  # an unscored pixel is white
    bigger = seg.examples(logits, torch.rand(2, 3, 16, 16), target, class_names=["bg", "a", "b"])
    assert tuple(bigger[0]["image"].shape) == (3, 128, 3 * 128 + 4)  # inputs drawn at the masks' resolution

    cap = create_task("caption")
    words = ["<pad>", "<bos>", "<eos>", "a", "red", "circle"]
    hyp = torch.nn.functional.one_hot(torch.tensor([[3, 4, 5, 2], [3, 5, 2, 0]]), 6).float()
    target = torch.tensor([[3, 4, 5, 2], [3, 4, 5, 2]])
    recs = cap.examples(hyp, {"images": torch.rand(2, 3, 32, 32), "tokens_in": target}, target, class_names=words)
    assert [(r["prediction"], r["references"], r["correct"]) for r in recs] == [
        ("a red circle", ["a red circle"], True), ("a circle", ["a red circle"], False)]
    with pytest.raises(ValueError, match="dict inputs with an 'images' entry"):
        cap.examples(hyp, torch.rand(2, 3, 32, 32), target, class_names=words)


def test_write_examples_replaces_an_epoch_written_again(tmp_path):
    """A resumed run that draws an epoch again replaces that epoch's rows; a task without the hook draws nothing."""
    from experiments.data import SampleSet

    class Logger(NullLogger):
        def __init__(self):
            self.calls = []

        def log_examples(self, key, rows, step):
            self.calls.append((key, rows, step))

    net = PlainNet(nn.Conv2d(3, 2, 1))
    ds = SampleSet(inputs=torch.rand(5, 3, 8, 8), targets=torch.zeros(5, 8, 8, dtype=torch.long))
    kw = dict(n=2, run_dir=tmp_path, task_name="segment", class_names=[], device=torch.device("cpu"))
    seg, log = create_task("segment"), Logger()
    for epoch, step in ((0, 3), (1, 6), (1, 6)):
        write_examples(seg, net, ds, epoch=epoch, step=step, logger=log, **kw)
    rows = _rows(tmp_path)
    assert [(r["epoch"], r["index"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert rows[0]["true_classes"] == ["0"]  # no class names: the ids
    key, logged, step = log.calls[-1]
    assert key == "examples/segment" and step == 6 and logged[0]["file"] == "examples/epoch_001/000.png"
    assert logged[0]["image"] == str(tmp_path / "examples/epoch_001/000.png")
    assert net.training  # the model's mode is restored
    assert write_examples(create_task("classify"), net, ds, epoch=0, step=0, logger=log, **kw) == []
    assert write_examples(seg, net, ds, epoch=2, step=0, logger=log, **kw | {"n": 0}) == []
    assert len(log.calls) == 3 and not (tmp_path / "examples" / "epoch_002").exists()


def test_hstack_needs_equal_heights():
    with pytest.raises(ValueError, match="same height"):
        hstack([torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(3, 5, 4, dtype=torch.uint8)])


def test_docstring_examples():
    import doctest

    import experiments.examples

    result = doctest.testmod(experiments.examples)
    assert result.attempted > 0 and result.failed == 0
