"""The AMP switch: a bf16-autocast run on CPU trains and evaluates like the float32 one."""

import json

from experiments.config import apply_overrides, load_experiment
from experiments.train import train_run


def _tiny(tmp_path, amp: bool):
    cfg, _ = load_experiment("quickstart")
    cfg = apply_overrides(cfg, {
        "model.backbone": "resnet18_small", "model.feedback": "deconv", "model.steps": 2,
        "model.backbone_args": {"channels": [8, 8, 16, 16]}, "data.name": "digits", "data.options": {"image_size": 16},
        "train.epochs": 1, "train.amp": amp, "log.wandb": "disabled", "log.progress": False,
        # channels_last off: PyTorch 2.14 on CPU corrupts the heap in the backward of this narrow ResNet in
        # channels_last at some batch sizes (e.g. 3, the last digits batch), with or without autocast
        "train.channels_last": False,
    })
    return train_run(cfg, tmp_path / ("amp" if amp else "fp32"), cell="c", variant={})


def test_bf16_autocast_run_on_cpu(tmp_path):
    amp, fp32 = _tiny(tmp_path, True), _tiny(tmp_path, False)
    assert json.loads((tmp_path / "amp" / "config.yaml").read_text().split("amp: ")[1].split()[0]) is True
    for r in (amp, fp32):
        assert 0.0 <= r["metrics"]["acc"] <= 1.0 and r["metrics"]["loss"] == r["metrics"]["loss"]  # not NaN
    # same data, same seed: bf16 changes the numbers a little, not the outcome
    assert abs(amp["metrics"]["acc"] - fp32["metrics"]["acc"]) < 0.15
