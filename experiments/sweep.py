"""Grids: expand an experiment into cells and seeds, run what is not done, record what failed.

A grid ``{dotted key: [values]}`` expands into the Cartesian product of its axes. ``train.seed`` is special: its
values are the seeds *inside* each cell (``<cell>/seed<k>``); every other axis makes cells. A cell's name is its
readable axis values plus a short hash of the whole config without the seed, e.g.
``backbone=lenet5,feedback=deconv,steps=3-1a2b3c``; changing any setting that is not an axis (say ``train.epochs``)
changes the hash, so a rerun never mistakes an old result for a new one.

Rerunning skips run directories holding ``DONE``. A run directory without ``DONE`` (a crash, a failure) is moved
to ``<cell>/.attempts/seed<k>-<n>`` before the run starts again, so nothing already written is lost. A failing run
leaves its traceback in ``error.txt`` there and the sweep goes on with the next run.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from experiments.config import ConfigError, ExperimentConfig, apply_overrides, config_hash

__all__ = ["Cell", "RunSpec", "expand_grid", "run_sweep"]


@dataclass
class RunSpec:
    cell: str
    variant: dict[str, Any]
    seed: int
    cfg: ExperimentConfig
    run_dir: Path


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


def _excluded(variant: dict[str, Any], base: ExperimentConfig, exclude: list[dict[str, Any]]) -> bool:
    def value(key: str) -> Any:
        if key in variant:
            return variant[key]
        cur: Any = base
        for p in key.split("."):
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


def _set_aside(run_dir: Path) -> Path:
    """Move an unfinished run directory to ``<cell>/.attempts/`` (never delete what a run wrote)."""
    attempts = run_dir.parent / ".attempts"
    attempts.mkdir(exist_ok=True)
    n = 1
    while (attempts / f"{run_dir.name}-{n}").exists():
        n += 1
    dest = attempts / f"{run_dir.name}-{n}"
    shutil.move(str(run_dir), str(dest))
    return dest


def run_sweep(
    cells: list[Cell],
    runner: Callable[..., dict[str, Any]],
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every seed of every cell that has no ``DONE`` marker, in this process.

    Returns:
        counts of ``done`` (ran now), ``skipped`` (already done) and ``failed`` runs, and the failures' messages.
    """
    runs = [r for c in cells for r in c.runs]
    summary: dict[str, Any] = {"done": 0, "skipped": 0, "failed": 0, "errors": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="sweep", position=0, dynamic_ncols=True, unit="run")
    try:
        for spec in runs:
            label = f"{spec.cell}/seed{spec.seed}"
            if (spec.run_dir / "DONE").exists():
                summary["skipped"] += 1
                if bar is not None:
                    bar.update(1)
                continue
            if spec.run_dir.exists():
                moved = _set_aside(spec.run_dir)
                echo(f"an unfinished earlier attempt of {label} was moved to {moved}")
            try:
                runner(spec.cfg, spec.run_dir, cell=spec.cell, variant=spec.variant)
                (spec.run_dir / "DONE").write_text("")
                summary["done"] += 1
            except KeyboardInterrupt:
                raise
            except Exception as e:
                summary["failed"] += 1
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                summary["errors"].append(f"{label}: {msg}")
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                (spec.run_dir / "error.txt").write_text(traceback.format_exc())
                (spec.run_dir / "FAILED").write_text(msg + "\n")
                print(f"feedback: run {label} failed ({msg}); see {spec.run_dir / 'error.txt'}", file=sys.stderr)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return summary
