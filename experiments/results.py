"""The comparison table: finished runs grouped by cell, mean and spread over seeds.

Reads only run directories (``result.json`` next to a ``DONE`` marker), so it works on any runs folder, copied
from a cluster or half-finished. Spread is the sample standard deviation over seeds (``n`` says how many).

Ensembles of seeds: every run keeps its test-set logits (``predictions.pt``), so a cell's seeds can be scored as
one ensemble (the mean of their softmax outputs) without loading a model: ``acc_ens`` / ``hit_ens`` in the rows
(an ``ens %`` column in the table when a cell has two or more seeds with predictions).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["collect", "format_table", "summarize", "write_tables"]


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Every finished run's ``result.json`` under ``root``, with its ``run_dir``."""
    out = []
    for path in sorted(Path(root).rglob("result.json")):
        if ".attempts" in path.parts or not (path.parent / "DONE").exists():
            continue
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        r["run_dir"] = str(path.parent)
        out.append(r)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarize(results: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows (one per experiment and cell) and the variant columns they share."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["experiment"], r["cell"]), []).append(r)
    keys: list[str] = []
    for r in results:
        for k in r.get("variant", {}):
            if k not in keys:
                keys.append(k)
    rows = []
    for (exp, cell), rs in groups.items():
        row: dict[str, Any] = {"experiment": exp, "cell": cell, "n": len(rs), "primary": rs[0].get("primary", "acc"),
                               "tests": list(rs[0].get("tests", []))}
        for k in keys:
            row[k] = rs[0].get("variant", {}).get(k, "")
        metric_names = sorted({m for r in rs for m in r["metrics"]})
        for m in metric_names:
            vals = [r["metrics"][m] for r in rs if m in r["metrics"]]
            row[m], row[f"{m}_std"] = _mean_std(vals)
        ens = _ensemble(rs) if row["primary"] == "acc" and rs[0].get("task", "classify") == "classify" else {}
        if ens:
            row.update({f"{k}_ens": v for k, v in ens.items()})
        cost = rs[0].get("cost", {})
        row["params"] = cost.get("backbone_params", 0) + cost.get("feedback_params", 0)
        row["feedback_params"] = cost.get("feedback_params", 0)
        row["mflops"] = cost.get("flops", 0) / 1e6
        row["time_s"] = sum(r.get("time_s", 0) for r in rs) / len(rs)
        step_ms = [r.get("compute", {}).get("train_step_ms") for r in rs]
        step_ms = [v for v in step_ms if v is not None]
        row["step_ms"] = sum(step_ms) / len(step_ms) if step_ms else None
        rows.append(row)
    rows.sort(key=lambda r: (r["experiment"], [str(r[k]) for k in keys]))
    return keys, rows


def _ensemble(rs: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics of the mean softmax over the seeds' saved test predictions ({} if fewer than two have them)."""
    paths = [Path(r["run_dir"]) / "predictions.pt" for r in rs if "run_dir" in r]
    paths = [p for p in paths if p.is_file()]
    if len(paths) < 2:
        return {}
    from experiments.evaluate import ensemble_metrics
    from experiments.tasks import create_task

    try:
        return ensemble_metrics(paths, create_task("classify", multilabel=bool(rs[0].get("multilabel"))))
    except (ValueError, RuntimeError, KeyError):
        return {}


def _pm(row: dict[str, Any], m: str, scale: float = 100.0) -> str:
    if m not in row:
        return "-"
    mean, std = row[m] * scale, row.get(f"{m}_std", float("nan")) * scale
    digits = 1 if scale != 1.0 else 2
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _columns(keys: list[str], rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    cols: list[tuple[str, Any]] = [(k.split(".")[-1], (lambda r, k=k: str(r[k]))) for k in keys]
    if not keys:
        cols.append(("cell", lambda r: r["cell"]))
    cols.append(("n", lambda r: str(r["n"])))
    primaries = sorted({r.get("primary", "acc") for r in rows})
    tests = sorted({t for r in rows for t in r.get("tests", [])})
    if "acc" in primaries:
        cols.append(("acc %", lambda r: _pm(r, "acc")))
        if any(r.get("hit") != r.get("acc") for r in rows if "hit" in r):
            cols.append(("hit %", lambda r: _pm(r, "hit")))
        if any("acc_step1" in r for r in rows):
            cols.append(("acc@step1 %", lambda r: _pm(r, "acc_step1")))
        cols += [(f"{t} acc %", lambda r, t=t: _pm(r, f"{t}/acc")) for t in tests]
    pointing = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("pointing/") and k.endswith("/all")})
    cols += [(f"point:{m} %", lambda r, m=m: _pm(r, f"pointing/{m}/all")) for m in pointing]
    if "psnr" in primaries:  # regression: PSNR in dB over the test set, and the mean squared error
        cols.append(("PSNR dB", lambda r: _pm(r, "psnr", scale=1.0)))
        cols.append(("mse", lambda r: f"{r['mse']:.4g}" if "mse" in r else "-"))
        cols += [(f"{t} PSNR dB", lambda r, t=t: _pm(r, f"{t}/psnr", scale=1.0)) for t in tests]
    for m in primaries:  # set-level primaries of the other tasks (map50, miou, bleu4), in percent
        if m not in ("acc", "psnr"):
            cols.append((f"{m} %", lambda r, m=m: _pm(r, m)))
            cols += [(f"{t} {m} %", lambda r, t=t, m=m: _pm(r, f"{t}/{m}")) for t in tests]
    if any("acc_ens" in r for r in rows):
        cols.append(("ens %", lambda r: f"{100 * r['acc_ens']:.1f}" if "acc_ens" in r else "-"))
    cols.append(("params", lambda r: f"{r['params']:,}"))
    cols.append(("+fb params", lambda r: f"{r['feedback_params']:,}"))
    cols.append(("MFLOPs", lambda r: f"{r['mflops']:.1f}"))
    if any(r.get("step_ms") is not None for r in rows):
        cols.append(("ms/step", lambda r: "-" if r.get("step_ms") is None else f"{r['step_ms']:.1f}"))
    cols.append(("s/run", lambda r: f"{r['time_s']:.1f}"))
    return cols


def format_table(keys: list[str], rows: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """A plain-text (aligned) or Markdown table of the summary rows."""
    if not rows:
        return "(no finished runs)"
    cols = _columns(keys, rows)
    cells = [[fn(r) for _, fn in cols] for r in rows]
    heads = [h for h, _ in cols]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*heads), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*c) for c in cells]
    return "\n".join(lines)


def write_tables(root: str | Path, keys: list[str], rows: list[dict[str, Any]]) -> list[Path]:
    """Write ``results.md`` and ``results.csv`` into ``root``."""
    root = Path(root)
    md = root / "results.md"
    md.write_text(format_table(keys, rows, markdown=True) + "\n")
    buf = io.StringIO()
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("experiment", "cell", "n"), k))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    (root / "results.csv").write_text(buf.getvalue())
    return [md, root / "results.csv"]
