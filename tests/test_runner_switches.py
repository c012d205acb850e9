"""Performance and training switches: gradient checkpointing, determinism, compile, augmentation, weight
averaging, dropout pass-through."""

import copy
import json

import pytest
import torch

import baselines
from experiments.augment import augment_batch
from experiments.config import apply_overrides, load_experiment
from experiments.train import WeightAverage, apply_runtime, enable_grad_checkpointing, train_run
from feedback import FeedbackNet


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster than two, and far faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net():
    torch.manual_seed(0)
    bb = baselines.create_model("resnet18_small", num_classes=10, in_chans=1, channels=[4, 4, 8, 8], drop_rate=0.3)
    return FeedbackNet(bb, "deconv", steps=3, input_size=(1, 8, 8))


def _train_step(net, x, y, seed):
    torch.manual_seed(seed)
    net.train()
    out = net(x)
    loss = sum(torch.nn.functional.cross_entropy(lg, y) for lg in out.per_step)
    loss.backward()
    return out, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_grad_checkpointing_is_exact_and_keeps_state_dict_names():
    plain = _net()
    ckpt = copy.deepcopy(plain)
    assert enable_grad_checkpointing(ckpt) == 4
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    (oa, ga), (ob, gb) = _train_step(plain, x, y, 1), _train_step(ckpt, x, y, 1)
    assert all(torch.equal(a, b) for a, b in zip(oa.per_step, ob.per_step))
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    # the recomputation must not update batch-norm running statistics a second time (or at the wrong step)
    sa, sb = plain.state_dict(), ckpt.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a deep copy (weight averaging) runs its own stages, not the original's
    twin = copy.deepcopy(ckpt)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    assert not torch.equal(twin.eval()(x).logits, ckpt.eval()(x).logits)


def test_deterministic_switch_sets_the_flags():
    cfg, _ = load_experiment("quickstart")
    try:
        apply_runtime(apply_overrides(cfg, {"train.deterministic": True}))
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.deterministic
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        apply_runtime(cfg)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark


def test_augmentation():
    x = torch.rand(8, 3, 16, 16)
    assert augment_batch(x) is x
    torch.manual_seed(0)
    a = augment_batch(x, rotate=15, shift=2, scale=0.1, hflip=True, color=0.3, noise=0.05)
    torch.manual_seed(0)
    b = augment_batch(x, rotate=15, shift=2, scale=0.1, hflip=True, color=0.3, noise=0.05)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, x)
    # a pure shift by whole pixels moves the content: the mass is (nearly) preserved away from the border
    img = torch.zeros(1, 1, 16, 16)
    img[..., 6:10, 6:10] = 1
    moved = augment_batch(img.expand(64, -1, -1, -1).contiguous(), shift=3)
    assert (moved.sum((1, 2, 3)) - 16).abs().max() < 1.0 and moved.std(0).max() > 0.1
    cl = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert augment_batch(cl, noise=0.1).is_contiguous(memory_format=torch.channels_last)


def test_weight_averages():
    net = torch.nn.Linear(2, 2)
    swa = WeightAverage(net, kind="swa")
    ws = []
    for v in (1.0, 2.0, 6.0):
        with torch.no_grad():
            net.weight.fill_(v)
        swa.update(net)
        ws.append(v)
    assert torch.allclose(swa.module.weight, torch.full((2, 2), 3.0)) and int(swa.n_averaged) == 3
    ema = WeightAverage(net, kind="ema", decay=0.5)
    for v in (2.0, 4.0):
        with torch.no_grad():
            net.weight.fill_(v)
        ema.update(net)
    assert torch.allclose(ema.module.weight, torch.full((2, 2), 3.0))


TINY = {
    "model.backbone": "resnet18_small", "model.backbone_args": {"channels": [4, 4, 8, 8], "drop_rate": 0.25},
    "model.feedback": "deconv", "model.steps": 2, "data.name": "digits", "data.options": {"image_size": 8},
    "data.batch_size": 256, "train.epochs": 2, "train.threads": 1, "log.wandb": "disabled", "log.progress": False,
}


