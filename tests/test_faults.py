"""Fault injection: corrupted and truncated checkpoints, pickled payloads, SIGKILL at random steps, and a sweep in
which one run raises, one goes NaN and one is killed (issue: proof of reliability).

The fast tests cover the checkpoint faults; SIGKILL storms and the process sweep are ``slow``.
"""

import json
import os
import random
import signal
import time

import pytest
import torch

from experiments.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint
from experiments.cli import main
from experiments.config import ConfigError, apply_overrides, load_experiment
from experiments.tracking import read_metrics
from experiments.train import RunStopped, train_run

YAML = """
model: {backbone: resnet18_small, feedback: deconv, steps: 2, backbone_args: {channels: [4, 4, 8, 8], drop_rate: 0.2}}
data: {name: digits, options: {image_size: 8}, batch_size: 128, augment: {shift: 1.0}}
train: {epochs: 2, log_every: 2, threads: 1, warmup_steps: 3}
log: {wandb: disabled, progress: false}
eval: {samples: 0}
"""


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    p = tmp_path_factory.mktemp("faults") / "faulty.yaml"
    p.write_text(YAML)
    return p


def _cfg(exp, **extra):
    cfg, _ = load_experiment(str(exp))
    return apply_overrides(cfg, extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, exp):
    d = tmp_path_factory.mktemp("ref") / "run"
    return d, train_run(_cfg(exp), d, cell="c", variant={})


def _same_params(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k


def _lines(run_dir):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(run_dir / "metrics.jsonl")]


# ------------------------------------------------------------------------------------------- checkpoint faults


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_unreadable_checkpoint_falls_back_to_the_previous_one(reference, exp, tmp_path, capsys, damage):
    ref_dir, ref = reference
    d = tmp_path / "run"
    with pytest.raises(RunStopped):
        train_run(_cfg(exp, **{"train.checkpoint_every": 2, "train.stop_after_steps": 7}), d, cell="c", variant={})
    assert load_checkpoint(d)["step"] == 7 and load_checkpoint(d / ".." / "run")["step"] == 7
    assert torch.load(d / PREVIOUS, weights_only=True)["step"] == 6
    data = (d / CHECKPOINT).read_bytes()
    (d / CHECKPOINT).write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    result = train_run(_cfg(exp), d, cell="c", variant={})
    err = capsys.readouterr().err
    assert "cannot be read" in err and "resuming from the previous checkpoint" in err and "(step 6)" in err
    assert (d / "checkpoints" / "last.unreadable.pt").is_file()
    _same_params(ref_dir, d)  # resumed one checkpoint earlier, and still bit-identical
    assert _lines(d) == _lines(ref_dir) and result["metrics"] == ref["metrics"]


def test_no_readable_checkpoint(exp, tmp_path, capsys):
    """train_run refuses with one line; `feedback run` sets the unreadable attempt aside (kept, never deleted) and
    starts the run over."""
    runs = tmp_path / "runs"
    assert main(["run", str(exp), f"runs_dir={runs}", "train.checkpoint_every=2", "train.stop_after_steps=4"]) == 0
    (d,) = list(runs.glob("faulty/*/seed0"))
    for path in (d / CHECKPOINT, d / PREVIOUS):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="cannot be read.*train.resume=never"):
        train_run(_cfg(exp), d, cell="c", variant={})
    capsys.readouterr()
    assert main(["run", str(exp), f"runs_dir={runs}"]) == 0
    out = capsys.readouterr().out
    assert "its checkpoint cannot be read" in out and (d / "DONE").exists()
    kept = d.parent / ".attempts" / "seed0-1"
    assert (kept / CHECKPOINT).stat().st_size == 100 and (kept / "metrics.jsonl").is_file()


