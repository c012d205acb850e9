"""Every reference parameter count (baselines/references.py) against our model at the reference configuration."""

import pytest

import baselines
from baselines.references import REFERENCES, Reference


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_counts(name):
    got = baselines.check_reference(name)
    assert got["match"], f"{name}: ours {got['params']:,} vs reference {got['reference']:,} ({got['source']})"
    if got["rel_tol"] == 0:
        assert got["params"] == got["reference"]


def test_every_reference_names_a_registered_model():
    assert set(REFERENCES) <= set(baselines.list_models())


def test_tolerance_is_the_papers_rounding():
    ref = Reference(270_000, "He et al. 2016 Table 6", rel_tol=0.005)
    assert ref.matches(269_722) and ref.matches(271_350) and not ref.matches(271_351)
    assert not Reference(100, "x").matches(101) and Reference(100, "x").matches(100)
    assert baselines.check_reference("lenet5_relu") is None  # a modern variant: no paper count


def test_the_runner_records_the_backbones_reference(tmp_path):
    """result.json carries the reference of the trained backbone's architecture (read by the paper's Table 7)."""
    import json

    from experiments.cli import main as cli_main

    rc = cli_main(["run", "quickstart", f"runs_dir={tmp_path}", "log.wandb=disabled", "log.progress=false",
                   "model.backbone=lenet5", "model.steps=1", "model.feedback=none", "train.seed=0", "train.epochs=1",
                   "data.options.num_train=32", "data.options.num_test=16", "data.batch_size=16"])
    assert rc == 0
    (result,) = list(tmp_path.glob("quickstart/*/seed0/result.json"))
    ref = json.loads(result.read_text())["reference"]
    assert ref == baselines.check_reference("lenet5") and ref["params"] == ref["reference"] == 60_000
