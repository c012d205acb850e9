"""Run logging: ``metrics.jsonl`` is the source of truth, Weights & Biases a mirror.

Every :meth:`RunLogger.log` call appends one JSON line ``{"step": ..., "time": ..., <metrics>}`` to
``<run_dir>/metrics.jsonl`` and flushes it before anything else happens, so a crash (even SIGKILL) loses no line
that was written. The same metrics go to wandb with ``step=global_step``.

wandb runs offline by default, into the run directory (``<run_dir>/wandb/offline-run-*``), with ``group`` = the
ablation cell, ``tags`` = experiment and variant values, ``job_type`` = "train", a stable id derived from the run
path and ``reinit="finish_previous"`` (so runs of a sweep in one process never merge into one wandb run). Sync
later with ``wandb sync <run_dir>/wandb/offline-run-*``. If wandb is missing, cannot start (no network in online
mode, a bad key) or fails while logging, the run goes on with ``metrics.jsonl`` only and says so once per process.

Resuming (``resume=True``): the runner passes the wandb id its checkpoint recorded (a run set aside and started
over gets a new one), and ``wandb.init(id=..., resume="allow")`` continues that run. Online, the server appends to it. Offline, wandb cannot resume (it has no server to ask for
the run's step and config; infrastructure.md §4.4): each resumed segment becomes another
``wandb/offline-run-*`` directory with the same id, logging with the same explicit global steps and the full config
again. ``wandb sync`` uploads the segments of one id in start order; the server ignores rows at steps it already
has, which after an exact resume are the same numbers. ``metrics.jsonl`` stays the complete record: on resume the
lines written after the checkpoint (by steps that will be run again) move to ``metrics.discarded.jsonl``
(:func:`truncate_metrics`), so the file reads as one uninterrupted run.

TensorBoard (``tensorboard=True``) is an optional second mirror into ``<run_dir>/tb``; it needs the
``tensorboard`` package, which is not a dependency of this project (``pip install tensorboard``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["NullLogger", "RunLogger", "read_metrics", "tensorboard_available", "truncate_metrics"]

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"feedback: warning: {message}", file=sys.stderr, flush=True)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them readable
    return v


def _cell(v: Any) -> Any:
    """A wandb table cell: lists and dicts as compact JSON text, everything else as it is."""
    return json.dumps(v) if isinstance(v, (list, dict)) else _jsonable(v)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` file (a torn last line, from a crash mid-write, is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_metrics(path: str | Path, offset: int) -> int:
    """Cut ``metrics.jsonl`` back to ``offset`` bytes, appending what follows to ``metrics.discarded.jsonl``.

    Returns the number of lines moved. Nothing is deleted: the moved lines are the ones a resumed run writes again.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size <= offset:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(offset)
        tail = fh.read()
        fh.truncate(offset)
    with open(path.with_name("metrics.discarded.jsonl"), "ab") as out:
        out.write(tail if tail.endswith(b"\n") else tail + b"\n")
    return tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)


