"""Table 9 (and its chart): combined top-down/bottom-up segmentation against each part alone.

Data: ``experiments/configs/tdbu_segmentation.yaml`` (cluttered digit scenes, figure = any digit, at a light and a
heavy clutter level) and ``experiments/configs/tdbu_segmentation_shapes.yaml`` (shape scenes, figure = the circles),
each a grid over ``model.backbone_args.mode``: ``bottom_up`` (graph-based segments that contrast with the image
border, class-blind), ``top_down`` (the thresholded map of class-specific fragments), ``combined`` (an s-t minimum cut
over the segments with the fragment map as the unary term; Borenstein & Ullman 2008). The model is fitted without
gradients and deterministically, so replicates are data seeds (``data.seed`` 0, 1, 2: other scenes; training seed 0).
Metric: test mean IoU over {ground, figure} in %, mean and 95 % interval over the data seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paper.common import (
    MIN_SEEDS,
    Source,
    empty_figure,
    fmt_ci,
    load_results,
    mean_ci,
    new_figure,
    save_figure,
    seed_note,
    write_csv,
    write_markdown_table,
)

NAME = "tab_tdbu"
TITLE = "Combined top-down/bottom-up segmentation"
_SEEDS = "data.seed=0,1,2"
SOURCES = [
    Source("tdbu_segmentation", cpu=((_SEEDS,),), gpu=((_SEEDS,),), cpu_minutes=2.5, gpu_minutes=5.0),
    Source("tdbu_segmentation_shapes", cpu=((_SEEDS,),), gpu=((_SEEDS,),), cpu_minutes=1.0, gpu_minutes=2.0),
]
CONFIGS = [s.config for s in SOURCES]
COLUMNS = ["dataset", "mode", "n", "few_seeds", "mean", "ci95", "pixel_acc"]
MODES = ["bottom_up", "top_down", "combined"]


def _dataset(r: Any) -> str:
    if r.experiment == "tdbu_segmentation_shapes":
        return f"shapes ({r.cfg('data.options.figure', 'circle')}s)"
    return f"digits, clutter {r.cfg('data.options.clutter', '?')} x {r.cfg('data.options.clutter_size', '?')} px"


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    vals: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for exp in CONFIGS:
        for r in load_results(runs, exp):
            if "miou" not in r.metrics:
                continue
            key = (_dataset(r), str(r.cfg("model.backbone_args.mode", "?")))
            vals.setdefault(key, {})[int(r.cfg("data.seed", 0))] = (100 * float(r.metrics["miou"]),
                                                                    100 * float(r.metrics.get("pixel_acc", "nan")))
    rows = []
    for (ds, mode), by_seed in vals.items():
        mean, h, n = mean_ci([v[0] for v in by_seed.values()])
        acc, _, _ = mean_ci([v[1] for v in by_seed.values()])
        rows.append({"dataset": ds, "mode": mode, "n": n, "few_seeds": n < MIN_SEEDS, "mean": mean, "ci95": h,
                     "pixel_acc": acc})
    rows.sort(key=lambda r: (r["dataset"], MODES.index(r["mode"]) if r["mode"] in MODES else 9))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        return {"csv": csv_path, "files": empty_figure(out, NAME, f"no runs of {', '.join(CONFIGS)} under {runs}")}
    md = write_markdown_table(out / f"{NAME}.md", ["dataset", "mode", "n", "mIoU %", "pixel acc %"],
                              [[r["dataset"], r["mode"], r["n"], fmt_ci(r["mean"], r["ci95"], r["n"]),
                                f"{r['pixel_acc']:.1f}"] for r in rows])
    import numpy as np

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = new_figure(1, 1, width=max(4.5, 1.6 * len(datasets) + 1.5), height=3.3)
    ax = axes[0][0]
    x = np.arange(len(datasets))
    for j, mode in enumerate(MODES):
        sel = [next((r for r in rows if r["dataset"] == d and r["mode"] == mode), None) for d in datasets]
        ax.bar(x + (j - 1) * 0.27, [r["mean"] if r else 0 for r in sel], width=0.27, label=mode.replace("_", "-"),
               yerr=[0 if (r is None or r["ci95"] != r["ci95"]) else r["ci95"] for r in sel], capsize=3)
    ax.set_xticks(x)
    ax.set_xticklabels(datasets, fontsize=8)
    ax.set_ylabel("test mIoU % (figure/ground)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return {"csv": csv_path, "files": save_figure(fig, out, NAME) + [md]}


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "table": "", "seeds": seed_note([])}
    table = ["| dataset | bottom-up | top-down | combined |", "|---|---|---|---|"]
    lines = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        cell = {r["mode"]: r for r in rows if r["dataset"] == ds}
        table.append(f"| {ds} | " + " | ".join(fmt_ci(cell[m]["mean"], cell[m]["ci95"], cell[m]["n"]) if m in cell
                                                else "-" for m in MODES) + " |")
        if all(m in cell for m in MODES):
            c = cell["combined"]
            above = [m.replace("_", "-") for m in MODES[:2]
                     if c["mean"] - c["ci95"] > cell[m]["mean"] + cell[m]["ci95"]]
            best_part = max(MODES[:2], key=lambda m: cell[m]["mean"])
            lines.append(f"{ds}: combined {c['mean']:.1f} % against {best_part.replace('_', '-')} alone "
                         f"{cell[best_part]['mean']:.1f} % ({c['mean'] - cell[best_part]['mean']:+.1f} points); "
                         f"intervals disjoint from: {', '.join(above) or 'neither part'}")
    return {"summary": "\n".join(f"- {s}" for s in lines), "table": "\n".join(table),
            "seeds": seed_note(r["n"] for r in rows)}
