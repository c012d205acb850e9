"""The segment task (experiments/tasks_segment.py) and the segmentation / decoder baselines: SegNet, U-Net,
PixelNet, DCGAN's generator (parameter counts, shapes, max-unpooling indices, sparse pixel sampling, Staged
encoder views, one CPU training step each, and a run through the runner)."""

import doctest
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import baselines
import experiments.tasks as tasks
from experiments.data import create_dataset
from experiments.tasks_segment import SegmentTask, confusion_matrix

# ----------------------------------------------------------------------------------------------- the task


def _hand_miou(pred, target, k):
    ious = []
    for c in range(k):
        p, t = pred == c, target == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))


def test_miou_matches_a_hand_computation_over_batches_and_ranks():
    g = torch.Generator().manual_seed(0)
    task, k = SegmentTask(), 4
    logits = torch.randn(6, k, 5, 7, generator=g)
    target = torch.randint(0, k, (6, 5, 7), generator=g)
    target[0, 0, :3] = 255
    target[1, 2, 2] = -100
    states = [task.init_state(), task.init_state()]
    task.update(states[0], logits[:2], target[:2])
    task.update(states[0], logits[2:4], target[2:4])
    task.update(states[1], logits[4:], target[4:])
    m = task.compute(task.merge(states))
    pred, t = logits.argmax(1).numpy(), target.numpy()
    ok = (t != 255) & (t != -100)
    assert m["miou"] == pytest.approx(_hand_miou(pred[ok], t[ok], k))
    assert m["pixel_acc_all"] == pytest.approx(float((pred[ok] == t[ok]).mean()))
    per = task.correct(logits, target)["pixel_acc"]
    assert per[0] == pytest.approx(float((pred[0] == t[0])[ok[0]].mean()))
    # a class absent from target and prediction is left out of the mean
    conf = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 5)
    assert task.compute({"conf": conf})["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_loss_ignores_void_pixels_and_checks_shapes():
    task = SegmentTask()
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    void = target.clone()
    void[:, 0] = 255
    expected = F.cross_entropy(logits[:, :, 1:], target[:, 1:])
    assert task.loss(logits, void) == pytest.approx(float(expected), rel=1e-5)
    assert task.primary == "miou" and task.step_metric == "pixel_acc"
    assert float(task.loss(logits, torch.full_like(target, -100))) == 0.0
    with pytest.raises(ValueError, match="segment task"):
        task.loss(logits, target[:, :2])
    with pytest.raises(ValueError, match="target classes"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.tensor([0, 7, 1]), 3)


# --------------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name, count", [("segnet", 29_486_988), ("unet", 31_030_658), ("unet_bn", 31_043_586),
                                         ("pixelnet", 173_938_517), ("dcgan_generator", 3_576_704)])
def test_parameter_counts(name, count):
    assert baselines.model_info(name)["num_params"] == count


def test_more_counts_and_the_paper_unet_shape():
    with torch.device("meta"):
        assert sum(p.numel() for p in baselines.create_model("segnet", num_classes=21).parameters()) == 29_492_181
        net = baselines.create_model("pixelnet", num_classes=21, fc_taps=False)
        assert sum(p.numel() for p in net.parameters()) == 37_615_445
        unet = baselines.create_model("unet", num_classes=2, in_chans=1)
        assert unet(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    from baselines.unet import unet_output_size

    assert unet_output_size(572) == 388 and unet_output_size(188) == 4


# ------------------------------------------------------------------------------------------------- models


def _small(name, **kw):
    torch.manual_seed(0)
    return baselines.create_model(name, num_classes=5, in_chans=3, **(baselines.model_info(name)["small"] | kw))


def test_segnet_unpools_with_the_encoders_indices():
    net = _small("segnet").eval()
    x = torch.rand(2, 3, 32, 32)
    h, indices, sizes = net.encode(x)
    pre = net.encoder.stages[0][:-1](net.encoder.stem(x))
    pooled, idx = F.max_pool2d(pre, 2, 2, return_indices=True)
    assert torch.equal(indices[0], idx) and sizes[0] == (32, 32)
    up = F.max_unpool2d(pooled, indices[0], 2, 2, output_size=sizes[0])
    kept = up != 0
    assert torch.equal(up[kept], pre[kept])  # each value returns to where its max came from
    assert kept.reshape(2, -1, 16, 2, 16, 2).sum((3, 5)).le(1).all()  # at most one per 2x2 window
    # the Staged encoder is exactly the SegNet encoder
    s = net.encoder.stem(x)
    for stage in net.encoder.stages:
        s = stage(s)
    assert torch.equal(s, h) and net.encoder(x).shape == (2, net.encoder.channels[-1])
    assert net(torch.rand(1, 3, 40, 56)).shape == (1, 5, 40, 56)  # odd pooled sizes un-pool back


def test_segnet_levels_keep_the_first_vgg_blocks():
    # the small preset's levels=3 (a 4x4 bottleneck at 32 px instead of the paper's five pools to 1x1): the first
    # three encoder blocks of the full network and their mirrored decoder blocks, nothing else
    from baselines.segnet import segnet

    assert baselines.model_info("segnet")["small"] == {"width": 0.25, "img_size": 32, "levels": 3}
    full, net = segnet(num_classes=7, width=0.25), segnet(num_classes=7, width=0.25, levels=3)
    assert net.encoder.channels == [16, 32, 64] and net.encoder.strides == [2, 4, 8] and len(net.decoder) == 3
    shapes = [p.shape for p in net.encoder.parameters()]
    assert shapes == [p.shape for p in full.encoder.parameters()][:len(shapes)]
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in s) for s in net.encoder.stages] == [2, 2, 3]
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in b) for b in net.decoder] == [3, 2, 2]
    assert net.decoder[-1][-3].out_channels == 16 and net.classifier.in_channels == 16
    assert sum(p.numel() for p in net.parameters()) == 221_911
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7, 32, 32)
    assert net(torch.rand(1, 3, 20, 28)).shape == (1, 7, 20, 28)  # 20 -> 10 -> 5 -> 2: un-pooled back to 5
    with pytest.raises(ValueError, match="levels"):
        segnet(levels=6)
    with pytest.raises(ValueError, match="img_size"):
        segnet(levels=5, img_size=16)
    assert segnet(levels=2, img_size=16)(torch.rand(1, 3, 16, 16)).shape == (1, 12, 16, 16)


