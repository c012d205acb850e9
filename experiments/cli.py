"""The ``feedback`` command line.

    feedback run <experiment> [key=value ...]   one run, or every cell of its grid (key=a,b adds an axis), here
    feedback sweep <experiment> [key=value ...] --backend local|processes|submitit [--workers N] [--retry-failed]
    feedback results <runs-dir>                 the comparison table of finished runs (mean ± std over seeds)
    feedback list models|feedback|datasets|experiments
    feedback paper [--runs DIR] [--scale cpu|gpu] [--only NAME] [--no-run] [--workers N] [--data-root DIR]   run missing experiments, redraw the paper

Bad input (an unknown experiment, key, model, feedback kind or dataset, malformed YAML, a wrong type) is one line
on stderr naming the problem and the valid choices, exit code 2, and nothing is written: everything is validated
(every grid cell's config, dataset and model are built once) before the first run directory is touched.

Both ``run`` and ``sweep`` skip finished runs, resume unfinished ones from their checkpoints, leave failed ones
alone unless ``--retry-failed``, and exit 1 naming the failed runs. ``--force`` resumes checkpoints even when the
config changed (``train.resume=force``). A run stopped by SIGTERM or SIGINT checkpoints and the command exits with
``128 + signum``; running the same command again resumes it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(2, f"feedback: error: {message} (see `feedback --help`)\n")


def _validate(cells: list[Any], file_cells: list[Any] | None = None, cli_keys: tuple[str, ...] = ()) -> None:
    """Build every distinct dataset and model of the sweep once, so config errors surface before any write.

    ``file_cells``: the experiment file's own grid (without the command line's overrides). A key of the free-form
    argument dicts is valid if a builder of the sweep or of the file's grid takes it, so restricting a grid from
    the command line (``model.backbone=lenet5_relu``) keeps the file's keys for the other backbones; keys the
    command line sets (``cli_keys``, dotted) must fit the sweep itself.
    """
    import json

    from experiments.config import check_kwargs_used
    from experiments.train import (
        backbone_builder,
        build_model,
        data_builder,
        feedback_builder,
        load_data,
        make_task,
        preset_args,
        select_device,
    )

    # every key of the free-form argument dicts must be taken by some builder of the experiment
    first = cells[0].runs[0].cfg
    cfgs = [c.runs[0].cfg for c in cells]
    file_cfgs = [c.runs[0].cfg for c in (file_cells or [])]
    import baselines

    def check(get: Any, name_of: Any, builder_of: Any, where: str, reserved: tuple, generic: tuple = ()) -> None:
        mine = {name_of(c): builder_of(c) for c in cfgs}
        theirs = dict(mine)
        for c in file_cfgs:
            try:
                theirs.setdefault(name_of(c), builder_of(c))
            except Exception:  # a file cell whose model or data the command line replaced
                continue
        in_file = set(get(file_cfgs[0])) if file_cfgs else set()
        in_file -= {k for k in in_file if any(c == f"{where}.{k}" or c.startswith(f"{where}.{k}.")
                                              or c == where for c in cli_keys)}
        args = get(first)
        # keys the command line adds must fit this sweep; keys the file sets may be for the file's other cells
        check_kwargs_used({k: v for k, v in args.items() if k not in in_file}, mine, where, reserved, generic)
        check_kwargs_used({k: v for k, v in args.items() if k in in_file}, theirs, where, reserved, generic)

    check(lambda c: c.data.options, lambda c: c.data.name, data_builder, "data.options", ("seed",))
    check(lambda c: c.model.backbone_args, lambda c: c.model.backbone, backbone_builder, "model.backbone_args",
          ("num_classes", "in_chans"), tuple(baselines.GENERIC_OPTIONS))
    check(lambda c: c.model.feedback_args, lambda c: c.model.feedback, feedback_builder, "model.feedback_args",
          ("shapes",))
    from experiments.config import ConfigError
    from experiments.evaluate import attacks_module
    from experiments.tracking import tensorboard_available

    for cfg in cfgs:
        if cfg.log.tensorboard and not tensorboard_available():
            raise ConfigError("log.tensorboard=true needs the tensorboard package (pip install tensorboard)")
        if cfg.eval.attacks:
            mod = attacks_module()
            if mod is None:
                raise ConfigError("eval.attacks needs experiments.attacks, which this installation does not have")
            import inspect

            def is_attack(fn: Any) -> bool:  # the contract: attack(forward, x, y, *, eps, loss_fn, ...)
                try:
                    return callable(fn) and {"eps", "loss_fn"} <= set(inspect.signature(fn).parameters)
                except (TypeError, ValueError):
                    return False

            valid = sorted(n for n in dir(mod) if not n.startswith("_") and is_attack(getattr(mod, n)))
            for name in cfg.eval.attacks:
                if name not in valid:
                    raise ConfigError(f"unknown attack '{name}' in eval.attacks; choose from: {', '.join(valid)}")
    datasets: dict[str, Any] = {}
    models: set[str] = set()
    for cell in cells:
        for spec in cell.runs[:1]:
            cfg = spec.cfg
            select_device(cfg.train.device)
            dkey = json.dumps([cfg.data.name, cfg.data.seed, cfg.data.options, preset_args(cfg)[1]], sort_keys=True,
                              default=str)
            if dkey not in datasets:
                datasets[dkey] = load_data(cfg)
            make_task(cfg, datasets[dkey])  # the task fits the data; eval options the data can serve
            mkey = dkey + json.dumps(
                [cfg.model.backbone, cfg.model.backbone_args, cfg.model.feedback, cfg.model.feedback_args,
                 cfg.model.steps, cfg.model.readout, cfg.model.norm_stats, cfg.model.preset], sort_keys=True, default=str)
            if mkey not in models:
                build_model(cfg, datasets[dkey])
                models.add(mkey)


def _sweep_command(args: argparse.Namespace, backend: str) -> int:
    from experiments.config import load_experiment
    from experiments.launch import sweep
    from experiments.results import collect, format_table, summarize, write_tables
    from experiments.sweep import expand_grid

    overrides = list(args.overrides) + (["train.resume=force"] if args.force else [])
    cfg, grid = load_experiment(args.experiment, overrides)
    cells = expand_grid(cfg, grid)
    try:  # the file's own grid: keys it sets for cells the command line left out stay valid
        file_cells = expand_grid(*load_experiment(args.experiment, []))
    except Exception:
        file_cells = []
    _validate(cells, file_cells, tuple(o.split("=", 1)[0].strip() for o in overrides if "=" in o))
    n_runs = sum(len(c.runs) for c in cells)
    root = Path(cfg.runs_dir) / cfg.name
    print(f"feedback: {cfg.name}: {len(cells)} cell(s) x {len(cells[0].runs)} seed(s) = {n_runs} run(s) in {root}"
          + (f" ({backend} backend)" if backend != "local" else ""))
    kw = {}
    if backend == "submitit":
        kw = {"cluster": args.cluster, "timeout_min": args.timeout_min, "partition": args.partition,
              "gpus_per_node": args.gpus_per_node, "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb,
              "array_parallelism": args.array_parallelism}
    summary = sweep(cells, backend=backend, workers=getattr(args, "workers", 1), retry_failed=args.retry_failed,
                    progress=cfg.log.progress, **kw)
    keys, rows = summarize([r for r in collect(root) if r["cell"] in {c.name for c in cells}])
    print()
    print(format_table(keys, rows))
    if rows:
        paths = write_tables(root, keys, rows)
        print(f"\ntable written to {paths[0]} and {paths[1]}")
    extra = "".join(f", {summary[k]} {k}" for k in ("busy", "stopped") if summary.get(k))
    print(f"runs: {summary['done']} ran, {summary['skipped']} already done (skipped), {summary['failed']} failed{extra}")
    for err in summary["errors"]:
        print(f"  failed: {err}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def cmd_run(args: argparse.Namespace) -> int:
    return _sweep_command(args, "local")


def cmd_sweep(args: argparse.Namespace) -> int:
    return _sweep_command(args, "local" if args.backend == "inprocess" else args.backend)


def cmd_results(args: argparse.Namespace) -> int:
    from experiments.config import ConfigError
    from experiments.results import collect, format_table, summarize

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise ConfigError(f"runs folder '{root}' does not exist")
    keys, rows = summarize(collect(root))
    if not rows:
        raise ConfigError(f"no finished runs (result.json + DONE) under '{root}'")
    print(format_table(keys, rows, markdown=args.markdown))
    return 0


def _list_models(pattern: str) -> int:
    """name, family, parameters (default configuration), default input, input size range and source of each model."""
    import baselines
    from experiments import routing_models  # noqa: F401  (registers rims, brims, meta_rims)

    rows = [("name", "family", "params", "input", "sizes", "source")]
    for name in baselines.list_models(pattern):
        info = baselines.model_info(name)
        size = info.get("input_size") or ()
        lo, hi = info.get("min_input_size"), info.get("max_input_size")
        sizes = f"{lo or '?'}-{hi or ''}" if (lo or hi) else "-"
        rows.append((name, str(info.get("family") or ""), f"{info.get('num_params', 0):,}",
                     "x".join(str(v) for v in size), sizes, str(info.get("source") or "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import baselines
    import feedback
    from experiments.config import list_experiments
    from experiments.data import list_datasets

    if args.what == "models":
        return _list_models(args.pattern)
    items = {
        "models": baselines.list_models,
        "feedback": feedback.list_feedback,
        "datasets": list_datasets,
        "experiments": list_experiments,
    }[args.what]()
    print("\n".join(items))
    return 0


def cmd_attend(args: argparse.Namespace) -> int:
    from experiments.attend import run_attend

    out = Path(args.out) if args.out else Path(args.run_dir) / "attend"
    for key, path in run_attend(args.run_dir, args.method, args.images, out, extras=args.extras,
                                wandb_mode=args.wandb, device=args.device).items():
        print(f"{key}: {path}")
    return 0


def cmd_tool(args: argparse.Namespace) -> int:
    from experiments.tools.run import main as tool_main

    return tool_main([args.tool] + (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else []))


def cmd_paper(args: argparse.Namespace) -> int:
    """Runs ``python -m paper.make`` in a subprocess: nothing imports ``paper`` (DESIGN.md), not even the CLI."""
    import subprocess

    argv = [sys.executable, "-m", "paper.make", "--runs", args.runs, "--scale", args.scale]
    argv += (["--only", args.only] if args.only else []) + (["--no-run"] if args.no_run else [])
    argv += (["--dry-run"] if args.dry_run else []) + (["--out", args.out] if args.out else [])
    argv += ["--workers", str(args.workers)] if args.workers is not None else []
    argv += ["--data-root", args.data_root] if args.data_root else []
    return subprocess.call(argv)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="feedback", description="Top-down feedback experiments: run, sweep, compare, list.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("experiment", help="a name from `feedback list experiments`, or a path to a YAML file")
        q.add_argument("overrides", nargs="*", help="key=value overrides; key=a,b makes a grid axis")
        q.add_argument("--retry-failed", action="store_true", help="run again the runs that failed before")
        q.add_argument("--force", action="store_true",
                       help="resume checkpoints even if the config changed (train.resume=force)")

    r = sub.add_parser("run", help="run an experiment (every cell of its grid) in this process")
    common(r)
    r.set_defaults(fn=cmd_run)
    w = sub.add_parser("sweep", help="run an experiment's grid on a backend: local, processes or submitit (SLURM)")
    common(w)
    w.add_argument("--backend", default="local", choices=["local", "inprocess", "processes", "submitit"],
                   help="local (in this process, default), processes (--workers local processes), submitit")
    w.add_argument("--workers", type=int, default=2, help="processes backend: number of worker processes")
    w.add_argument("--cluster", default=None, choices=["slurm", "local", "debug"],
                   help="submitit: where jobs run (default: SLURM if available, else local)")
    w.add_argument("--timeout-min", type=int, default=60, help="submitit: time limit per job in minutes")
    w.add_argument("--partition", default=None, help="submitit: SLURM partition")
    w.add_argument("--gpus-per-node", type=int, default=0, help="submitit: GPUs per job")
    w.add_argument("--cpus-per-task", type=int, default=2, help="submitit: CPUs per job")
    w.add_argument("--mem-gb", type=float, default=None, help="submitit: memory per job in GB")
    w.add_argument("--array-parallelism", type=int, default=64, help="submitit: jobs of the array running at once")
    w.set_defaults(fn=cmd_sweep)
    s = sub.add_parser("results", help="comparison table of finished runs")
    s.add_argument("runs_dir", help="a runs folder (e.g. runs/quickstart)")
    s.add_argument("--markdown", action="store_true", help="print a Markdown table")
    s.set_defaults(fn=cmd_results)
    a = sub.add_parser("attend", help="attention maps of a trained run, saved as PNG grids")
    a.add_argument("run_dir", help="a finished run directory (config.yaml + checkpoints/last.pt)")
    a.add_argument("--method", default="excitation", help="a readout (feedback.readout.METHODS), or name@layer")
    a.add_argument("--images", type=int, default=8, help="test images to draw")
    a.add_argument("--out", default=None, help="output folder (default: <run_dir>/attend)")
    a.add_argument("--extras", action="store_true", help="also activations, first-layer weights, t-SNE, occlusion")
    a.add_argument("--wandb", choices=["disabled", "offline", "online"], default="disabled")
    a.add_argument("--device", default="cpu")
    a.set_defaults(fn=cmd_attend)
    from experiments.tools.run import TOOLS

    tl = sub.add_parser("tool", help=f"research tools: {', '.join(TOOLS)}")
    tl.add_argument("tool", choices=list(TOOLS))
    tl.add_argument("--quick", action="store_true", help="the small, minutes-long version")
    tl.add_argument("--out", default=None, help="output folder (default: runs/tools/<tool>/...)")
    tl.set_defaults(fn=cmd_tool)
    pp = sub.add_parser("paper", help="run the experiments the paper misses, then regenerate every figure and paper.md")
    pp.add_argument("--runs", default="runs", help="the runs folder (default: runs)")
    pp.add_argument("--scale", choices=["cpu", "gpu"], default="cpu", help="cpu (2 cores, ~90 min) or gpu (full configs)")
    pp.add_argument("--only", default=None, help="comma-separated figures (fig_steps, tab_pointing, ...)")
    pp.add_argument("--no-run", action="store_true", help="only redraw from the existing runs")
    pp.add_argument("--dry-run", action="store_true", help="print the feedback run commands and the time estimate")
    pp.add_argument("--workers", type=int, default=None, help="parallel runs per grid (default: 2 at cpu scale)")
    pp.add_argument("--data-root", default=None, help="gpu scale: a torchvision root with MNIST/ or "
                    "cifar-10-batches-py/; Figure 1 adds panels for them")
    pp.add_argument("--out", default=None, help="where paper.md and figures/ go (default: the paper/ folder)")
    pp.set_defaults(fn=cmd_paper)
    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", choices=["models", "feedback", "datasets", "experiments"])
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern for `list models` (e.g. 'resnet*')")
    ls.set_defaults(fn=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    from experiments.config import ConfigError

    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"feedback: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("feedback: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
