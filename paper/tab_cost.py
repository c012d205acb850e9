"""Table 6 (and its chart): the cost of feedback: added parameters, FLOPs and training time per step, relative to
the backbone.

Data: the runs of Figure 1 (:mod:`paper.fig_steps`: the ``*_ablation`` configs); no runs of its own. From each run's
``result.json``: ``cost.backbone_params``, ``cost.feedback_params``, ``cost.backbone_flops`` and ``cost.flops`` (one
forward of one input through all steps, ``torch.utils.flop_counter``) and ``compute.train_step_ms`` (mean wall time
of a training step on the machine that ran it). Ratios divide by the same backbone's ``none`` runs (same epochs).
Wall times are as noisy as the machine: on shared CPU cores treat ratios within ~30 % as equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paper import fig_steps
from paper.common import (
    MIN_SEEDS,
    empty_figure,
    load_results,
    mean_ci,
    new_figure,
    save_figure,
    seed_note,
    write_csv,
    write_markdown_table,
)

NAME = "tab_cost"
TITLE = "The cost of feedback"
SOURCES: list = []  # reads the runs of fig_steps
CONFIGS = fig_steps.CONFIGS
COLUMNS = ["backbone", "epochs", "feedback", "steps", "n", "few_seeds", "params", "feedback_params", "rel_params",
           "mflops", "rel_flops", "step_ms", "step_ms_ci95", "rel_time", "device"]


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[int, Any]] = {}
    for src in fig_steps.SOURCES:
        for r in load_results(runs, src.config):
            key = (r.cfg("model.backbone", "?"), int(r.cfg("train.epochs", 0)), r.cfg("model.feedback", "none"),
                   int(r.cfg("model.steps", 1)))
            groups.setdefault(key, {}).setdefault(r.seed, r)
    rows = []
    for (bb, ep, fb, steps), by_seed in groups.items():
        rs = list(by_seed.values())
        c = rs[0].cost
        ms, ms_h, n = mean_ci([r.compute.get("train_step_ms") for r in rs if r.compute.get("train_step_ms")])
        rows.append({"backbone": bb, "epochs": ep, "feedback": fb, "steps": steps, "n": len(rs),
                     "few_seeds": len(rs) < MIN_SEEDS, "params": c.get("backbone_params", 0) + c.get("feedback_params", 0),
                     "feedback_params": c.get("feedback_params", 0), "backbone_params": c.get("backbone_params", 0),
                     "mflops": c.get("flops", 0) / 1e6, "backbone_mflops": c.get("backbone_flops", 0) / 1e6,
                     "step_ms": ms, "step_ms_ci95": ms_h, "device": rs[0].compute.get("device", "")})
    for r in rows:
        base = next((b for b in rows if (b["backbone"], b["epochs"], b["feedback"], b["steps"])
                     == (r["backbone"], r["epochs"], "none", 1)), None)
        r["rel_params"] = r["params"] / r["backbone_params"] if r["backbone_params"] else float("nan")
        r["rel_flops"] = r["mflops"] / r["backbone_mflops"] if r["backbone_mflops"] else float("nan")
        r["rel_time"] = r["step_ms"] / base["step_ms"] if base and base["step_ms"] == base["step_ms"] else float("nan")
    rows.sort(key=lambda r: (r["backbone"], r["epochs"], r["feedback"] != "none", r["feedback"], r["steps"]))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        return {"csv": csv_path, "files": empty_figure(out, NAME, f"no runs of {', '.join(CONFIGS)} under {runs}")}
    md = write_markdown_table(out / f"{NAME}.md", ["backbone", "feedback", "T", "+params", "x params", "MFLOPs",
                                                   "x FLOPs", "ms/step", "x time"],
                              [[r["backbone"], r["feedback"], r["steps"], f"{r['feedback_params']:,}",
                                f"{r['rel_params']:.2f}", f"{r['mflops']:.1f}", f"{r['rel_flops']:.2f}",
                                f"{r['step_ms']:.1f}", f"{r['rel_time']:.2f}"] for r in rows])
    sel = [r for r in rows if not (r["feedback"] == "none") and r["steps"] > 1]
    import numpy as np

    fig, axes = new_figure(1, 1, width=max(5.0, 0.35 * len(sel) + 2), height=3.6)
    ax = axes[0][0]
    x = np.arange(len(sel))
    ax.bar(x - 0.27, [r["rel_params"] for r in sel], width=0.27, label="parameters")
    ax.bar(x, [r["rel_flops"] for r in sel], width=0.27, label="FLOPs per input")
    half = [0.0 if (r["step_ms_ci95"] != r["step_ms_ci95"] or not r["step_ms"]) else
            r["step_ms_ci95"] / r["step_ms"] * r["rel_time"] for r in sel]
    # on a log axis an interval reaching 0 or below cannot be drawn: its lower arm stops at 1 % of the bar
    lower = [min(h, 0.99 * r["rel_time"]) for h, r in zip(half, sel)]
    ax.bar(x + 0.27, [r["rel_time"] for r in sel], width=0.27, label="time per training step",
           yerr=[lower, half], capsize=2)
    ax.axhline(1, color="black", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['backbone']}\n{r['feedback']} T={r['steps']}" for r in sel], rotation=60, ha="right",
                       fontsize=7)
    ax.set_ylabel("ratio to the backbone alone")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return {"csv": csv_path, "files": save_figure(fig, out, NAME) + [md]}


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "table": "", "seeds": seed_note([])}
    sel = [r for r in rows if r["feedback"] != "none" and r["steps"] > 1]
    table = ["| backbone | feedback | T | +params | x params | x FLOPs | x time |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['backbone']} | {r['feedback']} | {r['steps']} | {r['feedback_params']:,} | {r['rel_params']:.2f} "
              f"| {r['rel_flops']:.2f} | {r['rel_time']:.2f} |" for r in sel]
    cheap = min(sel, key=lambda r: r["rel_flops"], default=None)
    dear = max(sel, key=lambda r: r["rel_flops"], default=None)
    text = ""
    if cheap and dear:
        text = (f"FLOPs per input grow from x{cheap['rel_flops']:.2f} ({cheap['feedback']}, T={cheap['steps']}, "
                f"{cheap['backbone']}) to x{dear['rel_flops']:.2f} ({dear['feedback']}, T={dear['steps']}, "
                f"{dear['backbone']}) of the backbone's; every step re-runs the backbone, so T steps cost at least "
                f"T times its forward.")
    devices = sorted({str(r["device"]) for r in rows})
    return {"summary": text, "table": "\n".join(table), "devices": ", ".join(devices),
            "seeds": seed_note(r["n"] for r in rows)}
