"""Table 8 (and its chart): data efficiency of the Recursive Cortical Network against trained networks.

Data: ``experiments/configs/rcn_data_efficiency_rcn.yaml`` (RCN, George et al. 2017: learnt by dictionary building,
no gradients) and ``experiments/configs/rcn_data_efficiency.yaml`` (LeNet-5 with ReLU, a narrow ResNet-18, and the
ResNet-18 with deconvolutional feedback at 2 steps; 30 epochs), on scikit-learn's digits at 32 px with 10, 20, 100
and all (~135; GPU scale only) training examples per class. Replicates are data seeds (``data.seed`` 0, 1, 2: the train/test split
and the per-class subset differ; training seed 0), because RCN's fit is deterministic: a training seed would
replicate nothing. Test accuracy in % on the split's 450 test digits; mean and 95 % interval over the data seeds.
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

NAME = "tab_rcn"
TITLE = "Data efficiency: RCN against trained networks"
# the CPU scale leaves out "all" (~135 per class): the ResNets' most expensive cells (about 12 of 30 minutes)
_CPU_LEVELS = "data.options.per_class=10,20,100"
SOURCES = [
    Source("rcn_data_efficiency_rcn", cpu=((_CPU_LEVELS,),), gpu=((),), cpu_minutes=1.0, gpu_minutes=4.0),
    Source("rcn_data_efficiency", cpu=((_CPU_LEVELS,),), gpu=((),), cpu_minutes=16.0, gpu_minutes=10.0),
]
CONFIGS = [s.config for s in SOURCES]
COLUMNS = ["model", "per_class", "n", "few_seeds", "mean", "ci95"]
ORDER = ["RCN", "LeNet-5", "ResNet-18 (narrow)", "ResNet-18 + deconv, T=2"]
PER_CLASS_LABEL = {0: "all"}


def _label(r: Any) -> str:
    bb = r.cfg("model.backbone", "?")
    if bb == "rcn":
        return "RCN"
    if bb == "lenet5_relu":
        return "LeNet-5"
    if bb == "resnet18_small":
        fb, steps = r.cfg("model.feedback", "none"), int(r.cfg("model.steps", 1))
        return "ResNet-18 (narrow)" if fb == "none" else f"ResNet-18 + {fb}, T={steps}"
    return str(bb)


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    vals: dict[tuple[str, int], dict[int, float]] = {}
    for exp in CONFIGS:
        for r in load_results(runs, exp):
            if "acc" not in r.metrics:
                continue
            key = (_label(r), int(r.cfg("data.options.per_class", 0)))
            vals.setdefault(key, {})[int(r.cfg("data.seed", 0))] = 100 * float(r.metrics["acc"])
    rows = []
    for (model, pc), by_seed in vals.items():
        mean, h, n = mean_ci(list(by_seed.values()))
        rows.append({"model": model, "per_class": pc, "n": n, "few_seeds": n < MIN_SEEDS, "mean": mean, "ci95": h})
    rank = {m: i for i, m in enumerate(ORDER)}
    rows.sort(key=lambda r: (rank.get(r["model"], len(ORDER)), r["model"], r["per_class"] or 10**6))
    return rows


def _pc(v: Any) -> str:
    return PER_CLASS_LABEL.get(int(v), str(int(v)))


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        return {"csv": csv_path, "files": empty_figure(out, NAME, f"no runs of {', '.join(CONFIGS)} under {runs}")}
    md = write_markdown_table(out / f"{NAME}.md", ["model", "per class", "n", "test accuracy %"],
                              [[r["model"], _pc(r["per_class"]), r["n"], fmt_ci(r["mean"], r["ci95"], r["n"])]
                               for r in rows])
    fig, axes = new_figure(1, 1, width=4.6, height=3.3)
    ax = axes[0][0]
    levels = sorted({r["per_class"] for r in rows}, key=lambda v: v or 10**6)
    xpos = {pc: i for i, pc in enumerate(levels)}
    for i, m in enumerate(dict.fromkeys(r["model"] for r in rows)):
        sel = [r for r in rows if r["model"] == m]
        ax.errorbar([xpos[r["per_class"]] + 0.05 * (i - 1.5) for r in sel], [r["mean"] for r in sel],
                    yerr=[0 if r["ci95"] != r["ci95"] else r["ci95"] for r in sel], marker="o", capsize=3,
                    label=m)
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels([_pc(v) for v in levels])
    ax.set_xlabel("training examples per class")
    ax.set_ylabel("test accuracy % (450 digits)")
    ax.axhline(10, color="black", ls="--", lw=0.8, label="chance (10 %)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("scikit-learn digits, 32 px", fontsize=9)
    return {"csv": csv_path, "files": save_figure(fig, out, NAME) + [md]}


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "table": "", "seeds": seed_note([])}
    models = list(dict.fromkeys(r["model"] for r in rows))
    levels = sorted({r["per_class"] for r in rows}, key=lambda v: v or 10**6)
    cell = {(r["model"], r["per_class"]): r for r in rows}
    table = ["| model | " + " | ".join(f"{_pc(v)} per class" for v in levels) + " |",
             "|---|" + "---|" * len(levels)]
    for m in models:
        table.append(f"| {m} | " + " | ".join(
            fmt_ci(cell[(m, v)]["mean"], cell[(m, v)]["ci95"], cell[(m, v)]["n"]) if (m, v) in cell else "-"
            for v in levels) + " |")
    lines = []
    for v in levels:
        here = [r for r in rows if r["per_class"] == v]
        best = max(here, key=lambda r: r["mean"])
        rcn = cell.get(("RCN", v))
        if rcn is None:
            continue
        others = [r for r in here if r["model"] != "RCN"]
        beats = [r["model"] for r in others if rcn["mean"] - rcn["ci95"] > r["mean"] + r["ci95"]]
        loses = [r["model"] for r in others if rcn["mean"] + rcn["ci95"] < r["mean"] - r["ci95"]]
        lines.append(f"{_pc(v)} per class: best {best['model']} ({best['mean']:.1f} %); RCN "
                     f"{rcn['mean']:.1f} %, above {', '.join(beats) or 'none'}, below {', '.join(loses) or 'none'} "
                     f"(disjoint 95 % intervals)")
    return {"summary": "\n".join(f"- {s}" for s in lines), "table": "\n".join(table),
            "seeds": seed_note(r["n"] for r in rows)}
