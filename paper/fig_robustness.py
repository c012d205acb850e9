"""Figure 3: generative (CNN-F) feedback and adversarial robustness: CNN vs CNN-F under FGSM, PGD and SPSA.

Data: ``experiments/configs/generative_ablation.yaml`` run with attacks (``eval.attacks=[fgsm,pgd,spsa]``,
``eval.eps=[0.05]``, ``eval.noise=[0.2]``, ``eval.attack_images=128``), LeNet-5 (ReLU) without feedback and with
generative feedback at 2 steps; ``loop`` attacks differentiate through every feedback step (end to end), ``first``
through the first bottom-up pass only. Expected grid: {none@1, generative@2} x 3 seeds. Accuracy in % on the
attacked test scenes (clean: all test scenes), exact-set accuracy (``<attack>_eps<eps>_<loop|first>/acc``).

These runs go to their own experiment folder (``runs/generative_robustness/``, through ``name=``) so that the
attacked runs do not mix with the clean ablation of Figure 1.
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

NAME = "fig_robustness"
TITLE = "Generative feedback under attack"
EXPERIMENT = "generative_robustness"
_ATTACK = ("name=generative_robustness", "model.feedback=none,generative", "model.steps=1,2",
           "eval.attacks=[fgsm,pgd,spsa]", "eval.eps=[0.05]", "eval.noise=[0.2]", "eval.samples=0")
SOURCES = [
    Source("generative_ablation",
           cpu=((*_ATTACK, "train.epochs=8", "train.seed=0,1,2", "eval.attack_images=64"),),
           gpu=((*_ATTACK, "train.seed=0,1,2", "eval.attack_images=512"),),
           cpu_minutes=2.0, gpu_minutes=5.0,
           note="runs into runs/generative_robustness (name=...)"),
]
CONFIGS = [s.config for s in SOURCES]
COLUMNS = ["model", "feedback", "steps", "condition", "attack", "through", "eps", "n", "few_seeds", "mean", "ci95"]
_ATTACK_RE = re.compile(r"^(?P<attack>[a-z_]+)_eps(?P<eps>[0-9.e-]+)_(?P<through>loop|first)/acc$")


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    vals: dict[tuple, dict[int, float]] = {}
    for r in load_results(runs, EXPERIMENT):
        fb, steps = r.cfg("model.feedback", "none"), int(r.cfg("model.steps", 1))
        if fb != "none" and steps == 1:
            continue  # the backbone itself, already the `none` row
        model = "no feedback" if fb == "none" else f"{fb}, {steps} steps"
        for k, v in r.metrics.items():
            m = _ATTACK_RE.match(k)
            if k == "acc":
                key = (model, fb, steps, "clean", "", "", 0.0)
            elif k.startswith("noise") and k.endswith("/acc"):
                key = (model, fb, steps, k.split("/")[0], "noise", "", float(k[5:].split("/")[0]))
            elif m:
                key = (model, fb, steps, f"{m['attack'].upper()} {m['through']}", m["attack"], m["through"],
                       float(m["eps"]))
            else:
                continue
            vals.setdefault(key, {})[r.seed] = 100 * float(v)
    rows = []
    for key, by_seed in vals.items():
        mean, h, n = mean_ci(list(by_seed.values()))
        rows.append(dict(zip(COLUMNS[:7], key)) | {"n": n, "few_seeds": n < MIN_SEEDS, "mean": mean, "ci95": h})
    cond_rank = {"clean": 0}
    rows.sort(key=lambda r: (r["feedback"] != "none", r["steps"], cond_rank.get(r["condition"], 1),
                             r["attack"] == "noise", r["condition"]))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        return {"csv": csv_path, "files": empty_figure(out, NAME, f"no runs under {runs}/{EXPERIMENT}")}
    import numpy as np

    conds = list(dict.fromkeys(r["condition"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = new_figure(1, 1, width=max(5.0, 0.9 * len(conds) + 2), height=3.4)
    ax = axes[0][0]
    x = np.arange(len(conds))
    w = 0.8 / len(models)
    for j, m in enumerate(models):
        sel = [next((r for r in rows if r["model"] == m and r["condition"] == c), None) for c in conds]
        ax.bar(x + (j - (len(models) - 1) / 2) * w, [r["mean"] if r else 0 for r in sel], width=w, label=m,
               yerr=[0 if (r is None or r["ci95"] != r["ci95"]) else r["ci95"] for r in sel], capsize=3)
    ax.set_xticks(x)
    eps = sorted({r["eps"] for r in rows if r["attack"] not in ("", "noise")})
    ax.set_xticklabels(conds, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("exact-set accuracy %")
    ax.set_title("LeNet-5 on cluttered digits; L-inf eps = " + ", ".join(f"{e:g}" for e in eps), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return {"csv": csv_path, "files": save_figure(fig, out, NAME)}


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "seeds": seed_note([])}

    def get(model_fb: str, cond: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["feedback"] == "none") == (model_fb == "none") and r["condition"] == cond),
                    None)

    lines = []
    for cond in dict.fromkeys(r["condition"] for r in rows):
        a, b = get("none", cond), get("generative", cond)
        if a and b:
            lines.append(f"{cond}: no feedback {fmt_ci(a['mean'], a['ci95'], a['n'])} %, "
                         f"{b['model']} {fmt_ci(b['mean'], b['ci95'], b['n'])} %")
    pl, pf = get("generative", "PGD loop"), get("generative", "PGD first")
    verdict = ""
    if pl and pf:
        verdict = (f" End-to-end PGD leaves {pl['mean']:.1f} % against {pf['mean']:.1f} % for the first-pass attack: "
                   + ("the end-to-end attack is the stronger one, as it should be." if pl["mean"] < pf["mean"] else
                      "the two attacks are equally strong (the end-to-end one finds nothing the first pass misses)."
                      if pl["mean"] == pf["mean"] else
                      "the end-to-end attack is NOT stronger here (check for gradient masking before claiming "
                      "robustness)."))
    return {"summary": "\n".join(f"- {s}" for s in lines) + ("\n\n" + verdict.strip() if verdict else ""),
            "seeds": seed_note(r["n"] for r in rows)}