class _Payload:
    """Pickles to a call of ``Path.touch`` on a sentinel: what a malicious checkpoint would smuggle in."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def test_checkpoint_with_a_pickled_payload_is_refused_not_executed(exp, tmp_path):
    d = tmp_path / "run"
    sentinel = tmp_path / "pwned"
    (d / "checkpoints").mkdir(parents=True)
    torch.save({"version": 2, "model": {}, "payload": _Payload(sentinel)}, d / CHECKPOINT)
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(d)
    with pytest.raises(ConfigError, match="cannot be read"):
        train_run(_cfg(exp), d, cell="c", variant={})
    assert not sentinel.exists()


# ------------------------------------------------------------------------------------------------ SIGKILL storms


def _child(argv):
    from experiments.train import main as train_main

    os.environ["WANDB_SILENT"] = "true"
    try:
        code = train_main(argv)
    except SystemExit as e:
        code = e.code
    os._exit(int(code or 0))


def _max_step(run_dir):
    rows = read_metrics(run_dir / "metrics.jsonl") if run_dir and (run_dir / "metrics.jsonl").is_file() else []
    return max((r["step"] for r in rows), default=0)


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_is_bit_identical(exp, tmp_path):
    """Ten SIGKILLs, each 1-5 logged steps after the last restart (checkpoints every 2 steps, so some kills land
    right after a checkpoint and some between); each rerun resumes; the end is bit-identical to a run never
    killed."""
    import multiprocessing as mp

    ref_dir = tmp_path / "ref"
    ref = train_run(_cfg(exp, **{"train.epochs": 5}), ref_dir, cell="c", variant={})
    runs, rng, kills = tmp_path / "runs", random.Random(0), []
    while True:
        run_dir = next(iter(runs.glob("faulty/*/seed0")), None)
        start = _max_step(run_dir)
        proc = mp.get_context("fork").Process(target=_child, args=([str(exp), f"runs_dir={runs}", "train.epochs=5",
                                                                    "train.checkpoint_every=2"],), daemon=True)
        proc.start()
        if len(kills) < 10:
            target = start + rng.randint(1, 5)
            t0 = time.time()
            while proc.is_alive() and time.time() - t0 < 120:
                run_dir = next(iter(runs.glob("faulty/*/seed0")), None)
                if _max_step(run_dir) >= target:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills.append(_max_step(run_dir))
                    break
                time.sleep(0.01)
        proc.join(120)
        run_dir = next(iter(runs.glob("faulty/*/seed0")), None)
        if run_dir is not None and (run_dir / "DONE").exists():
            break
    assert len(kills) == 10, kills
    _same_params(ref_dir, run_dir)
    assert _lines(run_dir) == _lines(ref_dir)
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == ref["metrics"]


@pytest.mark.slow
def test_sweep_where_one_run_raises_one_goes_nan_and_one_is_killed(tmp_path):
    """Worker processes: the healthy run finishes, the failures (a run that raises, one that goes NaN, one whose
    worker is SIGKILLed) are recorded with their causes, and --retry-failed finishes the killed run (the
    deterministic failures fail again, as they must)."""
    exp = tmp_path / "mixed.yaml"
    exp.write_text(YAML.replace("epochs: 2", "epochs: 3") + """
grid:
  train.lr: [0.002, 1.0e+30, -0.001]
  train.seed: [0, 1]
