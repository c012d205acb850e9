"""Table 2 (and its bar chart): the pointing game of top-down readouts, all pairs and the difficult subset.

Data: ``experiments/configs/pointing_game.yaml`` (LeNet-5 ReLU and a narrow ResNet-18, no feedback, 3 seeds; every
run plays the game at its end and writes ``pointing.json``: per readout, the per-class mean hit rate on all
(image, class) pairs and on the difficult subset, two-digit scenes). Expected grid: backbone {lenet5_relu,
resnet18_small} x seeds {0, 1, 2}; methods centre, gradient, deconvnet, guided backprop, excitation backprop (EB),
contrastive EB, selective-tuning WTA, Grad-CAM.

Reads ``pointing.json`` of every finished run (falling back to ``result.json``'s ``pointing/<method>/<subset>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paper.common import (
    MIN_SEEDS,
    Source,
    empty_figure,
    fmt_ci,
    load_json,
    load_results,
    mean_ci,
    new_figure,
    save_figure,
    seed_note,
    write_csv,
    write_markdown_table,
)

NAME = "tab_pointing"
TITLE = "The pointing game"
SOURCES = [
    Source("pointing_game",
           cpu=(("train.epochs=8", "data.options.num_train=2000", "eval.pointing_images=200",
                 "model.backbone=lenet5_relu"),
                ("train.epochs=3", "data.options.num_train=2000", "eval.pointing_images=200",
                 "model.backbone=resnet18_small")),
           gpu=((),), cpu_minutes=2.0, gpu_minutes=3.0),
]
CONFIGS = [s.config for s in SOURCES]
METHOD_ORDER = ["centre", "gradient", "gradient_x_input", "deconvnet", "guided_backprop", "gradcam", "excitation",
                "contrastive", "wta"]
COLUMNS = ["backbone", "epochs", "method", "subset", "n", "few_seeds", "mean", "ci95", "test_acc", "tolerance_px"]


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    vals: dict[tuple, dict[int, float]] = {}
    acc: dict[tuple, list[float]] = {}
    tol: dict[tuple, float] = {}
    for src in SOURCES:
        for r in load_results(runs, src.config):
            key0 = (r.cfg("model.backbone", "?"), int(r.cfg("train.epochs", 0)))
            rep = load_json(r.run_dir / "pointing.json")
            if rep and rep.get("results"):
                res = {m: {s: v.get(s) for s in ("all", "difficult")} for m, v in rep["results"].items()}
                tol[key0] = float(rep.get("tolerance_px", float("nan")))
            else:
                res = {}
                for k, v in r.metrics.items():
                    if k.startswith("pointing/"):
                        _, m, s = k.split("/")
                        res.setdefault(m, {})[s] = v
            if not res:
                continue
            acc.setdefault(key0, []).append(100 * float(r.metrics.get("acc", float("nan"))))
            for m, subsets in res.items():
                for s, v in subsets.items():
                    if v is not None and v == v:
                        vals.setdefault((*key0, m, s), {})[r.seed] = 100 * float(v)
    rows = []
    for (bb, ep, m, s), by_seed in vals.items():
        mean, h, n = mean_ci(list(by_seed.values()))
        rows.append({"backbone": bb, "epochs": ep, "method": m, "subset": s, "n": n, "few_seeds": n < MIN_SEEDS,
                     "mean": mean, "ci95": h, "test_acc": mean_ci(acc[(bb, ep)])[0],
                     "tolerance_px": tol.get((bb, ep), float("nan"))})
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: (r["backbone"], r["epochs"], rank.get(r["method"].split("@")[0], 99), r["method"],
                             r["subset"]))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        files = empty_figure(out, NAME, f"no pointing-game runs of {', '.join(CONFIGS)} under {runs}")
        return {"csv": csv_path, "files": files}
    groups = sorted({(r["backbone"], r["epochs"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    heads = ["method"] + [f"{bb} ({ep} ep) {s}" for bb, ep in groups for s in ("all", "difficult")]
    cells = []
    for m in methods:
        row = [m]
        for g in groups:
            for s in ("all", "difficult"):
                r = next((r for r in rows if (r["backbone"], r["epochs"], r["method"], r["subset"]) == (*g, m, s)),
                         None)
                row.append(fmt_ci(r["mean"], r["ci95"], r["n"]) if r else "")
        cells.append(row)
    md = write_markdown_table(out / f"{NAME}.md", heads, cells)
    fig, axes = new_figure(len(groups), 1, width=max(4.5, 0.55 * len(methods) + 1.5), height=3.4, sharey=True)
    import numpy as np

    for gi, g in enumerate(groups):
        ax = axes[0][gi]
        x = np.arange(len(methods))
        for j, (s, color) in enumerate((("all", "tab:blue"), ("difficult", "tab:orange"))):
            sel = [next((r for r in rows if (r["backbone"], r["epochs"], r["method"], r["subset"]) == (*g, m, s)),
                        None) for m in methods]
            ax.bar(x + (j - 0.5) * 0.4, [r["mean"] if r else 0 for r in sel], width=0.4, color=color, label=s,
                   yerr=[0 if (r is None or r["ci95"] != r["ci95"]) else r["ci95"] for r in sel], capsize=2)
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("pointing accuracy % (mean over classes)", fontsize=8)
        ax.set_title(f"{g[0]}, {g[1]} epochs", fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, title="pairs", title_fontsize=8)
    files = save_figure(fig, out, NAME)
    return {"csv": csv_path, "files": files + [md]}


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "table": "", "seeds": seed_note([])}
    lines = []
    heads = ["method"]
    groups = sorted({(r["backbone"], r["epochs"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    heads += [f"{bb} ({ep} ep) {s}" for bb, ep in groups for s in ("all", "difficult")]
    table = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for m in methods:
        cells = [m]
        for g in groups:
            for s in ("all", "difficult"):
                r = next((r for r in rows if (r["backbone"], r["epochs"], r["method"], r["subset"]) == (*g, m, s)),
                         None)
                cells.append(fmt_ci(r["mean"], r["ci95"], r["n"]) if r else "")
        table.append("| " + " | ".join(cells) + " |")

    def get(g: tuple, m: str, s: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["backbone"], r["epochs"], r["method"], r["subset"]) == (*g, m, s)), None)

    for g in groups:
        ce, eb, gr, cen = (get(g, m, "difficult") for m in ("contrastive", "excitation", "gradient", "centre"))
        acc = next(r["test_acc"] for r in rows if (r["backbone"], r["epochs"]) == g)
        text = f"**{g[0]}, {g[1]} epochs** (test accuracy {acc:.1f} %), difficult subset:"
        if ce and eb and gr and cen:
            order = ce["mean"] > eb["mean"] >= gr["mean"] > cen["mean"]
            text += (f" contrastive EB {fmt_ci(ce['mean'], ce['ci95'], ce['n'])}, EB {fmt_ci(eb['mean'], eb['ci95'], eb['n'])},"
                     f" gradient {fmt_ci(gr['mean'], gr['ci95'], gr['n'])}, centre {cen['mean']:.1f}: the published"
                     f" ordering (c-EB > EB >= gradient > centre) {'holds' if order else 'does NOT hold'} in these means.")
        else:
            text += " not every method of the ordering was played."
        lines.append(text)
    return {"summary": "\n".join(f"- {s}" for s in lines), "table": "\n".join(table),
            "seeds": seed_note(r["n"] for r in rows)}