def test_pixelnet_sampled_logits_equal_the_dense_ones():
    net = _small("pixelnet", fc_taps=True, num_samples=64).eval()
    x, y = torch.rand(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    dense = net(x)
    logits, picked, pos = net.sample_logits(x, y, 64)
    b = torch.arange(2)[:, None]
    assert torch.allclose(logits, dense[b, :, pos[..., 1], pos[..., 0]].permute(0, 2, 1), atol=1e-5)
    assert torch.equal(picked, y[b, pos[..., 1], pos[..., 0]])
    net.train()
    out = net(x, target=y)
    assert out["out"] is None and out["losses"]["ce"].item() > 0
    out["losses"]["ce"].backward()
    assert net.mlp[-1].weight.grad.abs().sum() > 0
    y[:] = 255  # nothing scored: a zero loss, not NaN
    assert net(x, target=y)["losses"]["ce"].item() == 0.0


@pytest.mark.parametrize("name", ["segnet", "unet_bn", "pixelnet", "unet"])
def test_one_cpu_training_step(name):
    size = 188 if name == "unet" else 32
    net = _small(name).train()
    x = torch.rand(4, 3, size, size)
    out_size = 4 if name == "unet" else size
    y = torch.randint(0, 5, (4, out_size, out_size))
    task = SegmentTask()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    before = [p.detach().clone() for p in net.parameters()]
    out = net(x, target=y) if name == "pixelnet" else net(x)
    loss = out["losses"]["ce"] if name == "pixelnet" else task.loss(out, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (4, 5, out_size, out_size)
    # the encoder is a Staged view with one entry per stage
    enc = net.encoder
    assert len(enc.stages) == len(enc.channels) == len(enc.strides) and enc.input_size[0] == 3


def test_dcgan_generator_and_decoder_block_train():
    from baselines.dcgan import TransposedConvDecoder

    torch.manual_seed(0)
    g = baselines.create_model("dcgan_generator", num_classes=3, in_chans=16, ngf=8)
    z = torch.randn(4, 16)
    img = g(z)
    assert img.shape == (4, 3, 64, 64) and img.abs().max() <= 1.0
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    target = torch.rand(4, 3, 64, 64) * 2 - 1
    losses = []
    for _ in range(3):
        loss = F.mse_loss(g(z), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    dec = TransposedConvDecoder(8, 2, widths=(4,))
    assert dec(torch.zeros(1, 8, 3, 5)).shape == (1, 2, 12, 20)


# ------------------------------------------------------------------------------------------------- runner


def test_segment_run_through_the_runner(tmp_path, monkeypatch):
    from experiments.config import ExperimentConfig, apply_overrides
    from experiments.train import train_run

    monkeypatch.setitem(tasks.TASKS, "segment", SegmentTask)
    cfg = apply_overrides(ExperimentConfig(), {
        "name": "seg", "runs_dir": str(tmp_path), "train.epochs": 1, "train.lr": 0.003, "train.warmup_steps": 0,
        "train.log_every": 4, "data.batch_size": 16, "log.wandb": "disabled", "log.progress": False,
        "eval.samples": 0, "model.backbone": "pixelnet", "model.preset": "small", "model.backbone_args": {
            "num_samples": 64}, "data.name": "shapes_segment", "data.options": {"num_train": 48, "num_test": 16}})
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    m = r["metrics"]
    assert r["task"] == "segment" and r["primary"] == "miou"
    assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["pixel_acc"] <= 1.0 and "pixel_acc_all" in m


def test_chance_level_of_the_shapes_segmentation():
    """Predicting background everywhere: pixel accuracy = background share, mIoU = that share / 7 (documented in
    experiments/configs/segment_shapes.yaml)."""
    d = create_dataset("shapes_segment", seed=0, num_train=0, num_test=200)
    task = SegmentTask()
    logits = torch.zeros(200, 7, 32, 32)
    logits[:, 0] = 1.0
    state = task.init_state()
    task.update(state, logits, d.test.targets)
    m = task.compute(state)
    share = float((d.test.targets == 0).float().mean())
    assert m["pixel_acc_all"] == pytest.approx(share) and m["miou"] == pytest.approx(share / 7)


@pytest.mark.parametrize("name", ["segnet", "unet_bn", "pixelnet"])
def test_a_feedback_kind_attaches_to_the_staged_encoder(name):
    from feedback import FeedbackNet

    net = _small(name)
    fb = FeedbackNet(net.encoder, "deconv", steps=2, input_size=(3, 32, 32))
    out = fb(torch.rand(2, 3, 32, 32))
    assert out.logits.shape == (2, net.encoder.channels[-1]) and len(out.per_step) == 2


@pytest.mark.parametrize("module", ["baselines.segnet", "baselines.unet", "baselines.pixelnet", "baselines.dcgan",
                                    "experiments.tasks_segment"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