def test_swa_tta_mc_dropout_robustness_in_one_run(tmp_path):
    cfg, _ = load_experiment("quickstart")
    cfg = apply_overrides(cfg, TINY | {
        "train.average": "swa", "train.swa_start": 0.5, "train.grad_checkpoint": True,
        "data.augment.shift": 1.0, "eval.tta": True, "eval.mc_dropout": 3, "eval.noise": [0.2],
        "eval.occlusion": [4], "eval.samples": 4,
    })
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    m = r["metrics"]
    for k in ("acc", "acc_step2", "tta/acc", "mc_dropout/acc", "noise0.2/acc", "occlusion4/acc"):
        assert 0.0 <= m[k] <= 1.0, k
    assert "metrics_raw" in r and r["compute"]["train_step_ms"] > 0 and r["compute"]["peak_rss_mb"] > 0
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0
    preds = torch.load(tmp_path / "run" / "predictions.pt", weights_only=True)
    assert preds["logits"].shape == (450, 10)
    # the dropout rate reached the backbone through model.backbone_args
    assert "drop_rate=0.25" in (tmp_path / "run" / "config.yaml").read_text().replace(": ", "=")


@pytest.mark.slow  # torch.compile on CPU takes about a minute on 2 cores
def test_compile_switch(tmp_path):
    cfg, _ = load_experiment("quickstart")
    r = train_run(apply_overrides(cfg, TINY | {"train.compile": True, "train.epochs": 1}), tmp_path / "run",
                  cell="c", variant={})
    assert 0.0 <= r["metrics"]["acc"] <= 1.0


def test_attacks_through_the_loop_and_first_pass_and_seed_ensembles(tmp_path):
    """eval.attacks goes through experiments.attacks; feedback results scores a cell's seeds as an ensemble."""
    pytest.importorskip("experiments.attacks")
    from experiments.results import collect, format_table, summarize
    from experiments.sweep import expand_grid, run_sweep

    cfg, _ = load_experiment("quickstart")
    cfg = apply_overrides(cfg, TINY | {"model.backbone": "lenet5_relu", "model.backbone_args": {},
                                       "data.options": {"image_size": 32}, "runs_dir": str(tmp_path),
                                       "eval.attacks": ["fgsm", "pgd"], "eval.eps": [0.1], "eval.attack_images": 64,
                                       "eval.samples": 0, "train.epochs": 2})
    cells = expand_grid(cfg, {"train.seed": [0, 1]})
    assert run_sweep(cells, train_run, progress=False, echo=lambda s: None)["done"] == 2
    r = json.loads((cells[0].runs[0].run_dir / "result.json").read_text())["metrics"]
    for name in ("fgsm", "pgd"):
        for through in ("loop", "first"):
            assert 0.0 <= r[f"{name}_eps0.1_{through}/acc"] <= 1.0
    assert r["pgd_eps0.1_loop/acc"] < r["acc"]  # an attack through the whole loop hurts
    keys, rows = summarize(collect(tmp_path))
    assert len(rows) == 1 and 0.0 <= rows[0]["acc_ens"] <= 1.0 and "ens %" in format_table(keys, rows)


def test_tensorboard_sink_optional(tmp_path, capsys):
    from experiments.cli import main
    from experiments.tracking import RunLogger, tensorboard_available

    if not tensorboard_available():
        code = main(["run", "quickstart", f"runs_dir={tmp_path}", "log.tensorboard=true"])
        assert code == 2 and "pip install tensorboard" in capsys.readouterr().err
        pytest.skip("the tensorboard package is not installed (the CLI says so, exit 2)")
    logger = RunLogger(tmp_path, config={}, wandb_mode="disabled", tensorboard=True)
    logger.log({"train/loss": 1.0}, step=1)
    logger.finish()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("module", ["experiments.augment", "experiments.evaluate"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
