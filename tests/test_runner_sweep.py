"""Sweeps: locks, resume of unfinished runs, failed (raised or NaN) runs recorded and retried only on request,
and the backends (in-process, local worker processes, submitit's local executor)."""

import json
import os
import socket
import threading
import time

import pytest

from experiments.cli import main
from experiments.config import load_experiment
from experiments.sweep import RunLock, expand_grid, run_sweep
from experiments.train import train_run

TINY = """
model: {backbone: resnet18_small, backbone_args: {channels: [4, 4, 8, 8]}, steps: 1}
data: {name: digits, options: {image_size: 8}, batch_size: 256}
train: {epochs: 1, log_every: 2, threads: 1}
log: {wandb: disabled, progress: false}
eval: {samples: 0}
"""


@pytest.fixture
def exp(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


def _cells(exp, tmp_path, *overrides):
    cfg, grid = load_experiment(str(exp), [f"runs_dir={tmp_path / 'runs'}", *overrides])
    return expand_grid(cfg, grid)


# --------------------------------------------------------------------------------------------------- locks


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / "seed0.lock"
    a, b = RunLock(path), RunLock(path)
    assert a.acquire() and not b.acquire()
    a.release()
    assert not path.exists() and b.acquire()
    b.release()
    # a lock left by a dead process on this host is stale at once
    path.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "token": "x"}))
    assert RunLock(path).acquire()
    # one held by a live process elsewhere is respected until its heartbeat is older than stale_after
    path.unlink()
    path.write_text(json.dumps({"pid": 1, "host": "another-node", "token": "y"}))
    assert not RunLock(path, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    c = RunLock(path, stale_after=60)
    assert c.acquire() and json.loads(path.read_text())["token"] == c.token
    c.release()


def test_two_sweeps_on_one_folder_never_run_a_cell_twice(exp, tmp_path):
    cells = _cells(exp, tmp_path, "model.steps=1,2,3", "train.seed=0,1")
    calls: list[str] = []
    lock = threading.Lock()

    def runner(cfg, run_dir, *, cell, variant):
        with lock:
            calls.append(str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        time.sleep(0.05)
        return {}

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        run_sweep(cells, runner, progress=False, echo=lambda s: None))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 6
    assert sum(r["done"] for r in results) == 6 and sum(r["done"] + r["busy"] + r["skipped"] for r in results) == 12
    assert not list((tmp_path / "runs").rglob("*.lock"))


# --------------------------------------------------------------------------------------------------- resume, failures


def test_sweep_resumes_unfinished_runs_and_records_nan_as_failed(exp, tmp_path, capsys):
    # a huge SGD step makes the loss overflow: that cell fails, the other one runs on
    cells = _cells(exp, tmp_path, "train.optimizer=sgd", "train.lr=0.05,1e30", "train.stop_after_steps=2")
    echoed: list[str] = []
    summary = run_sweep(cells, train_run, progress=False, echo=echoed.append)
    assert summary["stopped"] == 1 and summary["failed"] == 1
    ok, bad = (c.runs[0].run_dir for c in cells)
    assert "FloatingPointError: loss is not finite" in (bad / "FAILED").read_text()
    assert not (ok / "DONE").exists() and (ok / "checkpoints" / "last.pt").is_file()
    # rerun without the stop: the unfinished run resumes from its checkpoint; the failure is not retried
    cells = _cells(exp, tmp_path, "train.optimizer=sgd", "train.lr=0.05,1e30")
    summary = run_sweep(cells, train_run, progress=False, echo=echoed.append)
    assert summary["done"] == 1 and summary["failed"] == 1 and "--retry-failed" in summary["errors"][0]
    assert any("resuming" in e for e in echoed) and not (ok.parent / ".attempts").exists()
    assert json.loads((ok / "result.json").read_text())["segments"] == 2 and (ok / "DONE").is_file()
    # a changed checkpoint (another config) is set aside, not resumed
    (bad / "FAILED").unlink()
    summary = run_sweep(cells[1:], train_run, progress=False, echo=echoed.append, retry_failed=True)
    assert summary["failed"] == 1 and (bad.parent / ".attempts" / "seed0-1" / "error.txt").is_file()
    assert any("moved to" in e for e in echoed)


def test_cli_sweep_exits_1_naming_failed_cells(exp, tmp_path, capsys):
    code = main(["sweep", str(exp), f"runs_dir={tmp_path / 'runs'}", "train.optimizer=sgd", "train.lr=0.05,1e30"])
    err = capsys.readouterr().err
    assert code == 1 and "failed: lr=1e30" in err and "FloatingPointError" in err
    code = main(["sweep", str(exp), f"runs_dir={tmp_path / 'runs'}", "train.optimizer=sgd", "train.lr=0.05,1e30"])
    assert code == 1 and "--retry-failed" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- backends


@pytest.mark.slow  # spawns two Python processes that import torch: ~10 s on an idle 2-core machine
def test_processes_backend(exp, tmp_path, capsys):
    code = main(["sweep", str(exp), f"runs_dir={tmp_path / 'runs'}", "model.steps=1,2", "--backend", "processes",
                 "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "2 ran" in out
    done = sorted((tmp_path / "runs" / "tiny").glob("*/seed0/DONE"))
    assert len(done) == 2 and all((d.parent / "result.json").is_file() for d in done)
    assert main(["sweep", str(exp), f"runs_dir={tmp_path / 'runs'}", "model.steps=1,2", "--backend",
                 "processes"]) == 0
    assert "0 ran, 2 already done" in capsys.readouterr().out


@pytest.mark.slow
def test_submitit_backend_local_executor(exp, tmp_path, capsys):
    pytest.importorskip("submitit")
    code = main(["sweep", str(exp), f"runs_dir={tmp_path / 'runs'}", "model.steps=1,2", "--backend", "submitit",
                 "--cluster", "local", "--timeout-min", "10"])
    out = capsys.readouterr().out
    assert code == 0 and "2 ran" in out
    assert len(list((tmp_path / "runs" / "tiny").glob("*/seed0/DONE"))) == 2
    assert list((tmp_path / "runs" / "tiny" / ".submitit").rglob("*_log.out"))


def test_submitit_missing_is_a_clear_error(exp, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "submitit", None)
    code = main(["sweep", str(exp), f"runs_dir={tmp_path / 'runs'}", "--backend", "submitit"])
    assert code == 2 and "pip install submitit" in capsys.readouterr().err
