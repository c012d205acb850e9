"""`log.diagnostics=true`: gradient norms per module and dead/zero ReLU shares land in metrics.jsonl."""

from experiments.config import apply_overrides, load_experiment
from experiments.tracking import read_metrics
from experiments.train import train_run


def test_diagnostics_are_logged(tmp_path):
    cfg, _ = load_experiment("quickstart")
    cfg = apply_overrides(cfg, {
        "model.backbone": "lenet5_relu", "model.feedback": "none", "model.steps": 1, "data.name": "digits",
        "data.options": {}, "train.epochs": 1, "train.log_every": 5, "log.wandb": "disabled",
        "log.progress": False, "log.diagnostics": True, "eval.samples": 0,
    })
    train_run(cfg, tmp_path / "run", cell="c", variant={})
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert rows
    for r in rows:
        norms = {k: v for k, v in r.items() if k.startswith("diag/grad_norm/")}
        # LeNet-5 (ReLU) has five parameterised modules: three convolutions and two linear layers
        assert len(norms) == 5 and all(v > 0 for v in norms.values())
        dead = {k: v for k, v in r.items() if k.startswith("diag/dead_relu/")}
        zero = {k: v for k, v in r.items() if k.startswith("diag/zero_relu/")}
        assert len(dead) == len(zero) == 4 and all(0.0 <= v <= 1.0 for v in (*dead.values(), *zero.values()))