def tensorboard_available() -> bool:
    """True if ``torch.utils.tensorboard`` can be imported (it needs the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        return False
    return True


class NullLogger:
    """The logger of ranks other than 0: accepts every call and writes nothing."""

    wandb_run = None
    wandb_dir = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def log_image(self, key: str, path: str | Path, step: int, caption: str = "") -> None:
        pass

    def log_examples(self, key: str, rows: list[dict[str, Any]], step: int) -> None:
        pass

    def offset(self) -> int:
        return 0

    def elapsed(self) -> float:
        return 0.0

    def finish(self, exit_code: int = 0) -> None:
        pass


class RunLogger:
    """Append-and-flush metrics file plus an optional wandb mirror.

    Args:
        run_dir: the run directory (must exist).
        config: the run's full config as a nested dict (sent to wandb).
        wandb_mode: "offline", "online" or "disabled".
        project, entity: wandb project and entity.
        group: wandb group, the ablation cell.
        name: wandb run name.
        tags: wandb tags.
        job_type: wandb job type.
        resume: continue the run's wandb id (``resume="allow"``) instead of starting it.
        time_offset: seconds already spent by earlier segments of a resumed run (the ``time`` column continues).
        run_id: the wandb run id (default: derived from the run directory's path).
        tensorboard: also write TensorBoard event files to ``<run_dir>/tb``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        config: dict[str, Any],
        wandb_mode: str = "offline",
        project: str = "feedback",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        job_type: str = "train",
        resume: bool = False,
        time_offset: float = 0.0,
        tensorboard: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")
        self._t0 = time.time() - time_offset
        self.wandb_run = None
        self.tb = None
        # a stable id from the run path unless given: the same run directory maps to the same wandb id
        self.run_id = run_id or hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:12]
        if wandb_mode != "disabled":
            self.wandb_run = self._start_wandb(
                config=config, mode=wandb_mode, project=project, entity=entity, group=group, name=name,
                tags=tags or [], job_type=job_type, resume=resume,
            )
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # raises if the tensorboard package is missing

            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def _start_wandb(self, **kw: Any) -> Any:
        try:
            import wandb
        except Exception as e:  # not installed or broken install
            _warn_once("wandb-import", f"wandb unavailable ({type(e).__name__}: {e}); logging to metrics.jsonl only")
            return None
        run_id = self.run_id
        tags = [t[:64] for t in kw["tags"]]  # wandb limits tag length
        try:
            return wandb.init(
                mode=kw["mode"], dir=str(self.run_dir), project=kw["project"], entity=kw["entity"],
                group=kw["group"], name=kw["name"], tags=tags, job_type=kw["job_type"], config=kw["config"],
                id=run_id, reinit="finish_previous", resume="allow" if kw["resume"] else None,
                settings=wandb.Settings(silent=True, console="off", save_code=False, x_disable_stats=True,
                                        x_disable_meta=True, init_timeout=120),
            )
        except Exception as e:
            _warn_once("wandb-init", f"wandb could not start ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''});"
                       " the run goes on, logging to metrics.jsonl only")
            return None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Append ``metrics`` at global ``step`` to metrics.jsonl (flushed) and mirror them to wandb."""
        row = {"step": int(step), "time": round(time.time() - self._t0, 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self.wandb_run is not None:
            try:
                self.wandb_run.log({k: _jsonable(v) for k, v in metrics.items()}, step=int(step))
            except Exception as e:
                _warn_once("wandb-log", f"wandb logging failed ({type(e).__name__}: {e}); continuing without it")
                self.wandb_run = None
        if self.tb is not None:
            for k, v in metrics.items():
                v = _jsonable(v)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, global_step=int(step))
            self.tb.flush()

    def offset(self) -> int:
        """The size of metrics.jsonl so far (everything logged is flushed)."""
        return self._fh.tell()

    def elapsed(self) -> float:
        """Seconds since the run started, earlier segments included."""
        return time.time() - self._t0

    def log_image(self, key: str, path: str | Path, step: int, caption: str = "") -> None:
        """Mirror an image file already saved in the run directory to wandb (and TensorBoard)."""
        if self.wandb_run is not None:
            try:
                import wandb

                self.wandb_run.log({key: wandb.Image(str(path), caption=caption)}, step=int(step))
            except Exception as e:
                _warn_once("wandb-image", f"wandb image logging failed ({type(e).__name__}: {e})")
        if self.tb is not None:
            try:
                import matplotlib.image as mpimg
                import numpy as np

                img = np.asarray(mpimg.imread(str(path)))
                self.tb.add_image(key, img[..., :3], global_step=int(step), dataformats="HWC")
            except Exception as e:
                _warn_once("tb-image", f"tensorboard image logging failed ({type(e).__name__}: {e})")

    def log_examples(self, key: str, rows: list[dict[str, Any]], step: int) -> None:
        """Mirror predicted examples (:mod:`experiments.examples`) to wandb: a ``wandb.Table`` under ``key`` with an
        ``image`` column (``wandb.Image`` of each row's saved PNG, ``row["image"]`` being its path) and one column per
        other field (lists and dicts as JSON text), plus the images as a list under ``<key>/images`` captioned with
        each row's ``title``; to TensorBoard, the images as ``<key>/<index>``. ``metrics.jsonl`` is not touched (the
        rows are in ``<run_dir>/examples/examples.jsonl``).

        The image list is stored in the offline run (``files/media/images/``); wandb keeps a table's images in a run
        artifact that it stages under its data directory (``$WANDB_DATA_DIR``, default ``~/.local/share/wandb``)
        until ``wandb sync`` uploads it."""
        if not rows:
            return
        if self.wandb_run is not None:
            try:
                import wandb

                columns = list(dict.fromkeys(k for r in rows for k in r))
                images = [wandb.Image(str(r["image"]), caption=str(r.get("title", ""))) for r in rows]
                data = [[img if c == "image" else _cell(r.get(c)) for c in columns] for r, img in zip(rows, images)]
                self.wandb_run.log({key: wandb.Table(columns=columns, data=data), f"{key}/images": images},
                                   step=int(step))
            except Exception as e:
                _warn_once("wandb-examples", f"wandb example logging failed ({type(e).__name__}: {e})")
        if self.tb is not None:
            try:
                import matplotlib.image as mpimg
                import numpy as np

                for r in rows:
                    img = np.asarray(mpimg.imread(str(r["image"])))
                    self.tb.add_image(f"{key}/{r.get('index', 0)}", img[..., :3], global_step=int(step),
                                      dataformats="HWC")
            except Exception as e:
                _warn_once("tb-image", f"tensorboard image logging failed ({type(e).__name__}: {e})")

    def summary(self, values: dict[str, Any]) -> None:
        """Set wandb summary values (the final numbers shown in the runs table)."""
        if self.wandb_run is not None:
            try:
                self.wandb_run.summary.update({k: _jsonable(v) for k, v in values.items()})
            except Exception as e:
                _warn_once("wandb-log", f"wandb logging failed ({type(e).__name__}: {e}); continuing without it")

    @property
    def wandb_dir(self) -> str | None:
        """The wandb run's directory, if one is running."""
        if self.wandb_run is None:
            return None
        try:
            return os.path.relpath(self.wandb_run.dir, self.run_dir).removesuffix("/files")
        except Exception:
            return None

    def finish(self, exit_code: int = 0) -> None:
        """Close the metrics file and finish the wandb run (idempotent)."""
        if not self._fh.closed:
            self._fh.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish(exit_code=exit_code)
            except Exception as e:
                _warn_once("wandb-finish", f"wandb finish failed ({type(e).__name__}: {e})")
            self.wandb_run = None
