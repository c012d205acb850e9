"""Table 7 (and its chart): the baseline zoo: parameters, accuracy and time per training step at small scale,
without feedback and with deconvolutional feedback (2 steps).

Data: ``experiments/configs/baselines_zoo.yaml`` (every registered backbone in its small-input configuration, one
epoch on scikit-learn's digits). The CPU scale runs a subset of twelve families (the fastest member of each), the GPU
scale every backbone; both with 3 seeds. One epoch is a smoke test of the Staged contract and of the cost columns,
not a ranking: deep networks stay at chance after one epoch on 1,437 images.

Parameters against the reference figures: each run's ``result.json`` carries ``reference`` (from
``baselines/references.py``, written by the runner): our count of the backbone at the reference configuration (the
full-width network, not the narrowed one trained here) beside the paper's or library's count and its source. The
test suite (``tests/test_references.py``) asserts that they match; this table shows them.
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

NAME = "tab_zoo"
TITLE = "The baseline zoo"
CPU_BACKBONES = ["perceptron", "mlp", "lenet5", "lenet5_relu", "alexnet", "zfnet", "tv_vgg11", "resnet18",
                 "resnet20_cifar", "squeezenet1_1", "googlenet", "nasnetamobile"]
SOURCES = [
    Source("baselines_zoo", cpu=(("model.backbone=" + ",".join(CPU_BACKBONES), "train.seed=0,1,2"),),
           gpu=(("train.seed=0,1,2",),), cpu_minutes=5.0, gpu_minutes=25.0),
]
CONFIGS = [s.config for s in SOURCES]
COLUMNS = ["backbone", "feedback", "steps", "n", "few_seeds", "params", "feedback_params", "mean", "ci95", "step_ms",
           "step_ms_ci95", "device", "full_params", "reference_params", "reference_match", "reference_source"]


def collect_rows(runs: Path) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[int, Any]] = {}
    for r in load_results(runs, "baselines_zoo"):
        key = (r.cfg("model.backbone", "?"), r.cfg("model.feedback", "none"), int(r.cfg("model.steps", 1)))
        groups.setdefault(key, {})[r.seed] = r
    rows = []
    for (bb, fb, steps), by_seed in groups.items():
        rs = list(by_seed.values())
        mean, h, n = mean_ci([100 * r.metrics.get("acc", float("nan")) for r in rs])
        ms, ms_h, _ = mean_ci([r.compute.get("train_step_ms") for r in rs if r.compute.get("train_step_ms")])
        c = rs[0].cost
        ref = rs[0].reference
        rows.append({"backbone": bb, "feedback": fb, "steps": steps, "n": n, "few_seeds": n < MIN_SEEDS,
                     "params": c.get("backbone_params", 0) + c.get("feedback_params", 0),
                     "feedback_params": c.get("feedback_params", 0), "mean": mean, "ci95": h, "step_ms": ms,
                     "step_ms_ci95": ms_h, "device": rs[0].compute.get("device", ""),
                     "full_params": ref.get("params", ""), "reference_params": ref.get("reference", ""),
                     "reference_match": ref.get("match", ""), "reference_source": ref.get("source", "")})
    rows.sort(key=lambda r: (r["backbone"], r["feedback"] != "none"))
    return rows


def make(runs: Path, out: Path) -> dict[str, Any]:
    rows = collect_rows(Path(runs))
    csv_path = write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    if not rows:
        return {"csv": csv_path, "files": empty_figure(out, NAME, f"no runs of baselines_zoo under {runs}")}
    md = write_markdown_table(out / f"{NAME}.md", ["backbone", "feedback", "T", "n", "params", "+fb params", "acc %",
                                                   "ms/step", "params (full size)", "reference", "match"],
                              [[r["backbone"], r["feedback"], r["steps"], r["n"], f"{r['params']:,}",
                                f"{r['feedback_params']:,}", fmt_ci(r["mean"], r["ci95"], r["n"]),
                                f"{r['step_ms']:.1f}", *_ref_cells(r)] for r in rows])
    fig, axes = new_figure(2, 1, width=4.3, height=3.6)
    for fb, marker in (("none", "o"), ("deconv", "^")):
        sel = [r for r in rows if r["feedback"] == fb]
        if not sel:
            continue
        axes[0][0].scatter([r["params"] for r in sel], [r["step_ms"] for r in sel], marker=marker,
                           label=fb if fb == "none" else f"{fb}, T={sel[0]['steps']}")
        axes[0][1].errorbar([r["params"] for r in sel], [r["mean"] for r in sel], fmt=marker, capsize=2,
                            yerr=[0 if r["ci95"] != r["ci95"] else r["ci95"] for r in sel],
                            label=fb if fb == "none" else f"{fb}, T={sel[0]['steps']}")
    for r in rows:
        if r["feedback"] == "none":
            axes[0][0].annotate(r["backbone"], (r["params"], r["step_ms"]), fontsize=6, alpha=0.8)
    for ax, ylabel in ((axes[0][0], "ms per training step"), (axes[0][1], "test accuracy % after one epoch")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_yscale("log")
    axes[0][1].axhline(10, color="black", ls="--", lw=0.8)
    return {"csv": csv_path, "files": save_figure(fig, out, NAME) + [md]}


def _has_ref(r: dict[str, Any]) -> bool:
    v = r.get("reference_params")
    return isinstance(v, (int, float)) and v == v  # an empty CSV cell reads back as NaN


def _ref_cells(r: dict[str, Any]) -> list[str]:
    """``full-size params``, ``reference`` (with ``~`` for a paper's rounded total) and the match mark."""
    if not _has_ref(r):
        return ["-", "-", "-"]
    full, ref = int(r["full_params"]), int(r["reference_params"])
    ok = r.get("reference_match") is True
    return [f"{full:,}", f"{ref:,}", "yes" if ok else "**no**"]


def facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    if not rows:
        return {"summary": "No runs yet.", "table": "", "seeds": seed_note([])}
    table = ["| backbone | feedback | T | params (trained) | +fb params | acc % | ms/step | params (full size) | "
             "reference | match |", "|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['backbone']} | {r['feedback']} | {r['steps']} | {int(r['params']):,} | "
              f"{int(r['feedback_params']):,} | {fmt_ci(r['mean'], r['ci95'], r['n'])} | {float(r['step_ms']):.1f} | "
              + " | ".join(_ref_cells(r)) + " |" for r in rows]
    refs = {r["backbone"]: r for r in rows if _has_ref(r)}
    sources = "; ".join(f"{b}: {r['reference_source']}" for b, r in sorted(refs.items()))
    n_ok = sum(r.get("reference_match") is True for r in refs.values())
    none = [r for r in rows if r["feedback"] == "none"]
    above = [r["backbone"] for r in none if r["mean"] > 20]
    text = (f"{len({r['backbone'] for r in rows})} backbones, {len(rows)} cells; after one epoch "
            f"{len(above)} of {len(none)} plain backbones are above 20 % ({', '.join(above) or 'none'}). "
            f"Parameters at the full (reference) size match the published count for {n_ok} of the {len(refs)} "
            f"backbones that have one (sources: {sources or 'none'}).")
    return {"summary": text, "table": "\n".join(table), "seeds": seed_note(r["n"] for r in rows),
            "devices": ", ".join(sorted({str(r["device"]) for r in rows}))}
