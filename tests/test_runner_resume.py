"""Exact resume: a run stopped anywhere and resumed ends bit-identical to the uninterrupted run (CPU), and the
dashboards agree with metrics.jsonl; SIGTERM/SIGINT checkpoint and exit 128+signum; SIGKILL loses no written line."""

import json
import os
import signal
import time

import pytest
import torch

from experiments.checkpoint import CHECKPOINT, load_checkpoint
from experiments.config import ConfigError, apply_overrides, load_experiment
from experiments.tracking import read_metrics
from experiments.train import RunStopped, train_run
from experiments.wandb_offline import read_offline_runs

YAML = """
model: {backbone: resnet18_small, feedback: deconv, steps: 2, backbone_args: {channels: [4, 4, 8, 8], drop_rate: 0.2}}
data: {name: digits, options: {image_size: 8}, batch_size: 128, augment: {shift: 1.0, rotate: 8.0}}
train: {epochs: 3, log_every: 2, threads: 1, warmup_steps: 3, average: ema, ema_decay: 0.9}
log: {wandb: offline, progress: false}
eval: {samples: 0}
"""
# dropout and augmentation draw random numbers (the RNG state matters); EMA state must be checkpointed too


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    p = tmp_path_factory.mktemp("exp") / "tiny.yaml"
    p.write_text(YAML)
    return p


def _cfg(exp, **extra):
    cfg, _ = load_experiment(str(exp))
    return apply_overrides(cfg, extra)


def _lines(run_dir):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(run_dir / "metrics.jsonl")]


def _assert_same_state(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for part in ("model", "average"):
        assert ca[part].keys() == cb[part].keys()
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), f"{part}.{k} differs"
    assert ca["step"] == cb["step"] and ca["optimizer"]["state"].keys() == cb["optimizer"]["state"].keys()
    for i in ca["optimizer"]["state"]:
        for k, v in ca["optimizer"]["state"][i].items():
            assert torch.equal(v, cb["optimizer"]["state"][i][k])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, exp):
    """The uninterrupted run."""
    d = tmp_path_factory.mktemp("ref") / "run"
    result = train_run(_cfg(exp, **{"log.wandb": "disabled"}), d, cell="c", variant={})
    return d, result


def test_stop_anywhere_and_resume_is_bit_identical(reference, exp, tmp_path):
    ref_dir, ref = reference
    d = tmp_path / "run"
    # stop mid-epoch (step 5 of 11), then exactly at the epoch's end before its evaluation (step 11), then finish
    for stop in (5, 11):
        with pytest.raises(RunStopped):
            train_run(_cfg(exp, **{"train.stop_after_steps": stop}), d, cell="c", variant={})
        ckpt = load_checkpoint(d)
        assert ckpt["step"] == stop and not (d / "result.json").exists()
    assert load_checkpoint(d)["batch_in_epoch"] == 11 and load_checkpoint(d)["epoch"] == 0
    result = train_run(_cfg(exp), d, cell="c", variant={})  # stop_after_steps is a runtime key: same config
    _assert_same_state(ref_dir, d)
    assert result["metrics"] == ref["metrics"] and result["segments"] == 3
    assert _lines(d) == _lines(ref_dir)  # every metrics.jsonl line, in order (wall time aside)
    # the dashboards: three offline segments of one wandb id whose union is metrics.jsonl
    runs = read_offline_runs(d / "wandb")
    assert len(runs) == 3 and len({r.run_id for r in runs}) == 1 and all(r.complete for r in runs)
    assert all(r.exit_code == 0 for r in runs) and all(r.config["model"]["steps"] == 2 for r in runs)
    union: dict[int, dict] = {}
    for r in sorted(runs, key=lambda r: r.path.parent.name):  # start-time order, as `wandb sync` uploads them
        for h in r.history:
            union.setdefault(h["_step"], {}).update({k: v for k, v in h.items() if not k.startswith("_")})
    merged: dict[int, dict] = {}
    for row in _lines(d):
        merged.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k != "step"})
    assert union == merged


