"""Detection: the ``detect`` task (mAP, recall), the cluttered_detect data, YOLO v1, R-CNN, Fast and Faster R-CNN."""

from __future__ import annotations

import pytest
import torch

import baselines
from baselines._detection import classwise_nms, decode_boxes, encode_boxes, targets_to_list, window_proposals
from baselines.yolo import yolo_decode, yolo_loss
from experiments.tasks_detect import DetectTask

PAD = [-1.0] * 5


def _target() -> torch.Tensor:
    return torch.tensor([[[3.0, 10.0, 10.0, 30.0, 30.0], [7.0, 36.0, 34.0, 54.0, 52.0]],
                         [[1.0, 5.0, 40.0, 21.0, 58.0], PAD]])


def _perfect(target: torch.Tensor) -> torch.Tensor:
    out = torch.full((target.shape[0], 4, 6), -1.0)
    for i, t in enumerate(target):
        for j, row in enumerate(t[t[:, 0] >= 0]):
            out[i, j] = torch.cat([row[1:], torch.tensor([0.9 - 0.1 * j]), row[:1]])
    return out


# ---------------------------------------------------------------------------------------------- parameter counts
def test_yolo_v1_paper_parameter_count() -> None:
    assert baselines.model_info("yolo_v1")["num_params"] == 271_703_550  # 20 classes, S=7, B=2, 448 px


def test_faster_rcnn_vgg16_parameter_count() -> None:
    with torch.device("meta"):
        net = baselines.create_model("faster_rcnn_vgg16", num_classes=20, in_chans=3)
    assert sum(p.numel() for p in net.parameters()) == 137_073_622
    assert sum(p.numel() for p in net.detector.rpn.parameters()) == 2_382_893


# ---------------------------------------------------------------------------------------------- YOLO loss
def _yolo_case(good: int, bad_conf: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """S=2, B=2, K=3 on 64 px; one object of class 1, box (8, 8, 24, 24): centre (16, 16) in cell (0, 0), offsets
    (0.5, 0.5), sqrt size 0.5. Predictor ``good`` is exact, the other is off with confidence ``bad_conf``."""
    grid = torch.zeros(1, 2, 2, 2 * 5 + 3)
    grid[0, 0, 0, 5 * good : 5 * good + 5] = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0])
    other = 1 - good
    grid[0, 0, 0, 5 * other : 5 * other + 5] = torch.tensor([0.1, 0.9, 0.2, 0.2, bad_conf])
    grid[0, 0, 0, 10 + 1] = 1.0
    return grid, torch.tensor([[[1.0, 8.0, 8.0, 24.0, 24.0]]])


@pytest.mark.parametrize("good", [0, 1])
def test_yolo_loss_perfect_prediction_is_zero(good: int) -> None:
    grid, target = _yolo_case(good)
    losses = yolo_loss(grid, target, image_size=(64, 64), boxes_per_cell=2)
    for name, v in losses.items():
        assert v.item() == pytest.approx(0.0, abs=1e-6), name


