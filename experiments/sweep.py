"""Grids: expand an experiment into cells and seeds, claim each run, resume or start it, record what failed.

A grid ``{dotted key: [values]}`` expands into the Cartesian product of its axes. ``train.seed`` is special: its
values are the seeds *inside* each cell (``<cell>/seed<k>``); every other axis makes cells. A cell's name is its
readable axis values plus a short hash of the whole config without the seed and without the settings that only
say how a run executes (:data:`experiments.config.RUNTIME_KEYS`), e.g.
``backbone=lenet5,feedback=deconv,steps=3-1a2b3c``; changing any setting that is not an axis (say ``train.epochs``)
changes the hash, so a rerun never mistakes an old result for a new one.

What a sweep does with each run directory (:func:`claim_run`):

- ``DONE`` there: skipped;
- ``FAILED`` there (the run raised, or its loss went NaN): left alone and reported as failed, unless
  ``retry_failed``; a retried run's ``FAILED`` and ``error.txt`` move to ``<cell>/.attempts/``;
- a checkpoint of the same config (:func:`experiments.checkpoint.checkpoint_status`): the run *resumes* from it
  (``train.resume=force`` resumes a checkpoint of a changed config too);
- anything else (no checkpoint, another config, an unreadable file): the directory is moved to
  ``<cell>/.attempts/seed<k>-<n>`` and the run starts over, so nothing already written is lost.

Two sweeps over the same folder (two terminals, two SLURM arrays, worker processes) never run a cell twice: a run
is claimed by creating ``<cell>/seed<k>.lock`` with ``O_CREAT | O_EXCL``. The holder touches the lock every
minute; a lock whose process is gone (same host) or that has not been touched for ten minutes is stale and is
taken over (renamed away atomically, so of two sweeps taking it over only one wins). A run that raises is recorded
(``FAILED`` with the one-line message, ``error.txt`` with the traceback) and the sweep goes on with the next one.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from experiments.checkpoint import checkpoint_status, set_aside
from experiments.config import ConfigError, ExperimentConfig, apply_overrides, config_hash, run_hash

__all__ = ["Cell", "Claim", "RunLock", "RunSpec", "claim_run", "expand_grid", "finish_run", "run_one", "run_sweep"]


@dataclass
class RunSpec:
    cell: str
    variant: dict[str, Any]
    seed: int
    cfg: ExperimentConfig
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.cell}/seed{self.seed}"


@dataclass
class Cell:
    name: str
    variant: dict[str, Any]
    runs: list[RunSpec] = field(default_factory=list)


def _fmt(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s.replace("/", "_").replace(" ", "")


def _short_keys(keys: list[str]) -> dict[str, str]:
    """``model.backbone`` -> ``backbone`` unless two axes share the last component."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


_MISSING = object()  # an exclude key the config does not set never matches


def _excluded(variant: dict[str, Any], base: ExperimentConfig, exclude: list[dict[str, Any]]) -> bool:
    def value(key: str) -> Any:
        if key in variant:
            return variant[key]
        cur: Any = base
        for p in key.split("."):  # dataclass fields, then the free-form dicts (data.options, backbone_args, ...)
            if isinstance(cur, dict):
                if p not in cur:
                    return _MISSING
                cur = cur[p]
            else:
                cur = getattr(cur, p)
        return cur

    return any(all(value(k) == v for k, v in entry.items()) for entry in exclude)


def expand_grid(base: ExperimentConfig, grid: dict[str, Any]) -> list[Cell]:
    """Cells (in grid order) with their seeded runs; cells matching an ``exclude`` entry are left out."""
    seeds = grid.get("train.seed", [base.train.seed])
    exclude = grid.get("exclude", [])
    axes = [k for k in grid if k not in ("train.seed", "exclude")]
    short = _short_keys(axes)
    cells: list[Cell] = []
    root = Path(base.runs_dir) / base.name
    for combo in itertools.product(*(grid[k] for k in axes)):
        variant = dict(zip(axes, combo))
        if _excluded(variant, base, exclude):
            continue
        cfg = apply_overrides(base, variant)
        readable = ",".join(f"{short[k]}={_fmt(v)}" for k, v in variant.items()) or "base"
        name = f"{readable}-{config_hash(cfg)}"
        cell = Cell(name=name, variant=variant)
        for s in seeds:
            run_cfg = apply_overrides(cfg, {"train.seed": s})
            cell.runs.append(RunSpec(name, variant, int(s), run_cfg, root / name / f"seed{s}"))
        cells.append(cell)
    if not cells:
        raise ConfigError("the grid is empty: every cell is excluded")
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError("two grid cells map to the same directory; a grid axis repeats a value")
    return cells


