"""End to end through the command line, as a user runs it: files, skips, the wandb mirror, bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.cli import main
from experiments.config import load_experiment
from experiments.sweep import expand_grid, run_sweep
from experiments.tracking import read_metrics
from experiments.wandb_offline import read_offline_runs

TINY = """
description: a tiny grid for the tests
model: {backbone: lenet5_relu, steps: 2}
data: {name: digits, options: {image_size: 32}, batch_size: 128}
train: {epochs: 2, log_every: 3, threads: 1}
log: {progress: false}
grid:
  model.feedback: [none, deconv]
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    exp = root / "tiny.yaml"
    exp.write_text(TINY)
    os.environ["WANDB_MODE"] = "offline"
    code = main(["run", str(exp), f"runs_dir={root / 'runs'}"])
    return root, exp, code


def _run_dirs(root):
    return sorted(p.parent for p in (root / "runs" / "tiny").rglob("config.yaml") if ".attempts" not in p.parts)


def test_tiny_run_writes_every_file(tiny_run):
    root, _, code = tiny_run
    assert code == 0
    runs = _run_dirs(root)
    assert len(runs) == 2
    for d in runs:
        for f in ("config.yaml", "metrics.jsonl", "result.json", "DONE", "checkpoints/last.pt"):
            assert (d / f).is_file(), f"{d / f} missing"
        assert list((d / "wandb").glob("offline-run-*/run-*.wandb"))
        ckpt = torch.load(d / "checkpoints" / "last.pt", weights_only=True)
        assert ckpt["epoch"] == 2 and ckpt["step"] > 0 and "model" in ckpt
        result = json.loads((d / "result.json").read_text())
        assert 0.0 <= result["metrics"]["acc"] <= 1.0 and "acc_step2" in result["metrics"]
        assert result["cost"]["flops"] > 0
        rows = read_metrics(d / "metrics.jsonl")
        assert any("train/loss" in r for r in rows) and any("test/acc" in r for r in rows)
    assert (root / "runs" / "tiny" / "results.md").is_file() and (root / "runs" / "tiny" / "results.csv").is_file()


def test_feedback_cell_differs_and_learns(tiny_run):
    root, _, _ = tiny_run
    res = {json.loads((d / "result.json").read_text())["variant"]["model.feedback"]: json.loads(
        (d / "result.json").read_text()) for d in _run_dirs(root)}
    assert res["deconv"]["cost"]["feedback_params"] > 0 == res["none"]["cost"]["feedback_params"]
    assert res["none"]["metrics"]["acc"] > 0.5  # 2 epochs of LeNet on digits is far above chance (0.1)


def test_metrics_reaching_wandb_equal_metrics_jsonl(tiny_run):
    root, _, _ = tiny_run
    for d in _run_dirs(root):
        merged: dict[int, dict] = {}
        for row in read_metrics(d / "metrics.jsonl"):
            merged.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k not in ("step", "time")})
        (run,) = read_offline_runs(d / "wandb")
        assert run.complete and run.exit_code == 0
        history: dict[int, dict] = {}
        for h in run.history:  # rows logged at one step may arrive as several records; images are wandb-only
            history.setdefault(h["_step"], {}).update(
                {k: v for k, v in h.items() if not k.startswith("_") and not k.startswith("samples")})
        assert history == merged
        assert any(k.startswith("samples") for h in run.history for k in h)  # the prediction samples image
        assert run.group == d.parent.name and "tiny" in run.tags and run.job_type == "train"
        assert run.config["model"]["feedback"] in ("none", "deconv")


def test_rerun_skips_done_cells(tiny_run, capsys):
    root, exp, _ = tiny_run
    before = {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in _run_dirs(root)}
    assert main(["run", str(exp), f"runs_dir={root / 'runs'}"]) == 0
    assert "0 ran, 2 already done (skipped)" in capsys.readouterr().out
    assert before == {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in _run_dirs(root)}