def test_yolo_loss_responsible_predictor_by_iou() -> None:
    # the better box is responsible, so the other one's confidence is penalised as no-object (x lambda_noobj)
    grid, target = _yolo_case(good=1, bad_conf=0.4)
    losses = yolo_loss(grid, target, image_size=(64, 64), boxes_per_cell=2)
    assert losses["coord"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["conf_noobj"].item() == pytest.approx(0.5 * 0.4**2)
    # shift the good box: coordinate loss lambda_coord * dx^2, confidence target drops to the IoU
    grid[0, 0, 0, 5] = 0.75
    losses = yolo_loss(grid, target, image_size=(64, 64), boxes_per_cell=2)
    assert losses["coord"].item() == pytest.approx(5.0 * 0.25**2)
    iou = (8 * 16) / (2 * 256 - 8 * 16)  # the 16 px box moved 8 px (0.25 of a 32 px cell): overlap 8 x 16 / union
    assert losses["conf_obj"].item() == pytest.approx((1 - iou) ** 2, rel=1e-4)


def test_yolo_decode_and_nms() -> None:
    grid, _ = _yolo_case(good=0)
    grid[0, 0, 0, 5:10] = torch.tensor([0.55, 0.5, 0.5, 0.5, 0.8])  # a near-duplicate of the same class
    dets = yolo_decode(grid, image_size=(64, 64), boxes_per_cell=2, max_detections=5)
    assert dets.shape == (1, 5, 6)
    assert (dets[0, :, 5] >= 0).sum() == 1  # the duplicate was suppressed
    assert torch.allclose(dets[0, 0], torch.tensor([8.0, 8.0, 24.0, 24.0, 1.0, 1.0]))
    grid[0, 0, 0, 10:] = torch.tensor([0.0, 1.0, 1.0])  # now both boxes also score for class 2: class-wise NMS
    dets = yolo_decode(grid, image_size=(64, 64), boxes_per_cell=2, max_detections=5)
    assert sorted(dets[0, dets[0, :, 5] >= 0, 5].tolist()) == [1.0, 2.0]


def test_classwise_nms() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    out = classwise_nms(boxes, scores, torch.tensor([0, 0, 1, 0]), iou=0.5, max_detections=10)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out["labels"].tolist() == [0, 1, 0]
    assert len(classwise_nms(boxes, scores, torch.zeros(4, dtype=torch.long), iou=0.5, max_detections=1)["boxes"]) == 1


# ---------------------------------------------------------------------------------------------- box coding, proposals
def test_box_encode_decode_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.rand(50, 2, generator=g) * 40
    p = torch.cat([p, p + 4 + torch.rand(50, 2, generator=g) * 20], 1)
    gt = torch.rand(50, 2, generator=g) * 40
    gt = torch.cat([gt, gt + 4 + torch.rand(50, 2, generator=g) * 20], 1)
    assert torch.allclose(decode_boxes(encode_boxes(gt, p), p), gt, atol=1e-4)
    assert torch.allclose(encode_boxes(p, p), torch.zeros(50, 4), atol=1e-6)


def test_window_proposals_find_a_blob() -> None:
    img = torch.zeros(1, 1, 64, 64)
    img[0, 0, 20:36, 30:46] = 1.0
    props = window_proposals(img, sizes=(12, 16, 20), stride=2, k=8)
    assert props.shape == (1, 8, 4)
    assert props[0, 0].tolist() == [30.0, 20.0, 46.0, 36.0]


def _blob() -> torch.Tensor:
    img = torch.zeros(1, 1, 64, 64)
    img[0, 0, 20:36, 30:46] = 1.0
    return img


@pytest.mark.parametrize("kw", [{}, {"k": 200}, {"sizes": (8, 16), "k": 5}, {"k": 300, "nms_iou": 0.3},
                                {"sizes": tuple(range(12, 25)), "stride": 1, "k": 4}])
def test_window_proposals_equal_nms_over_every_window(kw) -> None:
    # window_proposals NMSes only a best-scored prefix of the windows (16 k of them, grown when it keeps fewer than
    # k): the result must be NMS over all windows, as before the speed-up. Covered: tied scores (blank image), fewer
    # than k survivors (k = 300: repeated), and a prefix that must grow (the blob at 13 sizes and stride 1: its best
    # 64 windows all overlap, NMS keeps 1 of them)
    from torchvision.ops import nms

    from baselines._detection import window_scores
    from experiments.data import create_dataset

    scenes = create_dataset("cluttered_detect", num_train=0, num_test=24, max_digits=3).test.inputs
    noise = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    k, iou = kw.get("k", 32), kw.get("nms_iou", 0.5)
    for images in (scenes, torch.zeros(2, 1, 64, 64), noise, _blob()):
        boxes, scores = window_scores(images, **{a: b for a, b in kw.items() if a in ("sizes", "stride")})
        expected = []
        for s in scores:
            keep = nms(boxes, s, iou)[:k]
            expected.append(boxes[keep.repeat((k + keep.numel() - 1) // keep.numel())[:k]])
        assert torch.equal(window_proposals(images, **kw), torch.stack(expected))


# ---------------------------------------------------------------------------------------------- the task
def test_map_perfect_is_one_and_shifted_is_zero() -> None:
    task, target = DetectTask(), _target()
    state = task.init_state()
    task.update(state, _perfect(target), target)
    m = task.compute(state)
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
    shifted = _perfect(target)
    valid = shifted[..., 5] >= 0
    shifted[..., 0][valid] += 12.0  # 20 px boxes moved 12 px: IoU 8/32 < 0.5
    shifted[..., 2][valid] += 12.0
    state = task.init_state()
    task.update(state, shifted, target)
    assert task.compute(state)["map50"] == pytest.approx(0.0)
    assert task.correct(shifted, target)["recall50"].tolist() == [0.0, 0.0]


def test_recall_and_merge() -> None:
    task, target = DetectTask(), _target()
    dets = _perfect(target)
    dets[0, 1, 5] = 2.0  # right place, wrong class
    m = task.correct(dets, target)
    assert m["recall50"].tolist() == [0.5, 1.0] and m["loc50"].tolist() == [1.0, 1.0]
    assert task.loss(dets, target).item() == pytest.approx(0.25)
    a, b = task.init_state(), task.init_state()
    task.update(a, dets[:1], target[:1])
    task.update(b, dets[1:], target[1:])
    merged = task.merge([a, b])
    assert len(merged["preds"]) == 2
    with pytest.raises(ValueError, match="detections"):
        task.correct(torch.zeros(2, 10), target)


def test_cluttered_detect_data() -> None:
    from experiments.data import create_dataset

    d = create_dataset("cluttered_detect", num_train=6, num_test=4, max_digits=3)
    assert d.task == "detect" and d.num_classes == 10
    assert d.train.inputs.shape == (6, 1, 64, 64) and d.train.targets.shape == (6, 3, 5)
    t = d.train.targets
    valid = t[..., 0] >= 0
    assert valid.any(-1).all() and (t[valid][:, 3] > t[valid][:, 1]).all()
    assert targets_to_list(t)[0]["labels"].min() >= 1  # torchvision's labels: class + 1
    s = create_dataset("shapes_detect", num_train=4, num_test=2, image_size=32)
    assert s.task == "detect" and s.train.inputs.shape == (4, 3, 32, 32) and s.train.targets.shape == (4, 3, 5)
    assert torch.equal(s.train.targets, create_dataset("shapes", num_train=4, num_test=2, image_size=32).train.boxes)


# ---------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", ["yolo_v1_small", "rcnn", "fast_rcnn", "faster_rcnn_small"])
def test_train_step_and_detect(name: str) -> None:
    from feedback import PlainNet

    torch.manual_seed(0)
    model = baselines.create_model(name, num_classes=10, in_chans=1)
    net = PlainNet(model)
    assert net.takes_target and hasattr(model, "staged") and hasattr(model.staged, "stages")
    x = torch.rand(2, 1, 64, 64)
    target = _target()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    out = net(x, target=target)
    assert out.per_step == [] and out.aux_losses
    loss = sum(out.aux_losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.staged.parameters())
    opt.step()
    net.eval()
    with torch.no_grad():
        dets = net(x).logits
    assert dets.shape == (2, 20, 6)
    valid = dets[..., 5] >= 0
    assert ((dets[..., 5][valid] >= 0) & (dets[..., 5][valid] < 10)).all()
    assert (dets[..., :4][~valid] == -1).all()


def test_runner_evaluate_with_detect_task() -> None:
    from experiments.data import SampleSet
    from experiments.evaluate import evaluate
    from feedback import PlainNet

    torch.manual_seed(0)
    net = PlainNet(baselines.create_model("yolo_v1_small", num_classes=10, in_chans=1))
    ds = SampleSet(inputs=torch.rand(4, 1, 64, 64), targets=torch.cat([_target(), _target()]))
    m = evaluate(net, DetectTask(), ds, batch_size=3)
    assert {"loss", "recall50", "loc50", "recall50_step1", "map", "map50", "map75"} <= set(m)
    assert 0.0 <= m["map50"] <= 1.0


# ---------------------------------------------------------------------------------------------- YOLO learns (issue 9)
def test_yolo_output_depends_on_the_input() -> None:
    # issue 9: with PyTorch's default init the signal shrinks ~2.5x per unnormalised layer, the grid was the same for
    # every image (per-image std 1e-5) and training only learned the mean box; He init keeps it input-dependent
    torch.manual_seed(0)
    net = baselines.create_model("yolo_v1_small", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        grid = net.staged(torch.rand(8, 1, 64, 64))
    assert grid.std(0).mean() > 1e-3


def test_yolo_small_overfits_a_few_scenes() -> None:
    # the check that would have caught issue 9 (mAP@0.5 0.001 after 6 epochs): 4 scenes, 50 Adam steps (the old
    # default init and FC head was at recall 0.125 after 50 steps, 1.0 only after about 150)
    from experiments.data import create_dataset

    d = create_dataset("cluttered_detect", num_train=4, num_test=1, max_digits=2)
    x, target = d.train.inputs, d.train.targets
    torch.manual_seed(0)
    net = baselines.create_model("yolo_v1_small", num_classes=10, in_chans=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(50):
        loss = sum(net(x, target=target)["losses"].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        dets = net.eval()(x)
    assert DetectTask().correct(dets, target)["recall50"].mean() >= 0.75