def test_changed_config_is_refused_unless_forced(exp, tmp_path):
    d = tmp_path / "run"
    off = {"log.wandb": "disabled"}
    with pytest.raises(RunStopped):
        train_run(_cfg(exp, **off, **{"train.stop_after_steps": 3}), d, cell="c", variant={})
    with pytest.raises(ConfigError, match=r"different config .*train.resume=force"):
        train_run(_cfg(exp, **off, **{"train.lr": 0.01}), d, cell="c", variant={})
    # runtime keys (device, threads, logging, checkpoint interval) are not a different config
    with pytest.raises(RunStopped):
        train_run(_cfg(exp, **off, **{"train.stop_after_steps": 4, "train.checkpoint_every": 7,
                                      "train.device": "cpu"}), d, cell="c", variant={})
    with pytest.raises(RunStopped):
        train_run(_cfg(exp, **off, **{"train.lr": 0.01, "train.resume": "force", "train.stop_after_steps": 5}),
                  d, cell="c", variant={})
    assert load_checkpoint(d)["step"] == 5
    train_run(_cfg(exp, **off, **{"train.resume": "never", "train.epochs": 1}), d, cell="c", variant={})
    assert (d.parent / ".attempts" / "run-1" / CHECKPOINT).is_file() and load_checkpoint(d)["step"] == 11
    ckpt = torch.load(d / CHECKPOINT, weights_only=True)  # plain tensors and containers only
    assert ckpt["run_hash"] and len(ckpt["rng"]) == 1 and {"python", "numpy", "torch"} <= set(ckpt["rng"][0])


class _Child:
    """A forked child running ``python -m experiments.train`` (forked: no second import of torch and friends)."""

    def __init__(self, exp, runs, extra=()):
        import multiprocessing as mp

        argv = [str(exp), f"runs_dir={runs}", *extra]
        self.proc = mp.get_context("fork").Process(target=_child_main, args=(argv,), daemon=True)
        self.proc.start()
        self.pid = self.proc.pid

    def poll(self):
        return self.proc.exitcode

    def wait(self, timeout):
        self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self):
        self.proc.kill()


def _child_main(argv):
    from experiments.train import main

    os.environ["WANDB_SILENT"] = "true"
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    os._exit(int(code or 0))


def _wait_for(pred, proc, timeout=90.0):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.poll()}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _start(exp, runs, extra=()):
    return _Child(exp, runs, extra)


def _max_step(run_dir):
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    return max((r["step"] for r in rows), default=0)


def test_sigterm_checkpoints_and_sigkill_loses_no_line(reference, exp, tmp_path):
    """SIGTERM mid-epoch: exit 143, a checkpoint at that step, a complete wandb segment; then SIGKILL right after a
    periodic checkpoint: every written line survives; the resumed run ends as the uninterrupted one."""
    ref_dir, _ = reference
    runs = tmp_path / "runs"
    proc = _start(exp, runs)
    found = lambda: next(iter(runs.glob("tiny/*/seed0")), None)  # noqa: E731
    _wait_for(lambda: found() is not None and _max_step(found()) >= 4, proc)
    run_dir = found()
    os.kill(proc.pid, signal.SIGSTOP)  # freeze it mid-epoch so the signal lands well before the end
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = load_checkpoint(run_dir)["step"]
    assert 4 <= stopped_at < 33 and stopped_at % 11 and not (run_dir / "DONE").exists()
    assert _max_step(run_dir) <= stopped_at
    (seg,) = read_offline_runs(run_dir / "wandb")
    assert seg.complete and seg.exit_code == 143 and seg.history  # finished cleanly: nothing buffered was lost
    assert not list(run_dir.parent.glob("*.lock"))

    # resume with a checkpoint every 3 steps; SIGKILL once one was written past the SIGTERM point
    proc = _start(exp, runs, ["train.checkpoint_every=3", "log.wandb=disabled"])
    _wait_for(lambda: load_checkpoint(run_dir)["step"] > stopped_at and _max_step(run_dir) > stopped_at + 3, proc)
    os.kill(proc.pid, signal.SIGSTOP)
    written = (run_dir / "metrics.jsonl").read_text()
    killed_at = load_checkpoint(run_dir)["step"]
    proc.kill()
    proc.wait(timeout=30)
    assert (run_dir / "metrics.jsonl").read_text() == written and killed_at > stopped_at
    assert all(r["step"] <= _max_step(run_dir) for r in read_metrics(run_dir / "metrics.jsonl"))
    # resume in this process: the lines after the checkpoint move to metrics.discarded.jsonl, then come back
    result = train_run(_cfg(exp, **{"log.wandb": "disabled"}), run_dir, cell=run_dir.parent.name, variant={})
    discarded = (run_dir / "metrics.discarded.jsonl")
    moved = discarded.read_text() if discarded.exists() else ""
    assert written.endswith(moved) and (run_dir / "metrics.jsonl").read_text().startswith(written[: len(written) - len(moved)])
    assert all(json.loads(line)["step"] > killed_at for line in moved.splitlines())
    assert _lines(run_dir) == _lines(ref_dir)
    _assert_same_state(ref_dir, run_dir)
    assert result["segments"] == 3
