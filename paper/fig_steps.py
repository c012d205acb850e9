"""Figure 1: accuracy against feedback steps for every feedback kind, per backbone, clean and under noise/occlusion.

Data: the feedback ablations on cluttered digit scenes (``experiments/configs/<kind>_ablation.yaml``): deconv,
generative (CNN-F), rectified, cognitive and the routing kinds (brims, layer_attention, latents) on LeNet-5 (ReLU),
tdm on the narrow ResNet-18; at the CPU scale deconv also runs on a narrow ResNet-18 and a small VGG-11. Expected
grid: {none@1, kind@{1,2,4}} (routing: {2,3}) x 3 seeds per backbone; ``eval.noise=[0.2]`` and
``eval.occlusion=[8]`` add the noisy and occluded test sets (``noise0.2/acc``, ``occlusion8/acc``).

Plotted: exact-set accuracy (``metrics.acc``: the predicted label set equals the true one) in %, mean and 95 % t
interval over seeds. ``none`` (the backbone) is drawn at 1 step and as a dashed line across. Runs of the same
backbone, kind, steps, epochs and seed from two configs (``none`` is in every ablation) are counted once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paper.common import (
    MIN_SEEDS,
    REAL_DATASETS,
    Source,
    empty_figure,
    fmt_ci,
    load_results,
    mean_ci,
    new_figure,
    save_figure,
    seed_note,
    write_csv,
)

NAME = "fig_steps"
TITLE = "Accuracy against feedback steps"
_EVAL = ("eval.noise=[0.2]", "eval.occlusion=[8]", "eval.samples=0")
_SEEDS = "train.seed=0,1,2"
_CHANNELS = "model.backbone_args.channels=[16,32,64,128]"
SOURCES = [
    Source("deconv_ablation",
           cpu=(("train.epochs=8", "model.steps=1,2,4", _SEEDS, *_EVAL),
                ("train.epochs=3", "model.backbone=resnet18_small", _CHANNELS, "model.steps=1,2", _SEEDS, *_EVAL),
                ("train.epochs=3", "model.backbone=tv_vgg11", "model.preset=small", "model.steps=1,2", _SEEDS,
                 *_EVAL)),
           gpu=((*_EVAL,),
                ("model.backbone=resnet18_small", _CHANNELS, "train.epochs=6", *_EVAL),
                ("model.backbone=tv_vgg11", "model.preset=small", "train.epochs=6", *_EVAL)),
           cpu_minutes=5.0, gpu_minutes=8.0),
    Source("generative_ablation", cpu=(("train.epochs=8", _SEEDS, *_EVAL),), gpu=((*_EVAL,),),
           cpu_minutes=2.0, gpu_minutes=3.0),
    Source("rectified_ablation", cpu=(("train.epochs=8", _SEEDS, *_EVAL),), gpu=((*_EVAL,),),
           cpu_minutes=1.5, gpu_minutes=3.0),
    Source("cognitive_ablation", cpu=(("train.epochs=8", _SEEDS, *_EVAL),), gpu=((*_EVAL,),),
           cpu_minutes=1.5, gpu_minutes=3.0),
    Source("tdm_ablation", cpu=(("train.epochs=3", "model.steps=1,2", _SEEDS, *_EVAL),), gpu=((*_EVAL,),),
           cpu_minutes=2.5, gpu_minutes=3.0),
    Source("routing_ablation", cpu=(("train.epochs=8", "model.feedback=none,brims,layer_attention", "model.steps=1,2",
                                     _SEEDS, *_EVAL),),
           gpu=((*_EVAL,),), cpu_minutes=1.0, gpu_minutes=10.0),
    # real datasets from a user's torchvision root: only at the GPU scale with --data-root (one panel row each)
    Source("deconv_real", cpu=(), gpu=(),
           real=("data.name={dataset}", "data.options.root={root}", "name=deconv_real_{dataset}"),
           real_minutes=25.0),
]
CONFIGS = [s.config for s in SOURCES if not s.real]  # deconv_real's runs live under deconv_real_<dataset>
COLUMNS = ["backbone", "epochs", "feedback", "steps", "condition", "n", "few_seeds", "mean", "ci95", "experiments",
           "dataset"]
CONDITION_LABEL = {"clean": "clean", "noise0.2": "Gaussian noise, std 0.2", "occlusion8": "8 px occluder"}


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    values: dict[tuple, dict[int, float]] = {}
    sources: dict[tuple, set[str]] = {}
    experiments = [s.config for s in SOURCES if not s.real] + [f"deconv_real_{d}" for d in REAL_DATASETS]
    for exp in experiments:
        for r in load_results(runs, exp):
            bb = r.cfg("model.backbone", r.variant.get("model.backbone", "?"))
            key0 = (bb, int(r.cfg("train.epochs", 0)), r.cfg("model.feedback", "none"), int(r.cfg("model.steps", 1)),
                    str(r.cfg("data.name", "cluttered_digits")))
            conds = {"clean": r.metrics.get("acc")}
            for m, v in r.metrics.items():
                if m.endswith("/acc") and (m.startswith("noise") or m.startswith("occlusion")):
                    conds[m.split("/")[0]] = v
            for cond, v in conds.items():
                if v is None:
                    continue
                key = (*key0, cond)
                values.setdefault(key, {}).setdefault(r.seed, float(v))  # first config wins for a repeated seed
                sources.setdefault(key, set()).add(exp)
    rows = []
    for key, by_seed in values.items():
        m, h, n = mean_ci([100 * v for v in by_seed.values()])
        rows.append({"backbone": key[0], "epochs": key[1], "feedback": key[2], "steps": key[3], "condition": key[5],
                     "n": n, "few_seeds": n < MIN_SEEDS, "mean": m, "ci95": h,
                     "experiments": ";".join(sorted(sources[key])), "dataset": key[4]})
    order = {"clean": 0}
    rows.sort(key=lambda r: (r["dataset"] != "cluttered_digits", r["dataset"], r["backbone"], r["epochs"],
                             order.get(r["condition"], 1), r["condition"], r["feedback"] != "none", r["feedback"],
                             r["steps"]))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        files = empty_figure(out, NAME, f"no finished runs of {', '.join(CONFIGS)} under {runs}")
        return {"csv": csv_path, "files": files}
    panels = sorted({(r["dataset"], r["backbone"], r["epochs"]) for r in rows},
                    key=lambda p: (p[0] != "cluttered_digits", *p))
    conds = sorted({r["condition"] for r in rows}, key=lambda c: (c != "clean", c))
    kinds = sorted({r["feedback"] for r in rows if r["feedback"] != "none"})
    fig, axes = new_figure(len(panels), len(conds), width=3.8, height=3.0, sharey="row")
    import matplotlib.pyplot as plt

    colors = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(kinds)}
    for ci, cond in enumerate(conds):
        for pi, (ds, bb, ep) in enumerate(panels):
            ax = axes[ci][pi]
            sel = [r for r in rows if (r["dataset"], r["backbone"], r["epochs"], r["condition"]) == (ds, bb, ep, cond)]
            base = [r for r in sel if r["feedback"] == "none" and r["steps"] == 1]
            if base:
                b = base[0]
                ax.axhline(b["mean"], color="black", ls="--", lw=1, label="none (backbone)")
                ax.errorbar([1], [b["mean"]], yerr=[0 if b["ci95"] != b["ci95"] else b["ci95"]], fmt="o",
                            color="black", capsize=3)
            for k in kinds:
                pts = sorted((r for r in sel if r["feedback"] == k), key=lambda r: r["steps"])
                if not pts:
                    continue
                ax.errorbar([p["steps"] for p in pts], [p["mean"] for p in pts],
                            yerr=[0 if p["ci95"] != p["ci95"] else p["ci95"] for p in pts], marker="o", ms=4,
                            capsize=3, color=colors[k], label=k)
            ax.set_xticks([1, 2, 3, 4])
            ax.set_xlabel("feedback steps T")
            if pi == 0:
                ax.set_ylabel(f"exact-set accuracy % ({CONDITION_LABEL.get(cond, cond)})", fontsize=8)
            where = "" if ds == "cluttered_digits" else f" ({ds})"
            ax.set_title(f"{bb}, {ep} epochs{where}" + ("" if cond == "clean" else
                                                        f"\n{CONDITION_LABEL.get(cond, cond)}"), fontsize=9)
            ax.grid(alpha=0.3)
    handles, labels = {}, []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    files = save_figure(fig, out, NAME, rect=(0, 0.06 / len(conds) ** 0.5, 1, 1))
    return {"csv": csv_path, "files": files}


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> str:
    """'above' / 'below' when the two intervals are disjoint, else 'within'."""
    ha = 0.0 if a["ci95"] != a["ci95"] else a["ci95"]
    hb = 0.0 if b["ci95"] != b["ci95"] else b["ci95"]
    if a["mean"] - ha > b["mean"] + hb:
        return "above"
    if a["mean"] + ha < b["mean"] - hb:
        return "below"
    return "within"


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Numbers for the paper, from the CSV rows: per backbone, the backbone's clean accuracy and each kind's best."""
    clean = [r for r in rows if r["condition"] == "clean"]
    if not clean:
        return {"summary": "No runs yet.", "table": "", "seeds": seed_note([])}
    lines, table = [], ["| backbone (epochs) | feedback | " + " | ".join(f"T={t}" for t in (1, 2, 3, 4)) + " |",
                        "|---|---|---|---|---|---|"]
    for ds, bb0, ep in sorted({(str(r.get("dataset", "cluttered_digits")), r["backbone"], r["epochs"]) for r in clean},
                              key=lambda p: (p[0] != "cluttered_digits", *p)):
        sel = [r for r in clean if (str(r.get("dataset", "cluttered_digits")), r["backbone"], r["epochs"]) ==
               (ds, bb0, ep)]
        bb = bb0 if ds == "cluttered_digits" else f"{bb0} on {ds}"
        base = next((r for r in sel if r["feedback"] == "none" and r["steps"] == 1), None)
        for k in sorted({r["feedback"] for r in sel}, key=lambda k: (k != "none", k)):
            cells = []
            for t in (1, 2, 3, 4):
                r = next((r for r in sel if r["feedback"] == k and r["steps"] == t), None)
                cells.append(fmt_ci(r["mean"], r["ci95"], r["n"]) if r else "")
            table.append(f"| {bb} ({ep}) | {k} | " + " | ".join(cells) + " |")
        if base is None:
            lines.append(f"{bb} ({ep} epochs): no backbone-only run.")
            continue
        parts = {"above": [], "within": [], "below": []}
        for k in sorted({r["feedback"] for r in sel} - {"none"}):
            best = max((r for r in sel if r["feedback"] == k and r["steps"] > 1), key=lambda r: r["mean"], default=None)
            if best is None:
                continue
            parts[_overlap(best, base)].append(f"{k} (T={best['steps']}: {fmt_ci(best['mean'], best['ci95'], best['n'])})")
        text = (f"**{bb}, {ep} epochs**: the backbone alone reaches {fmt_ci(base['mean'], base['ci95'], base['n'])} %"
                f" (n = {base['n']}).")
        for word, label in (("above", "interval above the backbone's"), ("within", "intervals overlapping it"),
                            ("below", "interval below it")):
            if parts[word]:
                text += f" Best step count {label}: {', '.join(parts[word])}."
        lines.append(text)
    return {"summary": "\n".join(f"- {s}" for s in lines), "table": "\n".join(table),
            "seeds": seed_note(r["n"] for r in rows)}
