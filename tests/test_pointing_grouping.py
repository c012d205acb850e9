"""experiments.pointing's summary grouped by dataset and backbone, the accuracy table and --reuse."""

import json

import pytest

from experiments import pointing
from experiments.pointing import (
    format_accuracy_table,
    format_pointing_table,
    reuse_report,
    summarize_accuracy,
    summarize_pointing,
)


def _rep(dataset, backbone, eb, acc=None):
    r = {"dataset": dataset, "backbone": backbone, "results": {"eb": {"all": eb, "difficult": eb - 0.1}}}
    if acc is not None:
        r["accuracy"] = {"acc": acc, "hit": acc + 0.1}
    return r


REPORTS = [_rep("digits", "net", 0.5, 0.8), _rep("digits", "net", 0.7, 0.6), _rep("shapes", "net", 0.9, 0.9),
           _rep("shapes", "vgg", 0.3)]


def test_summary_groups_by_dataset_and_backbone():
    s = summarize_pointing(REPORTS)
    assert sorted(s) == ["digits/net", "shapes/net", "shapes/vgg"]
    assert s["digits/net"]["eb"]["all"] == pytest.approx(0.6) and s["digits/net"]["eb"]["n"] == 2
    assert s["shapes/net"]["eb"]["all"] == pytest.approx(0.9) and s["shapes/net"]["eb"]["n"] == 1
    by_backbone = summarize_pointing(REPORTS, by="backbone")
    assert sorted(by_backbone) == ["net", "vgg"] and by_backbone["net"]["eb"]["n"] == 3
    # one dataset only: auto groups per backbone, as before; by="dataset" forces the prefix
    assert sorted(summarize_pointing(REPORTS[:2])) == ["net"]
    assert sorted(summarize_pointing(REPORTS[:2], by="dataset")) == ["digits/net"]
    with pytest.raises(ValueError, match="unknown grouping"):
        summarize_pointing(REPORTS, by="seed")


def test_table_has_a_section_per_dataset():
    table = format_pointing_table(summarize_pointing(REPORTS))
    digits, shapes = table.split("#### shapes")
    assert digits.startswith("#### digits") and "| method | net All | net Difficult |" in digits
    assert "| eb | 60.0 ± 14.1 | 50.0 ± 14.1 |" in digits
    assert "| method | net All | net Difficult | vgg All | vgg Difficult |" in shapes
    assert "| eb | 90.0 | 80.0 | 30.0 | 20.0 |" in shapes


def test_accuracy_table():
    acc = summarize_accuracy(REPORTS)
    assert sorted(acc) == ["digits/net", "shapes/net"]  # shapes/vgg has no accuracy
    assert acc["digits/net"]["acc"] == pytest.approx(0.7) and acc["digits/net"]["n"] == 2
    table = format_accuracy_table(acc)
    assert "| digits/net | 70.0 ± 14.1 | 80.0 ± 14.1 | 2 |" in table and "| shapes/net | 90.0 | 100.0 | 1 |" in table


def _fake_run(root, name, dataset, eb):
    d = root / name / "seed0"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "last.pt").write_bytes(b"")
    (d / "config.yaml").write_text(f"data:\n  name: {dataset}\nmodel:\n  backbone: net\ntrain:\n  seed: 0\n")
    (d / "result.json").write_text(json.dumps({"metrics": {"acc": 0.5, "hit": 0.75, "pointing/eb/all": eb}}))
    rep = {"backbone": "net", "seed": 0, "tolerance_px": 2.14, "gt": "mask", "images": 10,
           "results": {m: {"all": eb, "difficult": eb, "pairs": 12, "difficult_pairs": 4} for m in ("eb", "centre")}}
    (d / "pointing.json").write_text(json.dumps(rep))
    return d


def test_reuse_and_main_group_by_dataset(tmp_path):
    a = _fake_run(tmp_path, "a", "cluttered_digits", 0.5)
    _fake_run(tmp_path, "b", "shapes", 0.75)
    rep = reuse_report(a, ["eb"])
    assert rep["dataset"] == "cluttered_digits" and rep["accuracy"] == {"acc": 0.5, "hit": 0.75}
    assert list(rep["results"]) == ["eb"]
    assert list(reuse_report(a, ["gradient", "eb"])["results"]) == ["eb"]  # only the methods it scored
    assert reuse_report(a, ["gradient"]) is None
    assert reuse_report(a, ["eb"], max_images=5) is None and reuse_report(a, ["eb"], small_fraction=0.5) is None
    # the checkpoints are empty files: main must not load them, only reuse the reports
    assert pointing.main([str(tmp_path), "--methods", "eb,centre", "--reuse", "--device", "cpu"]) == 0
    md = (tmp_path / "pointing.md").read_text()
    assert "#### cluttered_digits" in md and "#### shapes" in md and "| eb | 75.0 | 75.0 |" in md
    assert "| shapes/net | 50.0 | 75.0 | 1 |" in md and "shapes: 12 (image, class) pairs, 4 difficult" in md


def test_reuse_plays_only_the_missing_methods(tmp_path):
    from experiments.config import load_experiment
    from experiments.train import train_run

    cfg, _ = load_experiment("pointing_game", [
        f"runs_dir={tmp_path}", "model.backbone=lenet5_relu", "train.epochs=1", "data.name=shapes",
        "data.options={image_size: 32, num_train: 64, num_test: 8}", "eval.pointing=[centre,gradient]",
        "log.wandb=disabled", "log.progress=false"])
    run = tmp_path / "pointing_game" / "lenet" / "seed0"
    train_run(cfg, run, cell="lenet", variant={})
    first = json.loads((run / "pointing.json").read_text())
    assert set(first["results"]) == {"centre", "gradient"}
    assert pointing.main([str(run.parent), "--methods", "gradient,excitation@1", "--reuse", "--device", "cpu"]) == 0
    merged = json.loads((run / "pointing.json").read_text())
    assert set(merged["results"]) == {"centre", "gradient", "excitation@1"} and merged["dataset"] == "shapes"
    assert merged["results"]["gradient"] == first["results"]["gradient"]  # reused, not replayed
    md = (run.parent / "pointing.md").read_text()
    assert "| excitation@1 |" in md and "| centre |" not in md and "| lenet5_relu | " in md