# --------------------------------------------------------------------------------------------------- locks


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive claim on one run: ``<cell>/seed<k>.lock`` created with ``O_CREAT | O_EXCL``.

    Args:
        path: the lock file.
        stale_after: seconds without a heartbeat after which any holder is presumed dead.
        heartbeat: seconds between touches of the lock while it is held.
    """

    def __init__(self, path: Path, *, stale_after: float = 600.0, heartbeat: float = 60.0) -> None:
        self.path = Path(path)
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "token": self.token}, fh)
        return True

    def holder(self) -> dict[str, Any] | None:
        """The lock file's content (None if there is no lock, {} if it is unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {}

    def is_stale(self, info: dict[str, Any]) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not _pid_alive(info["pid"]):
                return True
        return age > self.stale_after

    def acquire(self) -> bool:
        """Claim the run; False if a live holder has it."""
        if not self._create():
            info = self.holder()
            if info is None:  # released in the meantime
                return self._create() and self._started()
            if not self.is_stale(info):
                return False
            # take over a stale lock: rename it away (atomic: of two takers only one succeeds), check we took the
            # lock we judged stale, then create ours
            aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return False
            try:
                taken = json.loads(aside.read_text())
            except (OSError, json.JSONDecodeError):
                taken = {}
            if taken.get("token") != info.get("token"):  # we took a fresh lock: put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                aside.unlink(missing_ok=True)
                return False
            aside.unlink(missing_ok=True)
            if not self._create():
                return False
        return self._started()

    def _started(self) -> bool:
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lock-{self.path.name}")
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = self.holder()
        if info is not None and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False


# --------------------------------------------------------------------------------------------------- one run


@dataclass
class Claim:
    """What :func:`claim_run` decided: ``run`` (lock held), ``done``, ``failed`` (earlier, not retried) or ``busy``."""

    action: str
    lock: RunLock | None = None
    note: str = ""


def lock_path(spec: RunSpec) -> Path:
    """The lock file that claims a run: ``<cell>/seed<k>.lock``."""
    return spec.run_dir.parent / f"{spec.run_dir.name}.lock"


def _archive_failure(run_dir: Path) -> Path:
    attempts = run_dir.parent / ".attempts"
    n = 1
    while (attempts / f"{run_dir.name}-{n}").exists():
        n += 1
    dest = attempts / f"{run_dir.name}-{n}"
    dest.mkdir(parents=True)
    for name in ("FAILED", "error.txt"):
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), str(dest / name))
    return dest


def claim_run(spec: RunSpec, *, retry_failed: bool = False, echo: Callable[[str], None] = print) -> Claim:
    """Decide what to do with one run and, if it is to run, lock it and prepare its directory (resume or set aside)."""
    d = spec.run_dir
    if (d / "DONE").exists():
        return Claim("done")
    if (d / "FAILED").exists() and not retry_failed:
        return Claim("failed", note=(d / "FAILED").read_text().strip())
    lock = RunLock(lock_path(spec))
    if not lock.acquire():
        return Claim("busy", note=f"locked by {lock.holder()}")
    # another sweep may have finished or failed it between our first look and the lock
    if (d / "DONE").exists():
        lock.release()
        return Claim("done")
    failed_before = (d / "FAILED").exists()
    if failed_before and not retry_failed:
        lock.release()
        return Claim("failed", note=(d / "FAILED").read_text().strip())
    note = "new"
    if d.exists():
        status = checkpoint_status(d, run_hash(spec.cfg))
        mode = spec.cfg.train.resume
        if mode != "never" and (status == "match" or (status == "mismatch" and mode == "force")):
            if failed_before:  # keep the failure's record; the run goes on from its last checkpoint
                _archive_failure(d)
            echo(f"resuming {spec.label} from its checkpoint")
            note = "resumed"
        else:
            why = {"none": "it has no checkpoint", "mismatch": "its checkpoint is of another config",
                   "unreadable": "its checkpoint cannot be read", "match": "train.resume=never"}[status]
            moved = set_aside(d)
            echo(f"an unfinished earlier attempt of {spec.label} was moved to {moved} ({why})")
            note = "restarted"
    return Claim("run", lock=lock, note=note)