""")
    runs = tmp_path / "runs"
    import threading

    killed = {}

    def killer():  # SIGKILL the worker of (lr 0.002, seed 1) once it has trained a little
        t0 = time.time()
        while time.time() - t0 < 240 and not killed:
            for d in runs.glob("mixed/*/seed1"):
                if "lr=0.002" in d.parent.name:
                    lock = d.parent / "seed1.lock"
                    rows = read_metrics(d / "metrics.jsonl") if (d / "metrics.jsonl").is_file() else []
                    if lock.is_file() and rows and max(r["step"] for r in rows) >= 4:
                        os.kill(json.loads(lock.read_text())["pid"], signal.SIGKILL)
                        killed["dir"] = d
            time.sleep(0.05)

    th = threading.Thread(target=killer)
    th.start()
    code = main(["sweep", str(exp), f"runs_dir={runs}", "--backend", "processes", "--workers", "2"])
    th.join()
    assert code == 1 and "dir" in killed
    failed = {p.parent.parent.name + "/" + p.parent.name: p.read_text() for p in runs.glob("mixed/*/seed*/FAILED")}
    done = list(runs.glob("mixed/*/seed*/DONE"))
    assert len(done) == 1 and len(failed) == 5  # 6 runs: 1 healthy, 1 killed, 2 NaN, 2 raising
    assert sum("WorkerDied" in v and "signal 9" in v for v in failed.values()) == 1
    assert sum("FloatingPointError" in v for v in failed.values()) == 2
    assert sum("Invalid learning rate" in v for v in failed.values()) == 2
    code = main(["sweep", str(exp), f"runs_dir={runs}", "--backend", "processes", "--workers", "2",
                 "--retry-failed"])
    assert code == 1 and (killed["dir"] / "DONE").exists()
    assert len(list(runs.glob("mixed/*/seed*/DONE"))) == 2


# ------------------------------------------------------------------------------------------------ malformed input

YAMLS = {
    "bad.yaml": "model: {backbone: lenet5_relu\n",
    "list.yaml": "- a\n- b\n",
    "unknown.yaml": "modle: {backbone: lenet5}\n",
    "wrongtype.yaml": "train: {epochs: many}\n",
    "grid.yaml": "grid: {train.lrr: [0.1]}\n",
    "exclude.yaml": "grid: {train.lr: [0.1]}\nexclude: [{train.lrx: 1}]\n",
}

# 26 here and 11 in tests/test_cli.py: configs, overrides, CLI arguments, dataset roots, run directories
MALFORMED = [
    (["run", "quickstart", "train.epochs=-1"], "train.epochs must be >= 1"),
    (["run", "quickstart", "data.batch_size=0"], "data.batch_size must be >= 1"),
    (["run", "quickstart", "model.steps=0"], "model.steps must be >= 1"),
    (["run", "quickstart", "model.readout=max"], "choose from: last, mean"),
    (["run", "quickstart", "train.optimizer=adam"], "did you mean 'adamw'?"),
    (["run", "quickstart", "train.schedule=linear"], "'train.schedule'"),
    (["run", "quickstart", "log.wandb=cloud"], "choose from: offline, online, disabled"),
    (["run", "quickstart", "train.amp_dtype=float8"], "'train.amp_dtype'"),
    (["run", "quickstart", "data.on_device=gpu"], "choose from: auto, always, never"),
    (["run", "quickstart", "task=segmentt"], "bad value 'segmentt' for 'task'"),
    (["run", "quickstart", "train.lr"], "is not of the form key=value"),
    (["run", "quickstart", "=3"], "unknown key ''"),
    (["run", "quickstart", "train.lr=0.1,"], "bad value for 'train.lr'"),
    (["run", "{tmp}/bad.yaml"], "malformed YAML"),
    (["run", "{tmp}/list.yaml"], "the top level must be a mapping"),
    (["run", "{tmp}/unknown.yaml"], "unknown key 'modle' (did you mean 'model'?)"),
    (["run", "{tmp}/wrongtype.yaml"], "bad value for 'train.epochs'"),
    (["run", "{tmp}/grid.yaml"], "did you mean 'train.lr'?"),
    (["run", "{tmp}/exclude.yaml"], "exclude: unknown key 'train.lrx'"),
    (["run", "{tmp}/missing.yaml"], "does not exist"),
    (["run", "quickstart", "data.options.num_train=abc"], "invalid literal"),
    (["run", "quickstart", "eval.attacks=[fgsmm]"], "unknown attack 'fgsmm'"),
    (["run", "quickstart", "eval.pointing=[excitaton]"], "did you mean 'excitation'?"),
    (["run", "quickstart", "model.preset=tiny"], "choose from: default, small"),
    (["attend", "{tmp}/norun"], "is not a run directory"),
    (["results", "{tmp}/nothing"], "does not exist"),
]


@pytest.mark.parametrize("argv,message", MALFORMED)
def test_malformed_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    for name, text in YAMLS.items():
        (tmp_path / name).write_text(text)
    runs = tmp_path / "runs"
    (runs / "quickstart" / "keep").mkdir(parents=True)
    (runs / "quickstart" / "keep" / "metrics.jsonl").write_text("precious\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ([f"runs_dir={runs}"] if argv[0] == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in runs.rglob("*")) == ["keep", "metrics.jsonl", "quickstart"]
    assert (runs / "quickstart" / "keep" / "metrics.jsonl").read_text() == "precious\n"
