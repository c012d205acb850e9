"""Regenerate the paper: run the experiments that are missing, then every figure, table and ``paper.md``.

    python -m paper.make [--runs DIR] [--scale cpu|gpu] [--only NAME] [--no-run] [--dry-run] [--out DIR]

(``feedback paper ...`` runs this module in a subprocess: nothing imports :mod:`paper`.)

1. **Runs.** Each figure module declares its experiment configs and, per scale, the ``key=value`` overrides of the
   ``feedback run <config>`` invocations that produce its data (``SOURCES``). Every invocation goes through the
   project's runner in a subprocess (``python -m experiments.cli run <config> ... runs_dir=<DIR>``), which skips
   finished runs and resumes unfinished ones, so a second ``make`` after a complete one trains nothing. A failed
   invocation is reported and the figures are still drawn from what exists.
2. **Figures.** Each module's ``make(runs, out)`` reads run directories only and writes ``<out>/figures/<name>.pdf``,
   ``.png`` and ``.csv`` (and ``.md`` for tables).
3. **Paper.** ``template.md`` with every ``{{name.key}}`` replaced by ``facts(rows)`` of that module, computed from
   the CSV it just wrote (read back from disk): the numbers in ``paper.md`` are never typed by hand.

Scales: ``cpu`` (the default) trains fewer epochs, fewer backbones and smaller evaluation sets (2 CPU cores, one
torch thread per run; the estimate per config is in each ``Source.cpu_minutes``); ``gpu`` runs the configs as
written (3 seeds) on one GPU. Real datasets (CIFAR-10, MNIST) are not part of either scale: the configs use bundled
and generated data; see ``paper.md``'s "Scales" section.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from paper.common import read_csv, real_datasets

FIGURES = ["fig_steps", "tab_pointing", "fig_robustness", "fig_routing", "fig_perceiver", "tab_cost", "tab_zoo",
           "tab_rcn", "tab_tdbu"]
SCALE_COMMON = {"cpu": ["log.wandb=disabled", "log.progress=false"], "gpu": ["log.progress=false"]}
PAPER_DIR = Path(__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\{\{(\w+)\.(\w+)\}\}")


def modules(only: str | None = None) -> list[Any]:
    names = FIGURES if not only else [n.strip() for n in only.split(",") if n.strip()]
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise SystemExit(f"paper: error: unknown figure {', '.join(bad)}; choose from: {', '.join(FIGURES)}")
    return [importlib.import_module(f"paper.{n}") for n in names]


def invocations(scale: str, runs: str | Path, only: str | None = None,
                data_root: str | Path | None = None) -> list[tuple[str, list[str]]]:
    """``(config, overrides)`` of every ``feedback run`` the chosen figures need at ``scale`` (at ``gpu`` with a
    ``data_root``, also each source's ``real`` invocation for every real dataset found there)."""
    out: list[tuple[str, list[str]]] = []
    found = real_datasets(data_root) if scale == "gpu" else []
    for mod in modules(only):
        for src in getattr(mod, "SOURCES", []):
            ovs = list(src.cpu if scale == "cpu" else src.gpu)
            if src.real:
                ovs += [tuple(o.format(dataset=d, root=data_root) for o in src.real) for d in found]
            for ov in ovs:
                item = (src.config, [*ov, *SCALE_COMMON[scale], f"runs_dir={runs}"])
                if item not in out:
                    out.append(item)
    return out


def estimate_minutes(scale: str, only: str | None = None, data_root: str | Path | None = None) -> float:
    n_real = len(real_datasets(data_root)) if scale == "gpu" else 0
    return sum(getattr(s, f"{scale}_minutes") + n_real * (s.real_minutes if s.real else 0.0)
               for m in modules(only) for s in getattr(m, "SOURCES", []))


def run_missing(runs: Path, scale: str, only: str | None = None, *, dry_run: bool = False,
                workers: int = 1, data_root: str | Path | None = None) -> list[str]:
    """Run every invocation through the runner (it skips finished runs); returns the failed ones.

    ``workers > 1``: each invocation's grid goes through ``feedback sweep --backend processes --workers N`` (one
    torch thread per worker), so the cells of a grid share the cores; ``1``: ``feedback run`` in one process.
    """
    failed = []
    env = dict(os.environ)
    if scale == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    verb = ["sweep", "--backend", "processes", "--workers", str(workers)] if workers > 1 else ["run"]
    for config, ov in invocations(scale, runs, only, data_root):
        cmd = [sys.executable, "-m", "experiments.cli", *verb, config, *ov]
        print(f"paper: $ feedback {' '.join(verb)} " + " ".join([config, *ov]), flush=True)
        if dry_run:
            continue
        t0 = time.time()
        rc = subprocess.call(cmd, env=env)
        print(f"paper: {config}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(f"{config} {' '.join(ov)} (exit {rc})")
    return failed


def _sources_text(mod: Any, scale: str) -> str:
    srcs = getattr(mod, "SOURCES", [])
    if not srcs:
        return f"Data: the runs of {', '.join(f'`{c}`' for c in getattr(mod, 'CONFIGS', []))} (no runs of its own)."
    parts = []
    for s in srcs:
        ovs = list(s.cpu if scale == "cpu" else s.gpu)
        cmds = "; ".join("`feedback run " + " ".join([s.config, *ov]) + "`" for ov in ovs)
        if s.real:
            cmds = "; ".join(c for c in (cmds, "with `--scale gpu --data-root DIR`, per real dataset found: "
                                         "`feedback run " + " ".join([s.config, *s.real]) + "`") if c)
        parts.append(f"`experiments/configs/{s.config}.yaml` ({scale} scale: {cmds})")
    return "Data: " + "; ".join(parts) + "."


def build(runs: Path, out: Path, only: str | None = None, *, scale: str = "cpu",
          template: Path | None = None) -> dict[str, Any]:
    """Every figure of ``only`` (default: all), then ``<out>/paper.md``. Returns ``{name: {"csv", "files"}}``."""
    runs, out = Path(runs), Path(out)
    figs = out / "figures"
    made: dict[str, Any] = {}
    facts: dict[str, dict[str, str]] = {}
    for mod in modules(only):
        name = mod.NAME
        made[name] = mod.make(runs, figs)
        rows = read_csv(made[name]["csv"])  # the paper's numbers come from the CSV on disk
        facts[name] = {k: str(v) for k, v in mod.facts(rows).items()}
        facts[name]["image"] = f"figures/{name}.png"
        facts[name]["csv"] = f"figures/{name}.csv"
        facts[name]["sources"] = _sources_text(mod, scale)
        print(f"paper: {name}: {len(rows)} CSV rows -> {', '.join(str(p) for p in made[name]['files'])}", flush=True)
    text = (template or PAPER_DIR / "template.md").read_text()

    def fill(m: re.Match) -> str:
        mod, key = m.group(1), m.group(2)
        if mod == "paper":
            return {"runs": str(runs), "scale": scale,
                    "cpu_minutes": f"{estimate_minutes('cpu'):.0f}", "gpu_minutes": f"{estimate_minutes('gpu'):.0f}",
                    "date": time.strftime("%Y-%m-%d")}.get(key, m.group(0))
        if mod not in facts:
            return f"(not generated: `{mod}` not selected)"
        return facts[mod].get(key, "(no data)")

    (out / "paper.md").write_text(_PLACEHOLDER.sub(fill, text))
    made["paper"] = out / "paper.md"
    print(f"paper: wrote {out / 'paper.md'}", flush=True)
    return made


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="feedback paper", description="Run the missing experiments and regenerate "
                                "every figure, table and paper.md from the run directories.")
    p.add_argument("--runs", default="runs", help="the runs folder (default: runs)")
    p.add_argument("--scale", choices=["cpu", "gpu"], default="cpu", help="cpu (laptop, ~90 min) or gpu (configs as "
                   "written, 3 seeds)")
    p.add_argument("--only", default=None, help=f"comma-separated figures: {', '.join(FIGURES)}")
    p.add_argument("--no-run", action="store_true", help="only regenerate figures and paper from existing runs")
    p.add_argument("--data-root", default=None, help="gpu scale: a torchvision root; Figure 1 adds MNIST and "
                   "CIFAR-10 panels for those found there (MNIST/, cifar-10-batches-py/)")
    p.add_argument("--workers", type=int, default=None, help="parallel runs per grid (default: 2 at cpu scale, "
                   "one per core; 1 at gpu scale)")
    p.add_argument("--dry-run", action="store_true", help="print the feedback run commands and the estimate, run none")
    p.add_argument("--out", default=str(PAPER_DIR), help="where paper.md and figures/ go (default: the paper package)")
    args = p.parse_args(argv)
    runs = Path(args.runs)
    failed: list[str] = []
    if not args.no_run:
        if args.data_root and args.scale != "gpu":
            p.error("--data-root is for --scale gpu (the CPU scale uses bundled and generated data only)")
        if args.data_root and not real_datasets(args.data_root):
            p.error(f"--data-root {args.data_root}: none of MNIST/, cifar-10-batches-py/ is there (torchvision's "
                    "folders; download them with torchvision first)")
        est = estimate_minutes(args.scale, args.only, args.data_root)
        print(f"paper: {args.scale} scale, estimated {est:.0f} min of runs (from scratch) into {runs}", flush=True)
        workers = args.workers if args.workers is not None else (2 if args.scale == "cpu" else 1)
        if workers < 1:
            p.error(f"--workers must be >= 1, got {workers}")
        failed = run_missing(runs, args.scale, args.only, dry_run=args.dry_run, workers=workers,
                             data_root=args.data_root)
        if args.dry_run:
            return 0
    build(runs, Path(args.out), args.only, scale=args.scale)
    for f in failed:
        print(f"paper: failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