def finish_run(spec: RunSpec, claim: Claim, *, error: BaseException | None) -> str:
    """Record how a claimed run ended (``DONE``, or ``FAILED`` + ``error.txt``) and release its lock.

    Returns ``done``, ``failed``, ``stopped`` (``train.stop_after_steps``) or ``interrupted`` (a signal).
    """
    from experiments.train import RunStopped

    d = spec.run_dir
    try:
        if error is None:
            (d / "DONE").write_text("")
            return "done"
        if isinstance(error, RunStopped):
            return "stopped"
        if isinstance(error, (SystemExit, KeyboardInterrupt)):
            return "interrupted"
        msg = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.txt").write_text("".join(traceback.format_exception(error)))
        (d / "FAILED").write_text(msg + "\n")
        return "failed"
    finally:
        if claim.lock is not None:
            claim.lock.release()


def run_one(spec: RunSpec, runner: Callable[..., Any], *, retry_failed: bool = False,
            echo: Callable[[str], None] = print, progress_position: int | None = None) -> dict[str, Any]:
    """Claim, run and record one run. Returns ``{"label", "status", "error"}``; re-raises SystemExit after recording.

    ``status`` is ``done``, ``skipped`` (done before), ``failed``, ``failed-earlier`` (not retried), ``busy``
    (another sweep holds it), ``stopped`` or ``interrupted``.
    """
    claim = claim_run(spec, retry_failed=retry_failed, echo=echo)
    if claim.action != "run":
        status = {"done": "skipped", "failed": "failed-earlier", "busy": "busy"}[claim.action]
        return {"label": spec.label, "status": status, "error": claim.note}
    kw = {} if progress_position is None else {"progress_position": progress_position}
    try:
        runner(spec.cfg, spec.run_dir, cell=spec.cell, variant=spec.variant, **kw)
    except BaseException as e:  # recorded, then: exceptions become a failed run, signals go on up
        status = finish_run(spec, claim, error=e)
        if status == "interrupted":
            raise
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if status == "failed":
            print(f"feedback: run {spec.label} failed ({msg}); see {spec.run_dir / 'error.txt'}", file=sys.stderr)
        return {"label": spec.label, "status": status, "error": msg}
    finish_run(spec, claim, error=None)
    return {"label": spec.label, "status": "done", "error": ""}


def summarize_outcomes(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per status plus the failures' ``label: message`` lines."""
    summary: dict[str, Any] = {"done": 0, "skipped": 0, "failed": 0, "busy": 0, "stopped": 0, "errors": []}
    for o in outcomes:
        s = o["status"]
        if s in ("failed", "failed-earlier"):
            summary["failed"] += 1
            hint = " (failed earlier; --retry-failed reruns it)" if s == "failed-earlier" else ""
            summary["errors"].append(f"{o['label']}: {o['error']}{hint}")
        else:
            summary[s] = summary.get(s, 0) + 1
    return summary


def run_sweep(
    cells: list[Cell],
    runner: Callable[..., dict[str, Any]],
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Run every seed of every cell in this process (the ``local`` backend), one after the other.

    Returns:
        counts of ``done`` (ran now), ``skipped`` (already done), ``failed`` (now or earlier), ``busy`` (held by
        another sweep) and ``stopped`` runs, and the failures' messages under ``errors``.
    """
    runs = [r for c in cells for r in c.runs]
    outcomes: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="sweep", position=0, dynamic_ncols=True, unit="run")
    try:
        for spec in runs:
            outcomes.append(run_one(spec, runner, retry_failed=retry_failed, echo=echo))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return summarize_outcomes(outcomes)
