"""The local metrics file survives any wandb failure; wandb problems are reported once and never stop a run."""

import sys

import pytest

import experiments.tracking as tracking
from experiments.tracking import RunLogger, read_metrics


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(tracking, "_WARNED", set())


def _log_twice(tmp_path, name):
    out = []
    for i in range(2):
        d = tmp_path / f"{name}{i}"
        d.mkdir()
        logger = RunLogger(d, config={"a": 1}, wandb_mode="offline", group="g", name="n", tags=["t"])
        logger.log({"loss": 1.5, "nan": float("nan")}, step=1)
        logger.log({"loss": 0.5}, step=2)
        logger.finish()
        out.append(read_metrics(d / "metrics.jsonl"))
    return out


def test_wandb_missing_run_goes_on_and_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    rows = _log_twice(tmp_path, "run")
    assert [r["loss"] for r in rows[0]] == [1.5, 0.5] and rows[0][0]["nan"] == "nan"
    assert rows[0] == [dict(r, time=r0["time"]) for r, r0 in zip(rows[1], rows[0])]
    err = capsys.readouterr().err
    assert err.count("wandb unavailable") == 1


def test_wandb_init_failure_run_goes_on_and_says_so_once(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*a, **k):
        raise wandb.errors.CommError("no network, bad key")

    monkeypatch.setattr(wandb, "init", broken)
    rows = _log_twice(tmp_path, "run")
    assert [len(r) for r in rows] == [2, 2]
    assert capsys.readouterr().err.count("wandb could not start") == 1


def test_wandb_log_failure_is_contained(tmp_path, capsys):
    logger = RunLogger(tmp_path, config={}, wandb_mode="disabled")

    class Broken:
        def log(self, *a, **k):
            raise RuntimeError("disk full")

        def finish(self, *a, **k):
            pass

    logger.wandb_run = Broken()
    logger.log({"x": 1}, step=1)
    logger.log({"x": 2}, step=2)
    logger.finish()
    assert [r["x"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert capsys.readouterr().err.count("wandb logging failed") == 1


def test_torn_last_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "x": 1}\n{"step": 2, "x"')
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "x": 1}]
