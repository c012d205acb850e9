"""The ``feedback`` command line.

    feedback run <experiment> [key=value ...]   one run, or every cell of its grid (key=a,b adds an axis)
    feedback results <runs-dir>                 the comparison table of finished runs (mean ± std over seeds)
    feedback list models|feedback|datasets|experiments

Bad input (an unknown experiment, key, model, feedback kind or dataset, malformed YAML, a wrong type) is one line
on stderr naming the problem and the valid choices, exit code 2, and nothing is written: everything is validated
(every grid cell's config, dataset and model are built once) before the first run directory is touched.
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


def _validate(cells: list[Any]) -> None:
    """Build every distinct dataset and model of the sweep once, so config errors surface before any write."""
    import json

    from experiments.config import check_kwargs_used
    from experiments.train import (
        backbone_builder,
        build_model,
        data_builder,
        feedback_builder,
        load_data,
        select_device,
    )

    # every key of the free-form argument dicts must be taken by some builder of the experiment
    first = cells[0].runs[0].cfg
    cfgs = [c.runs[0].cfg for c in cells]
    check_kwargs_used(first.data.options, {c.data.name: data_builder(c) for c in cfgs}, "data.options", ("seed",))
    check_kwargs_used(first.model.backbone_args, {c.model.backbone: backbone_builder(c) for c in cfgs},
                      "model.backbone_args", ("num_classes", "in_chans"))
    check_kwargs_used(first.model.feedback_args, {c.model.feedback: feedback_builder(c) for c in cfgs},
                      "model.feedback_args", ("shapes",))
    datasets: dict[str, Any] = {}
    models: set[str] = set()
    for cell in cells:
        for spec in cell.runs[:1]:
            cfg = spec.cfg
            select_device(cfg.train.device)
            dkey = json.dumps([cfg.data.name, cfg.data.seed, cfg.data.options], sort_keys=True, default=str)
            if dkey not in datasets:
                datasets[dkey] = load_data(cfg)
            mkey = dkey + json.dumps(
                [cfg.model.backbone, cfg.model.backbone_args, cfg.model.feedback, cfg.model.feedback_args,
                 cfg.model.steps, cfg.model.readout, cfg.model.norm_stats], sort_keys=True, default=str)
            if mkey not in models:
                build_model(cfg, datasets[dkey])
                models.add(mkey)


def cmd_run(args: argparse.Namespace) -> int:
    from experiments.config import load_experiment
    from experiments.results import collect, format_table, summarize, write_tables
    from experiments.sweep import expand_grid, run_sweep
    from experiments.train import train_run

    cfg, grid = load_experiment(args.experiment, args.overrides)
    cells = expand_grid(cfg, grid)
    _validate(cells)
    n_runs = sum(len(c.runs) for c in cells)
    root = Path(cfg.runs_dir) / cfg.name
    print(f"feedback: {cfg.name}: {len(cells)} cell(s) x {len(cells[0].runs)} seed(s) = {n_runs} run(s) in {root}")
    summary = run_sweep(cells, train_run, progress=cfg.log.progress)
    keys, rows = summarize([r for r in collect(root) if r["cell"] in {c.name for c in cells}])
    print()
    print(format_table(keys, rows))
    if rows:
        paths = write_tables(root, keys, rows)
        print(f"\ntable written to {paths[0]} and {paths[1]}")
    print(f"runs: {summary['done']} ran, {summary['skipped']} already done (skipped), {summary['failed']} failed")
    for err in summary["errors"]:
        print(f"  failed: {err}", file=sys.stderr)
    return 1 if summary["failed"] else 0


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


def cmd_list(args: argparse.Namespace) -> int:
    import baselines
    import feedback
    from experiments.config import list_experiments
    from experiments.data import list_datasets

    items = {
        "models": baselines.list_models,
        "feedback": feedback.list_feedback,
        "datasets": list_datasets,
        "experiments": list_experiments,
    }[args.what]()
    print("\n".join(items))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="feedback", description="Top-down feedback experiments: run, compare, list.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run an experiment (every cell of its grid)")
    r.add_argument("experiment", help="a name from `feedback list experiments`, or a path to a YAML file")
    r.add_argument("overrides", nargs="*", help="key=value overrides; key=a,b makes a grid axis")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("results", help="comparison table of finished runs")
    s.add_argument("runs_dir", help="a runs folder (e.g. runs/quickstart)")
    s.add_argument("--markdown", action="store_true", help="print a Markdown table")
    s.set_defaults(fn=cmd_results)
    ls = sub.add_parser("list", help="list registered names")
    ls.add_argument("what", choices=["models", "feedback", "datasets", "experiments"])
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
