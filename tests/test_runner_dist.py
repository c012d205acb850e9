"""DDP on CPU: torchrun with two gloo processes trains the same model as one process (the global batch is split
evenly, gradients averaged), rank 0 alone writes, and the test metrics are exact sums over both shards."""

import json
import os
import subprocess
import sys

import pytest
import torch

from experiments.checkpoint import load_checkpoint
from experiments.config import load_experiment
from experiments.tracking import read_metrics
from experiments.train import train_run

# LeNet has no batch norm: per-rank batch statistics would make DDP differ from one process (no SyncBN here);
# 1,258 training images: an even number, so no rank pads its share; SGD: updates linear in the averaged gradient
YAML = """
model: {backbone: lenet5_relu, feedback: deconv, steps: 2}
data: {name: digits, options: {image_size: 32, test_fraction: 0.3}, batch_size: 128}
train: {epochs: 1, log_every: 3, threads: 1, optimizer: sgd, lr: 0.05}
log: {wandb: offline, progress: false}
eval: {samples: 0}
"""


@pytest.mark.dist
def test_torchrun_two_gloo_ranks_match_one_process(tmp_path):
    exp = tmp_path / "ddp.yaml"
    exp.write_text(YAML)
    env = dict(os.environ, WANDB_SILENT="true", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "experiments.train", str(exp), f"runs_dir={tmp_path / 'runs'}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "runs" / "ddp").glob("*/seed0/DONE")]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["compute"]["world_size"] == 2
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # rank 0 only
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert len({r["step"] for r in rows if "train/loss" in r}) == len([r for r in rows if "train/loss" in r])
    ckpt = load_checkpoint(run_dir)
    assert len(ckpt["rng"]) == 2  # every rank's generators, for exact resume with the same world size

    cfg, _ = load_experiment(str(exp), ["log.wandb=disabled"])
    single = train_run(cfg, tmp_path / "single", cell="c", variant={})
    ref = load_checkpoint(tmp_path / "single")
    for k, v in ref["model"].items():
        torch.testing.assert_close(ckpt["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for k in ("acc", "acc_step1", "acc_step2", "loss"):
        assert abs(result["metrics"][k] - single["metrics"][k]) < 1e-3, k


def _torchrun(tmp_path, exp, *overrides):
    env = dict(os.environ, WANDB_SILENT="true", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "experiments.train", str(exp), *overrides], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.dist
def test_fsdp_two_gloo_ranks_match_one_process_and_resume(tmp_path):
    """train.fsdp=true: per-stage units without feedback, one unit with deconv; whole checkpoints on rank 0; a run
    stopped mid-epoch and resumed under FSDP ends where the uninterrupted one does."""
    exp = tmp_path / "fsdp.yaml"
    exp.write_text(YAML.replace("epochs: 1", "epochs: 2"))
    proc = _torchrun(tmp_path, exp, f"runs_dir={tmp_path / 'runs'}", "train.fsdp=true", "model.feedback=none,deconv",
                     "log.wandb=disabled")
    assert proc.returncode == 0, "\n".join(ln for ln in proc.stderr.splitlines() if "Warning" not in ln)[:3000]
    for kind in ("none", "deconv"):
        (run_dir,) = [p.parent for p in (tmp_path / "runs" / "fsdp").glob(f"*{kind}*/seed0/DONE")]
        ckpt = load_checkpoint(run_dir)
        assert ckpt["fsdp"] is True and ckpt["world_size"] == 2
        cfg, _ = load_experiment(str(exp), ["log.wandb=disabled", f"model.feedback={kind}"]
                                 + (["model.steps=1"] if kind == "none" else []))
        single = train_run(cfg, tmp_path / f"single-{kind}", cell="c", variant={})
        ref = load_checkpoint(tmp_path / f"single-{kind}")
        assert ref["model"].keys() == ckpt["model"].keys()
        for k, v in ref["model"].items():
            torch.testing.assert_close(ckpt["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
        result = json.loads((run_dir / "result.json").read_text())
        assert abs(result["metrics"]["acc"] - single["metrics"]["acc"]) < 1e-3

    # stop after 7 steps (mid-epoch 1 of 2), resume, and compare with the uninterrupted FSDP run above
    runs2 = tmp_path / "runs2"
    proc = _torchrun(tmp_path, exp, f"runs_dir={runs2}", "train.fsdp=true", "model.feedback=deconv",
                     "log.wandb=disabled", "train.stop_after_steps=7")
    assert "stopped after step 7" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    # a DDP resume of an FSDP checkpoint is refused with one line (and recorded as failed: --retry-failed below)
    proc = _torchrun(tmp_path, exp, f"runs_dir={runs2}", "model.feedback=deconv", "log.wandb=disabled")
    assert proc.returncode != 0 and "checkpointed with FSDP" in proc.stderr
    proc = _torchrun(tmp_path, exp, f"runs_dir={runs2}", "train.fsdp=true", "model.feedback=deconv",
                     "log.wandb=disabled", "--retry-failed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (resumed,) = [p.parent for p in runs2.glob("fsdp/*/seed0/DONE")]
    (whole,) = [p.parent for p in (tmp_path / "runs" / "fsdp").glob("*deconv*/seed0/DONE")]
    a, b = load_checkpoint(resumed), load_checkpoint(whole)
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=0, atol=1e-6, msg=k)