def test_results_command(tiny_run, capsys):
    root, _, _ = tiny_run
    assert main(["results", str(root / "runs")]) == 0
    out = capsys.readouterr().out
    assert "deconv" in out and "none" in out and "acc %" in out


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    cfg, grid = load_experiment("quickstart", [f"runs_dir={tmp_path}"])
    cells = expand_grid(cfg, grid)[:2]

    def runner(cfg, run_dir, *, cell, variant):
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
        if cfg.train.seed == 1:
            raise RuntimeError("boom")
        return {}

    summary = run_sweep(cells, runner, progress=False, echo=lambda s: None)
    assert summary["done"] == 2 and summary["failed"] == 2
    failed = cells[0].runs[1].run_dir
    assert (failed / "FAILED").read_text().startswith("RuntimeError: boom") and (failed / "error.txt").is_file()
    assert any("seed1: RuntimeError: boom" in e for e in summary["errors"])
    # a rerun skips what is done and reports, but does not rerun, the failures
    summary = run_sweep(cells, runner, progress=False, echo=lambda s: None)
    assert summary["skipped"] == 2 and summary["failed"] == 2 and summary["done"] == 0
    assert all("--retry-failed" in e for e in summary["errors"]) and (failed / "FAILED").is_file()
    # --retry-failed reruns them, keeping the failed attempt's files
    summary = run_sweep(cells, runner, progress=False, echo=lambda s: None, retry_failed=True)
    assert summary["skipped"] == 2 and summary["failed"] == 2
    kept = failed.parent / ".attempts" / "seed1-1"
    assert (kept / "metrics.jsonl").read_text() == '{"step": 1}\n' and (kept / "FAILED").is_file()
    assert not list(failed.parent.glob("*.lock"))  # every lock released


BAD = [
    (["run", "quickstrat"], "unknown experiment 'quickstrat' (did you mean 'quickstart'?)"),
    (["run", "quickstart", "model.backbone=lenet6"], "unknown model 'lenet6'"),
    (["run", "quickstart", "model.feedback=deconvv"], "unknown feedback kind 'deconvv'"),
    (["run", "quickstart", "data.name=mnistt"], "unknown dataset 'mnistt'"),
    (["run", "quickstart", "train.lr=fast"], "bad value for 'train.lr'"),
    (["run", "quickstart", "train.lrr=0.1"], "did you mean 'train.lr'"),
    (["run", "quickstart", "data.options.canvs=48"], "did you mean 'data.options.canvas'"),
    (["run", "quickstart", "model.feedback_args.combine=mul"], "unknown combine mode 'mul'"),
    (["run", "quickstart", "model.feedback_args.combin=add"], "did you mean 'model.feedback_args.combine'"),
    (["run", "quickstart", "model.backbone=lenet5", "model.backbone_args.channels=[1]"], "unknown key 'model.backbone_args.channels' for lenet5"),
    (["list", "modelz"], "invalid choice"),
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "quickstart" / "keep").mkdir(parents=True)
    (runs / "quickstart" / "keep" / "metrics.jsonl").write_text("precious\n")
    argv = argv + ([f"runs_dir={runs}"] if argv[0] == "run" else [])
    with pytest.raises(SystemExit) if argv[0] == "list" else _noop():
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in runs.rglob("*")) == ["keep", "metrics.jsonl", "quickstart"]
    assert (runs / "quickstart" / "keep" / "metrics.jsonl").read_text() == "precious\n"


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_console_script_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  steps: [1, 2\n")
    exe = shutil.which("feedback", path=str(Path(sys.executable).parent)) or "feedback"
    proc = subprocess.run([exe, "run", str(bad), f"runs_dir={tmp_path / 'runs'}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("feedback: error: malformed YAML") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_restricting_a_grid_on_the_command_line_keeps_the_files_keys(tmp_path, capsys):
    """The file sets backbone_args for one backbone of its grid; running only the other backbone from the command
    line is not an error, while a key the command line itself adds must still fit the sweep."""
    exp = tmp_path / "two.yaml"
    exp.write_text("""
model: {backbone: lenet5_relu, backbone_args: {channels: [4, 4, 8, 8]}, feedback: none, steps: 1}
data: {name: digits, options: {image_size: 32}, batch_size: 256}
train: {epochs: 1, threads: 1}
log: {wandb: disabled, progress: false}
eval: {samples: 0}
grid:
  model.backbone: [lenet5_relu, resnet18_small]
""")
    runs = tmp_path / "runs"
    assert main(["run", str(exp), f"runs_dir={runs}", "model.backbone=lenet5_relu"]) == 0
    assert len(list(runs.glob("two/*/seed0/DONE"))) == 1
    capsys.readouterr()
    assert main(["run", str(exp), f"runs_dir={runs}", "model.backbone=lenet5_relu",
                 "model.backbone_args.drop_rate=0.1"]) == 2
    assert "unknown key 'model.backbone_args.drop_rate'" in capsys.readouterr().err
