"""Shared pieces of the figure and table scripts: reading run directories, seed statistics, CSV and figure output.

Everything here reads run directories only (``result.json`` next to ``DONE``, ``config.yaml``, ``pointing.json``,
through :func:`experiments.results.collect`, which imports nothing but the standard library); nothing trains.

Statistics: over the seeds of a cell, the mean and the half-width of the 95 % confidence interval of the mean from
Student's t distribution, ``t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation; with one seed
the interval is undefined (NaN, drawn without an error bar). Every CSV row carries ``n`` and ``few_seeds`` (true when
``n < 3``), and every caption says so when a plotted cell has fewer than 3 seeds.

Example:
    >>> m, h, n = mean_ci([0.2, 0.3, 0.4])
    >>> round(m, 3), round(h, 3), n
    (0.3, 0.248, 3)
    >>> fmt_ci(30.0, 2.48, 3)
    '30.0 ± 2.5'
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

__all__ = ["MIN_SEEDS", "REAL_DATASETS", "Source", "real_datasets", "fmt_ci", "load_results", "mean_ci", "new_figure", "read_csv", "save_figure",
           "seed_note", "write_csv", "write_markdown_table"]

MIN_SEEDS = 3


@dataclass(frozen=True)
class Source:
    """An experiment config that produces a figure's data, and the overrides of each scale.

    ``cpu`` and ``gpu`` are lists of invocations; each invocation is the list of ``key=value`` overrides of one
    ``feedback run <config> ...`` (several invocations add cells to the same ``runs/<config>/`` folder).
    """

    config: str
    cpu: tuple[tuple[str, ...], ...] = ((),)
    gpu: tuple[tuple[str, ...], ...] = ((),)
    cpu_minutes: float = 0.0  # wall time of the cpu invocations on 2 cores (2 worker processes, one torch thread
    # each), as measured by a from-scratch `feedback paper` on a quiet 2-core machine on 2026-11-26 (46 min in all)
    gpu_minutes: float = 0.0  # estimated wall time of the gpu invocations on one H100
    # GPU scale with --data-root: one invocation per real dataset found there (REAL_DATASETS), ``{dataset}`` and
    # ``{root}`` filled in; ``real_minutes`` per dataset
    real: tuple[str, ...] = ()
    real_minutes: float = 0.0
    note: str = ""


@dataclass
class Run:
    experiment: str
    variant: dict[str, Any]
    metrics: dict[str, float]
    cost: dict[str, Any]
    compute: dict[str, Any]
    seed: int
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    time_s: float = 0.0
    reference: dict[str, Any] = field(default_factory=dict)  # the backbone's published parameter count, if any

    def cfg(self, dotted: str, default: Any = None) -> Any:
        cur: Any = self.config
        for p in dotted.split("."):
            if not isinstance(cur, dict) or p not in cur:
                return default
            cur = cur[p]
        return cur


# torchvision datasets the GPU scale uses from a user's root (``feedback paper --scale gpu --data-root DIR``): the
# folder torchvision's class looks for under the root
REAL_DATASETS = {"mnist": "MNIST", "cifar10": "cifar-10-batches-py"}


def real_datasets(root: str | Path | None) -> list[str]:
    """The names of :data:`REAL_DATASETS` whose folder is under ``root`` (none without a root)."""
    if not root:
        return []
    return [name for name, folder in REAL_DATASETS.items() if (Path(root) / folder).is_dir()]


def load_results(runs: str | Path, experiment: str) -> list[Run]:
    """Finished runs (``result.json`` + ``DONE``) of one experiment under ``runs/<experiment>/``."""
    from experiments.results import collect

    root = Path(runs) / experiment
    if not root.is_dir():
        return []
    out = []
    for r in collect(root):
        run_dir = Path(r["run_dir"])
        cfg_path = run_dir / "config.yaml"
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
        except (OSError, yaml.YAMLError):
            cfg = {}
        out.append(Run(experiment=r.get("experiment", experiment), variant=dict(r.get("variant", {})),
                       metrics=dict(r.get("metrics", {})), cost=dict(r.get("cost", {})),
                       compute=dict(r.get("compute", {})), seed=int(r.get("seed", 0)), run_dir=run_dir,
                       config=cfg or {}, time_s=float(r.get("time_s", 0.0)),
                       reference=dict(r.get("reference") or {})))
    return out


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def mean_ci(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half-width of the t confidence interval, n)``; half-width NaN with fewer than two values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(xs) / n
    if n < 2:
        return m, float("nan"), n
    from scipy.stats import t

    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, float(t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n), n


def fmt_ci(mean: float, half: float, n: int, digits: int = 1) -> str:
    """``"30.0 ± 2.5"``; the bare mean when the interval is undefined; ``"n/a"`` without data."""
    if n == 0 or mean != mean:
        return "n/a"
    if half != half:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def seed_note(ns: Iterable[int]) -> str:
    """The caption's statement about seeds: the range of n, and a warning below :data:`MIN_SEEDS`."""
    ns = sorted({int(n) for n in ns if int(n) > 0})
    if not ns:
        return "No finished runs."
    rng = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    text = f"Mean and 95 % t confidence interval over seeds ({rng} per point)."
    if ns[0] < MIN_SEEDS:
        text += (f" FEWER THAN {MIN_SEEDS} SEEDS for some points: their intervals are wide or (n = 1) undefined; "
                 "do not read differences into them.")
    return text


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    return path


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"
    return v


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`write_csv`, numbers parsed back (empty cells -> NaN for numeric columns)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: _parse(v) for k, v in r.items()})
    return out


def _parse(v: str) -> Any:
    if v == "":
        return float("nan")
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def write_markdown_table(path: Path, heads: Sequence[str], cells: Sequence[Sequence[str]]) -> Path:
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
    path.write_text("\n".join(lines) + "\n")
    return path


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.0, height: float = 3.2, **kw: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def save_figure(fig: Any, out: Path, name: str, *, rect: tuple[float, float, float, float] | None = None) -> list[Path]:
    """``<out>/<name>.pdf`` and ``.png`` (150 dpi); ``rect``: the area ``tight_layout`` may use; closes the figure."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    paths = [out / f"{name}.pdf", out / f"{name}.png"]
    fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=150)
    plt.close(fig)
    return paths


def empty_figure(out: Path, name: str, message: str) -> list[Path]:
    """A figure that says which runs are missing (so the paper always builds)."""
    fig, axes = new_figure(width=5.0, height=2.0)
    ax = axes[0][0]
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=9)
    return save_figure(fig, out, name)
