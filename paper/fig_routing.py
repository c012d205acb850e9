"""Figure 4: attention over modules: LSTM vs RIMs vs BRIMs, sequential digits across test resolutions and copying
across delays.

Data: ``experiments/configs/routing_sequential_digits.yaml`` (trained on 8x8 digits read one pixel per step,
tested at 8, 10, 12, 16 px: ``acc``, ``res10/acc``, ...) and ``experiments/configs/routing_copying.yaml`` (trained
at delay 20, tested at delay 40: ``acc``, ``delay40/acc``; accuracy over the recall positions). Expected grid:
{lstm, rims, brims (2 layers)} and {lstm, rims} x 3 seeds. Accuracy in %, mean and 95 % t interval over seeds.
"""

from __future__ import annotations

import re
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
)

NAME = "fig_routing"
TITLE = "Attention over modules"
SOURCES = [
    Source("routing_sequential_digits", cpu=(("train.epochs=3", "train.seed=0,1,2"),),
           gpu=(("train.seed=0,1,2",),), cpu_minutes=2.5, gpu_minutes=20.0),
    Source("routing_copying", cpu=(("train.epochs=5", "train.seed=0,1,2"),),
           gpu=(("train.seed=0,1,2",),), cpu_minutes=1.0, gpu_minutes=15.0),
]
CONFIGS = [s.config for s in SOURCES]
COLUMNS = ["task", "model", "x", "test", "trained", "n", "few_seeds", "mean", "ci95"]
_TEST_RE = re.compile(r"^(res|delay)(\d+)/acc$")


def _model(r: Any) -> str:
    bb = r.cfg("model.backbone", "?")
    layers = r.cfg("model.backbone_args.num_layers", 1)
    return bb if bb != "brims" else f"brims ({layers} layers)"


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    vals: dict[tuple, dict[int, float]] = {}
    for src, task, key in (("routing_sequential_digits", "sequential digits", "image_size"),
                           ("routing_copying", "copying", "delay")):
        for r in load_results(runs, src):
            trained = int(r.cfg(f"data.options.{key}", 0))
            for k, v in r.metrics.items():
                m = _TEST_RE.match(k)
                if k == "acc":
                    x, test = trained, "trained"
                elif m:
                    x, test = int(m.group(2)), m.group(1) + m.group(2)
                else:
                    continue
                vals.setdefault((task, _model(r), x, test, trained), {})[r.seed] = 100 * float(v)
    rows = []
    for key, by_seed in vals.items():
        mean, h, n = mean_ci(list(by_seed.values()))
        rows.append(dict(zip(COLUMNS[:5], key)) | {"n": n, "few_seeds": n < MIN_SEEDS, "mean": mean, "ci95": h})
    rows.sort(key=lambda r: (r["task"] != "sequential digits", r["model"], r["x"]))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        return {"csv": csv_path, "files": empty_figure(out, NAME, f"no runs of {', '.join(CONFIGS)} under {runs}")}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = new_figure(len(tasks), 1, width=4.2, height=3.3)
    import matplotlib.pyplot as plt

    # one colour per model across both panels (the LSTM is the same colour on every task)
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(sorted({r["model"] for r in rows}))}
    for ti, task in enumerate(tasks):
        ax = axes[0][ti]
        for m in dict.fromkeys(r["model"] for r in rows if r["task"] == task):
            pts = sorted((r for r in rows if r["task"] == task and r["model"] == m), key=lambda r: r["x"])
            ax.errorbar([p["x"] for p in pts], [p["mean"] for p in pts], marker="o", ms=4, capsize=3, label=m,
                        color=colours[m],
                        yerr=[0 if p["ci95"] != p["ci95"] else p["ci95"] for p in pts])
        trained = sorted({r["trained"] for r in rows if r["task"] == task})
        for t in trained:
            ax.axvline(t, color="grey", ls=":", lw=1)
        chance = 10.0 if task == "sequential digits" else 12.5
        ax.axhline(chance, color="black", ls="--", lw=0.8, label=f"chance ({chance:g} %)")
        ax.set_xlabel("test image side (px; trained at dotted line)" if task == "sequential digits"
                      else "copy delay (steps; trained at dotted line)")
        ax.set_ylabel("test accuracy %" if task == "sequential digits" else "recall accuracy %")
        ax.set_title(task, fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return {"csv": csv_path, "files": save_figure(fig, out, NAME)}


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "seeds": seed_note([])}
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        sel = [r for r in rows if r["task"] == task]
        parts = []
        for m in dict.fromkeys(r["model"] for r in sel):
            pts = sorted((r for r in sel if r["model"] == m), key=lambda r: r["x"])
            parts.append(f"{m} " + " / ".join(f"{fmt_ci(p['mean'], p['ci95'], p['n'])}" for p in pts))
        xs = sorted({r["x"] for r in sel})
        far = max(xs)
        lstm = next((r for r in sel if r["model"] == "lstm" and r["x"] == far), None)
        others = [r for r in sel if r["model"] != "lstm" and r["x"] == far]
        verdict = ""
        if lstm and others:
            better = [r["model"] for r in others if r["mean"] > lstm["mean"]]
            verdict = (f" At {far} the modular models {'above' if better else 'not above'} the LSTM: "
                       + (", ".join(better) if better else "none") + ".")
        lines.append(f"**{task}** (at {' / '.join(str(x) for x in xs)}): " + "; ".join(parts) + "." + verdict)
    return {"summary": "\n".join(f"- {s}" for s in lines), "seeds": seed_note(r["n"] for r in rows)}
