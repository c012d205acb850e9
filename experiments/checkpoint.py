"""Checkpoints for exact resume: what they hold, how they are written and read, and whether one can be resumed.

A checkpoint (``<run_dir>/checkpoints/last.pt``) holds everything the loop needs to continue as if it had never
stopped (infrastructure.md §9 item 7):

- ``model``, ``optimizer``, ``scheduler``, ``scaler`` and, when weight averaging is on, ``average`` state dicts;
- ``rng``: one entry per rank with the Python, NumPy, torch CPU and (when present) CUDA generator states;
- ``step`` (optimizer steps done), ``epoch`` and ``batch_in_epoch`` (batches of that epoch done; equal to the
  number of batches per epoch when the epoch's training is done and its evaluation is pending);
- ``run_hash`` (:func:`experiments.config.run_hash`: every setting that changes what is computed, seed included),
  ``metrics`` (the last test metrics), ``metrics_offset`` (the size of ``metrics.jsonl`` when it was written) and
  ``elapsed`` (training seconds so far).

The shuffle is a pure function of (seed, epoch) and the learning rate of the step, so with these restored a run
stopped at any step and resumed into fresh objects reaches bit-identical parameters on CPU. Writes go to a
temporary file that is then ``os.replace``-d over the old one, so a crash (even SIGKILL) mid-write leaves the
previous checkpoint intact; the one it replaces is kept as ``checkpoints/prev.pt``, and a ``last.pt`` that cannot be
read (truncated by a full disk, corrupted on a flaky file system) makes :func:`load_checkpoint` fall back to it
with a warning, so the run resumes from one interval earlier instead of stopping. Loading uses
``torch.load(..., weights_only=True)``: only tensors and plain containers are stored, and a checkpoint carrying a
pickled object (code) is refused, never executed.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT",
    "PREVIOUS",
    "atomic_save",
    "capture_rng",
    "checkpoint_status",
    "load_checkpoint",
    "restore_rng",
    "set_aside",
]

CHECKPOINT = Path("checkpoints") / "last.pt"
PREVIOUS = Path("checkpoints") / "prev.pt"
VERSION = 2


def atomic_save(obj: Any, path: Path, *, keep_previous: Path | None = None) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` it over ``path``.

    With ``keep_previous``, the file being replaced is first moved there (itself atomically), so a good previous
    version survives whatever happens to the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if keep_previous is not None and path.is_file():
        os.replace(path, keep_previous)
    os.replace(tmp, path)


def capture_rng() -> dict[str, Any]:
    """Every generator state of this process, as tensors and plain values (loadable with ``weights_only``)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set every generator of this process to ``state`` (from :func:`capture_rng`)."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _read(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != VERSION:
        raise ValueError(f"{path} is not a resumable checkpoint of this version (version {VERSION} expected)")
    return ckpt


def load_checkpoint(run_dir: Path, *, warn: bool = True, set_aside_unreadable: bool = False) -> dict[str, Any] | None:
    """The run's checkpoint, or None if it has none.

    If ``last.pt`` cannot be read but ``prev.pt`` can, the previous one is returned (with a warning on stderr);
    ``set_aside_unreadable`` (the resuming run) then renames the bad file ``last.unreadable.pt``, so the next save
    does not keep it as the previous checkpoint.

    Raises:
        ValueError: no readable checkpoint although one is there (the message names the file and the problem).
    """
    path, prev = Path(run_dir) / CHECKPOINT, Path(run_dir) / PREVIOUS
    if not path.is_file():
        return _read(prev) if prev.is_file() else None  # a crash between the two renames of atomic_save
    try:
        return _read(path)
    except ValueError as e:
        if not prev.is_file():
            raise
        ckpt = _read(prev)
        if set_aside_unreadable:
            os.replace(path, path.with_name("last.unreadable.pt"))
        if warn:
            print(f"feedback: warning: {e}; resuming from the previous checkpoint {prev} (step {ckpt.get('step')})",
                  file=sys.stderr)
        return ckpt


def checkpoint_status(run_dir: Path, run_hash: str) -> str:
    """``"none"`` (no checkpoint), ``"match"`` (resumable: same config), ``"mismatch"`` or ``"unreadable"``."""
    try:
        ckpt = load_checkpoint(run_dir, warn=False)
    except ValueError:
        return "unreadable"
    if ckpt is None:
        return "none"
    return "match" if ckpt.get("run_hash") == run_hash else "mismatch"


def set_aside(run_dir: Path) -> Path:
    """Move ``run_dir`` to ``<parent>/.attempts/<name>-<n>`` (never delete what a run wrote); return the new path."""
    attempts = run_dir.parent / ".attempts"
    attempts.mkdir(parents=True, exist_ok=True)
    n = 1
    while (attempts / f"{run_dir.name}-{n}").exists():
        n += 1
    dest = attempts / f"{run_dir.name}-{n}"
    shutil.move(str(run_dir), str(dest))
    return dest
