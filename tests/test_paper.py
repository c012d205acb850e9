"""The paper pipeline (paper/, `feedback paper`): every figure, table and paper.md regenerated from run directories.

One experiment (deconv_ablation) is trained for real at a tiny size through the CLI; the others are written as
synthetic run directories in the runner's exact format (result.json + DONE + config.yaml, pointing.json), with
known values, so the test can check the numbers that reach the CSVs and the paper.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.cli import main as cli_main


def _write_run(root: Path, experiment: str, cell: str, seed: int, cfg: dict, metrics: dict, *, cost: dict | None = None,
               step_ms: float = 10.0, pointing: dict | None = None, reference: dict | None = None) -> Path:
    d = root / experiment / cell / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 1.0}) + "\n")
    result = {"experiment": experiment, "cell": cell, "seed": seed, "variant": {}, "metrics": metrics,
              "cost": cost or {"backbone_params": 1000, "feedback_params": 0, "backbone_flops": 1e6, "flops": 1e6},
              "compute": {"train_step_ms": step_ms, "device": "cpu"}, "time_s": 1.0, "task": "classify",
              "primary": "acc", "tests": [], "reference": reference}
    (d / "result.json").write_text(json.dumps(result))
    if pointing is not None:
        (d / "pointing.json").write_text(json.dumps({"tolerance_px": 2.14, "gt": "mask", "results": pointing}))
    (d / "DONE").write_text("")
    return d


def _cfg(backbone: str, feedback: str = "none", steps: int = 1, epochs: int = 2, **data: object) -> dict:
    return {"model": {"backbone": backbone, "feedback": feedback, "steps": steps, "backbone_args": {}},
            "train": {"epochs": epochs}, "data": {"options": dict(data)}}


def _synthetic(root: Path) -> None:
    seeds = (0, 1, 2)
    for s in seeds:
        # generative_ablation (clean) and the attacked runs of fig_robustness
        _write_run(root, "generative_ablation", "g2", s, _cfg("lenet5_relu", "generative", 2),
                   {"acc": 0.20 + 0.01 * s}, cost={"backbone_params": 1000, "feedback_params": 0,
                                                   "backbone_flops": 1e6, "flops": 3e6}, step_ms=30.0)
        for fb, steps, base in (("none", 1, 0.30), ("generative", 2, 0.25)):
            _write_run(root, "generative_robustness", f"{fb}{steps}", s, _cfg("lenet5_relu", fb, steps),
                       {"acc": base + 0.01 * s, "fgsm_eps0.05_loop/acc": base / 3, "fgsm_eps0.05_first/acc": base / 2,
                        "pgd_eps0.05_loop/acc": base / 5, "pgd_eps0.05_first/acc": base / 4,
                        "noise0.2/acc": base - 0.05})
        # pointing game: contrastive 0.8 > excitation 0.6 > gradient 0.5 > centre 0.2 (+ seed jitter)
        pts = {m: {"all": v + 0.01 * s, "difficult": v - 0.1 + 0.01 * s}
               for m, v in (("centre", 0.3), ("gradient", 0.6), ("excitation", 0.7), ("contrastive", 0.9))}
        _write_run(root, "pointing_game", "lenet", s, _cfg("lenet5_relu"), {"acc": 0.5}, pointing=pts)
        # routing: sequential digits (trained 8, tests 10, 16) and copying (delay 20, test 40)
        for bb, acc in (("lstm", 0.8), ("rims", 0.7)):
            _write_run(root, "routing_sequential_digits", bb, s, _cfg(bb, image_size=8),
                       {"acc": acc, "res10/acc": acc / 2, "res16/acc": acc / 4 + (0.1 if bb == "rims" else 0)})
            _write_run(root, "routing_copying", bb, s, _cfg(bb, delay=20), {"acc": acc, "delay40/acc": acc / 3})
        # perceiver vs CNN, ordered and permuted
        for bb, perm, acc in (("perceiver_tiny", False, 0.5), ("perceiver_tiny", True, 0.5),
                              ("stn_classifier", False, 0.95), ("stn_classifier", True, 0.65)):
            _write_run(root, "perceiver_permuted", f"{bb}{perm}", s, _cfg(bb, permute_pixels=perm), {"acc": acc})
    # data efficiency (Table 8): replicates are data seeds; RCN 60/80 %, LeNet 40/90 % at 10/100 per class (+ seed)
    for ds in seeds:
        for bb, accs in (("rcn", {10: 0.60, 100: 0.80}), ("lenet5_relu", {10: 0.40, 100: 0.90})):
            exp = "rcn_data_efficiency_rcn" if bb == "rcn" else "rcn_data_efficiency"
            for pc, acc in accs.items():
                cfg = _cfg(bb, per_class=pc) | {"data": {"seed": ds, "options": {"per_class": pc}}}
                _write_run(root, exp, f"{bb}{pc}d{ds}", 0, cfg, {"acc": acc + 0.01 * ds})
    # top-down/bottom-up segmentation (Table 9): mIoU 50/60/70 % (+ data seed) for bottom-up/top-down/combined
    for ds in seeds:
        for mode, miou in (("bottom_up", 0.5), ("top_down", 0.6), ("combined", 0.7)):
            cfg = _cfg("tdbu_segmentation") | {"data": {"seed": ds, "options": {"figure": "circle"}}}
            cfg["model"]["backbone_args"] = {"mode": mode}
            _write_run(root, "tdbu_segmentation_shapes", f"{mode}d{ds}", 0, cfg,
                       {"miou": miou + 0.01 * ds, "pixel_acc": 0.9})
    # the zoo: two backbones x {none, deconv@2}, one seed only (the captions must say so)
    for bb in ("mlp", "lenet5"):
        for fb, steps in (("none", 1), ("deconv", 2)):
            ref = {"params": 60_000, "reference": 60_000, "rel_tol": 0.0, "source": "LeCun et al. 1998", "paper": "",
                   "match": True} if bb == "lenet5" else None  # the mlp's run predates the reference field
            _write_run(root, "baselines_zoo", f"{bb}{fb}", 0, _cfg(bb, fb, steps), {"acc": 0.5}, reference=ref)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper_runs")
    rc = cli_main(["run", "deconv_ablation", f"runs_dir={root}", "log.wandb=disabled", "log.progress=false",
                   "train.epochs=1", "data.options.num_train=64", "data.options.num_test=32", "model.steps=1,2",
                   "train.seed=0,1,2", "eval.noise=[0.2]", "eval.samples=0"])
    assert rc == 0
    _synthetic(root)
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_figure_and_the_paper(runs: Path, tmp_path: Path) -> None:
    from paper import make

    out = tmp_path / "paper"
    made = make.build(runs, out)
    figs = out / "figures"
    for name in make.FIGURES:
        for ext in ("pdf", "png", "csv"):
            assert (figs / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        assert _csv(figs / f"{name}.csv"), f"{name}.csv has no rows"
    paper = (out / "paper.md").read_text()
    assert "{{" not in paper and "(no data)" not in paper
    assert made["paper"] == out / "paper.md"

    # Figure 1 from the real tiny runs: none@1, deconv@1, deconv@2 on lenet5_relu, clean and noisy, 3 seeds each
    steps = _csv(figs / "fig_steps.csv")
    assert list(steps[0]) == ["backbone", "epochs", "feedback", "steps", "condition", "n", "few_seeds", "mean",
                              "ci95", "experiments", "dataset"]
    lenet = {(r["feedback"], r["steps"], r["condition"]): r for r in steps if r["backbone"] == "lenet5_relu"
             and r["epochs"] == "1"}
    assert {("none", "1", "clean"), ("deconv", "2", "clean"), ("deconv", "2", "noise0.2")} <= set(lenet)
    assert all(lenet[k]["n"] == "3" and lenet[k]["ci95"] != "" for k in lenet)
    real = json.loads(next((runs / "deconv_ablation").rglob("result.json")).read_text())
    assert 0.0 <= real["metrics"]["acc"] <= 1.0
    base = lenet[("none", "1", "clean")]
    assert f"{float(base['mean']):.1f} ± {float(base['ci95']):.1f}" in paper  # the backbone's number reaches the text
    # synthetic generative runs: mean 21 %, t interval with n = 3: 4.303 * 1 / sqrt(3) = 2.48
    gen = next(r for r in steps if r["feedback"] == "generative" and r["condition"] == "clean")
    assert math.isclose(float(gen["mean"]), 21.0) and math.isclose(float(gen["ci95"]), 2.484, abs_tol=1e-3)
    assert "21.0 ± 2.5" in paper

    # Table 2: ordering holds on the synthetic numbers; the difficult subset is there
    point = _csv(figs / "tab_pointing.csv")
    assert {(r["method"], r["subset"]) for r in point} >= {("contrastive", "difficult"), ("centre", "all")}
    assert "ordering (c-EB > EB >= gradient > centre) holds" in paper
    assert "81.0 ± 2.5" in paper  # contrastive, difficult: 0.8 + 0.01 s

    # Figure 3: attacks, loop and first
    rob = {(r["model"], r["condition"]) for r in _csv(figs / "fig_robustness.csv")}
    assert ("no feedback", "PGD loop") in rob and ("generative, 2 steps", "FGSM first") in rob
    assert "the end-to-end attack is the stronger one" in paper

    # Figure 4 and 5
    rout = _csv(figs / "fig_routing.csv")
    assert {(r["task"], r["model"], r["x"]) for r in rout} >= {("sequential digits", "rims", "16"),
                                                                ("copying", "lstm", "40")}
    assert "the modular models above the LSTM: rims" in paper
    perc = _csv(figs / "fig_perceiver.csv")
    assert {(r["model"], r["input"]) for r in perc} == {("Perceiver (tiny)", "ordered"), ("Perceiver (tiny)", "permuted"),
                                                        ("CNN", "ordered"), ("CNN", "permuted")}
    assert "drop 30.0 points" in paper

    # Table 6: ratios against the backbone (synthetic generative: 3x FLOPs, 3x time)
    cost = {(r["backbone"], r["feedback"], r["steps"], r["epochs"]): r for r in _csv(figs / "tab_cost.csv")}
    g = cost[("lenet5_relu", "generative", "2", "2")]
    assert math.isclose(float(g["rel_flops"]), 3.0)
    assert float(cost[("lenet5_relu", "deconv", "2", "1")]["feedback_params"]) > 0

    # Table 8: grouped by data seed (train seed 0 everywhere), RCN above LeNet at 10 per class, below at 100
    rcn = {(r["model"], r["per_class"]): r for r in _csv(figs / "tab_rcn.csv")}
    assert set(rcn) == {("RCN", "10"), ("RCN", "100"), ("LeNet-5", "10"), ("LeNet-5", "100")}
    assert rcn[("RCN", "10")]["n"] == "3" and math.isclose(float(rcn[("RCN", "10")]["mean"]), 61.0)
    assert "10 per class: best RCN (61.0 %); RCN 61.0 %, above LeNet-5, below none" in paper
    assert "100 per class: best LeNet-5 (91.0 %); RCN 81.0 %, above none, below LeNet-5" in paper

    # Table 9: the three modes per dataset, combined above both parts
    tdbu = {(r["dataset"], r["mode"]): r for r in _csv(figs / "tab_tdbu.csv")}
    assert set(tdbu) == {("shapes (circles)", m) for m in ("bottom_up", "top_down", "combined")}
    assert tdbu[("shapes (circles)", "combined")]["n"] == "3"
    assert ("shapes (circles): combined 71.0 % against top-down alone 61.0 % (+10.0 points); intervals disjoint "
            "from: bottom-up, top-down") in paper

    # Table 7: one seed -> flagged in CSV and caption
    zoo = _csv(figs / "tab_zoo.csv")
    assert len(zoo) == 4 and all(r["few_seeds"] == "True" and r["n"] == "1" for r in zoo)
    assert {(r["backbone"], r["full_params"], r["reference_params"]) for r in zoo} == {
        ("lenet5", "60000", "60000"), ("mlp", "", "")}
    assert "match the published count for 1 of the 1 backbones" in paper and "| 60,000 | 60,000 | yes |" in paper
    assert "FEWER THAN 3 SEEDS" in paper


def test_only_and_cli(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    rc = cli_main(["paper", "--runs", str(runs), "--no-run", "--only", "fig_perceiver", "--out", str(out)])
    assert rc == 0
    assert (out / "figures" / "fig_perceiver.png").is_file() and not (out / "figures" / "fig_steps.png").exists()
    assert "(not generated: `fig_steps` not selected)" in (out / "paper.md").read_text()


def test_dry_run_and_bad_name(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from paper import make

    assert make.main(["--runs", str(runs), "--dry-run", "--only", "fig_routing"]) == 0
    outp = capsys.readouterr().out
    assert "feedback sweep --backend processes --workers 2 routing_sequential_digits train.epochs=3" in outp
    assert "estimated" in outp  # the cpu scale runs each grid on both cores by default; --workers 1 in one process
    assert make.main(["--runs", str(runs), "--dry-run", "--only", "fig_routing", "--workers", "1"]) == 0
    assert "feedback run routing_sequential_digits train.epochs=3" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown figure"):
        make.modules("fig_nope")
    assert 0 < make.estimate_minutes("cpu") < 90


def test_statistics() -> None:
    from paper.common import fmt_ci, mean_ci, seed_note

    m, h, n = mean_ci([1.0])
    assert (m, n) == (1.0, 1) and math.isnan(h) and fmt_ci(m, h, n) == "1.0"
    assert "FEWER THAN 3 SEEDS" in seed_note([1, 3]) and "FEWER" not in seed_note([3, 5])


def test_paper_imports_no_training() -> None:
    code = ("import sys, paper.make, paper.fig_steps, paper.tab_cost;"
            "bad = [m for m in ('experiments.train', 'torch', 'feedback', 'baselines') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.call([sys.executable, "-c", code]) == 0


def test_gpu_scale_adds_real_datasets_from_a_torchvision_root(tmp_path: Path) -> None:
    """--scale gpu --data-root: one deconv_real invocation per dataset found; its runs become Figure 1 panels."""
    from test_runner_datasets import write_mnist

    from paper import fig_steps, make

    root = tmp_path / "data"
    write_mnist(root)
    inv = make.invocations("gpu", tmp_path / "runs", "fig_steps", data_root=root)
    real = [ov for cfg, ov in inv if cfg == "deconv_real"]
    assert real == [["data.name=mnist", f"data.options.root={root}", "name=deconv_real_mnist", "log.progress=false",
                     f"runs_dir={tmp_path / 'runs'}"]]
    assert not [c for c, _ in make.invocations("cpu", tmp_path / "runs", "fig_steps", data_root=root)
                if c == "deconv_real"]
    assert make.estimate_minutes("gpu", data_root=root) == make.estimate_minutes("gpu") + 25.0
    # the config runs on the (tiny, fake) MNIST files; its runs reach Figure 1 as an MNIST panel
    rc = cli_main(["run", "deconv_real", *real[0][:3], f"runs_dir={tmp_path / 'runs'}", "log.wandb=disabled",
                   "log.progress=false", "model.backbone=lenet5_relu", "model.feedback=none", "train.epochs=1",
                   "data.batch_size=8"])
    assert rc == 0
    rows = fig_steps.collect_rows(tmp_path / "runs")
    assert {(r["dataset"], r["backbone"], r["feedback"], r["n"]) for r in rows if r["condition"] == "clean"} == {
        ("mnist", "lenet5_relu", "none", 3)}
    assert "lenet5_relu on mnist" in fig_steps.facts(rows)["summary"]
    with pytest.raises(SystemExit) as e:
        make.main(["--scale", "gpu", "--data-root", str(tmp_path / "empty"), "--runs", str(tmp_path / "r"),
                   "--dry-run"])
    assert e.value.code == 2
