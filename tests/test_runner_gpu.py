"""CUDA switches of the runner (skipped without CUDA): device auto-selection, AMP bf16 and fp16 with GradScaler,
channels_last, cudnn.benchmark/deterministic, gradient checkpointing (less memory, same gradients), torch.compile,
and resume on the GPU (the CUDA generator state is checkpointed)."""

import copy

import pytest
import torch

import baselines
from experiments.checkpoint import load_checkpoint
from experiments.config import apply_overrides, load_experiment
from experiments.train import RunStopped, enable_grad_checkpointing, select_device, train_run
from feedback import FeedbackNet

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = {
    "model.backbone": "resnet18_small", "model.backbone_args": {"channels": [8, 16, 16, 32], "drop_rate": 0.1},
    "model.feedback": "deconv", "model.steps": 2, "data.name": "digits", "data.options": {"image_size": 32},
    "data.batch_size": 128, "data.augment.shift": 2.0, "train.epochs": 2, "log.wandb": "disabled",
    "log.progress": False, "eval.samples": 0, "train.device": "auto", "train.warmup_steps": 0,
}


def _cfg(**extra):
    cfg, _ = load_experiment("quickstart")
    return apply_overrides(cfg, TINY | extra)


def test_auto_device_is_cuda():
    assert select_device("auto").type == "cuda"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_channels_last_run(tmp_path, dtype):
    r = train_run(_cfg(**{"train.amp": True, "train.amp_dtype": dtype, "train.channels_last": True,
                          "model.backbone": "lenet5_relu", "model.backbone_args": {}, "train.epochs": 3}),
                  tmp_path / dtype, cell="c", variant={})
    assert r["compute"]["device"].startswith("cuda") and r["compute"]["peak_gpu_mem_mb"] > 0
    assert 0.3 < r["metrics"]["acc"] <= 1.0  # three epochs of LeNet on digits learn something (chance: 0.1)
    scaler = load_checkpoint(tmp_path / dtype)["scaler"]
    assert (dtype == "float16") == bool(scaler)  # a GradScaler only for float16
    assert torch.backends.cudnn.benchmark  # not deterministic: cudnn autotunes


def test_resume_on_gpu_matches(tmp_path):
    extra = {"train.deterministic": True}
    ref = train_run(_cfg(**extra), tmp_path / "ref", cell="c", variant={})
    with pytest.raises(RunStopped):
        train_run(_cfg(**extra, **{"train.stop_after_steps": 5}), tmp_path / "res", cell="c", variant={})
    assert "cuda" in load_checkpoint(tmp_path / "res")["rng"][0]
    res = train_run(_cfg(**extra), tmp_path / "res", cell="c", variant={})
    a, b = load_checkpoint(tmp_path / "ref")["model"], load_checkpoint(tmp_path / "res")["model"]
    exact = all(torch.equal(a[k], b[k]) for k in a)
    print(f"GPU resume bit-identical: {exact}")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert abs(ref["metrics"]["acc"] - res["metrics"]["acc"]) < 0.01


def test_grad_checkpointing_saves_memory_on_gpu():
    torch.manual_seed(0)
    bb = baselines.create_model("resnet18_small", num_classes=10, in_chans=3, channels=[32, 64, 128, 256])
    plain = FeedbackNet(bb, "deconv", steps=3, input_size=(3, 64, 64)).cuda()
    ckpt = copy.deepcopy(plain)
    enable_grad_checkpointing(ckpt)
    x, y = torch.rand(64, 3, 64, 64, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    peaks, grads = [], []
    for net in (plain, ckpt):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(1)
        out = net(x)
        sum(torch.nn.functional.cross_entropy(lg, y) for lg in out.per_step).backward()
        peaks.append(torch.cuda.max_memory_allocated())
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
        del out
    print(f"peak memory without/with gradient checkpointing: {peaks[0] / 2**20:.0f} / {peaks[1] / 2**20:.0f} MiB")
    assert peaks[1] < 0.8 * peaks[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-5)


def test_compile_and_grad_checkpoint_train(tmp_path):
    r = train_run(_cfg(**{"train.compile": True, "train.grad_checkpoint": True, "train.amp": True,
                          "train.epochs": 1}), tmp_path / "run", cell="c", variant={})
    assert 0.0 <= r["metrics"]["acc"] <= 1.0 and r["metrics"]["loss"] == r["metrics"]["loss"]
