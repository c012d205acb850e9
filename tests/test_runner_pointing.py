"""The pointing game inside `feedback run` (eval.pointing): accuracies in result.json and the results table, the
full report in pointing.json, and one-line config errors."""

import json

import pytest

from experiments.config import ConfigError, apply_overrides, load_experiment
from experiments.results import collect, format_table, summarize
from experiments.train import train_run

TINY = {
    "model.backbone": "lenet5_relu", "model.backbone_args": {}, "model.feedback": "deconv", "model.steps": 2,
    "data.name": "cluttered_digits",
    "data.options": {"canvas": 48, "image_size": 32, "num_train": 128, "num_test": 24},
    "data.batch_size": 64, "train.epochs": 1, "train.threads": 1, "log.wandb": "disabled", "log.progress": False,
    "eval.samples": 0,
}


def test_pointing_game_in_the_run(tmp_path):
    cfg, _ = load_experiment("quickstart")
    cfg = apply_overrides(cfg, TINY | {"eval.pointing": ["centre", "gradient", "excitation@1"],
                                       "runs_dir": str(tmp_path)})
    r = train_run(cfg, tmp_path / "quickstart" / "c" / "seed0", cell="c", variant={})
    m = r["metrics"]
    for method in ("centre", "gradient", "excitation@1"):
        assert 0.0 <= m[f"pointing/{method}/all"] <= 1.0
    report = json.loads((tmp_path / "quickstart" / "c" / "seed0" / "pointing.json").read_text())
    assert report["images"] == 24 and report["gt"] == "mask" and report["steps"] == 2
    assert report["results"]["centre"]["pairs"] > 24  # every digit present in every scene is a trial
    (tmp_path / "quickstart" / "c" / "seed0" / "DONE").touch()
    keys, rows = summarize(collect(tmp_path))
    assert "point:centre %" in format_table(keys, rows)


@pytest.mark.parametrize("values, message", [
    ({"eval.pointing": ["gradient"], "data.name": "digits", "data.options": {"image_size": 32}}, "masks or boxes"),
    ({"eval.pointing": ["excitaton"]}, "did you mean 'excitation'"),
])
def test_pointing_config_errors(tmp_path, values, message):
    cfg, _ = load_experiment("quickstart")
    with pytest.raises(ConfigError, match=message):
        train_run(apply_overrides(cfg, TINY | values), tmp_path / "run", cell="c", variant={})
