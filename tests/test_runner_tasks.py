"""The runner beyond image classification (docs/tasks.md): dict inputs, the tokens and regress tasks, lists of
outputs, extra test sets, non-Staged models through PlainNet, and the config errors that guard them."""

import json

import pytest
import torch
import torch.nn as nn

import baselines
from experiments.config import ConfigError, ExperimentConfig, apply_overrides
from experiments.data import DatasetSplits, SampleSet, register_dataset
from experiments.results import collect, format_table, summarize
from experiments.tasks import create_task
from experiments.train import train_run
from feedback import PlainNet

# ----------------------------------------------------------------------------------- toy data and models, once


def _tokens(n, length, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (n, length), generator=g)
    y = x.clone()
    y[:, ::2] = -100  # only the odd positions are scored
    return SampleSet(inputs={"tokens": x, "mask": torch.ones(n, length)}, targets=y)


@register_dataset
def _toy_echo(*, seed: int = 0, length: int = 6) -> DatasetSplits:
    """Echo each token (a dict input; half the positions scored)."""
    return DatasetSplits(train=_tokens(256, length, seed), test=_tokens(64, length, seed + 1),
                         tests={"long": _tokens(64, 2 * length, seed + 2)}, num_classes=4, in_chans=4, image_size=0,
                         multilabel=False, task="tokens")


@register_dataset
def _toy_line(*, seed: int = 0) -> DatasetSplits:
    """y = (x0 + x1) / 2 on [0, 1]^2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(320, 2, generator=g)
    s = SampleSet(inputs=x, targets=x.mean(-1, keepdim=True))
    return DatasetSplits(train=SampleSet(inputs=x[:256], targets=s.targets[:256]),
                         test=SampleSet(inputs=x[256:], targets=s.targets[256:]), num_classes=1, in_chans=2,
                         image_size=0, multilabel=False, task="regress")


class _Echo(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.out = nn.Linear(16, vocab)

    def forward(self, *, tokens, mask):
        return self.out(self.emb(tokens) * mask[..., None])


@baselines.register_model(family="toy", staged=False)
def _toy_echo_model(*, num_classes: int = 4, in_chans: int = 4) -> nn.Module:
    return _Echo(in_chans)


class _TwoStep(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.a, self.b = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)

    def forward(self, x):
        coarse = self.a(x)
        return [coarse, coarse + self.b(x)]


@baselines.register_model(family="toy", staged=False)
def _toy_two_step(*, num_classes: int = 1, in_chans: int = 2) -> nn.Module:
    return _TwoStep(in_chans, num_classes)


def _cfg(tmp_path, **values):
    base = {"name": "toy", "runs_dir": str(tmp_path), "train.epochs": 3, "train.lr": 0.03, "train.warmup_steps": 0,
            "train.log_every": 4, "data.batch_size": 32, "log.wandb": "disabled", "log.progress": False,
            "eval.samples": 8, "model.readout": "last"}
    return apply_overrides(ExperimentConfig(), base | values)


# ------------------------------------------------------------------------------------------------------ tasks


def test_tokens_task_scores_only_the_marked_positions():
    task = create_task("tokens")
    logits = torch.full((1, 4, 3), -5.0)
    logits[0, :, 0] = 5.0  # predicts class 0 everywhere
    target = torch.tensor([[0, -100, 1, 0]])
    m = task.correct(logits, target)
    assert m["acc"].item() == pytest.approx(2 / 3) and m["seq_acc"].item() == 0.0
    unmasked = torch.nn.functional.cross_entropy(logits[0, [0, 2, 3]], target[0, [0, 2, 3]])
    assert task.loss(logits, target).item() == pytest.approx(unmasked.item())
    assert m["nll"].item() == pytest.approx(unmasked.item(), rel=1e-5)
    with pytest.raises(ValueError, match="class dimension"):
        task.loss(logits[..., 0], target)


def test_regress_task_psnr():
    task = create_task("regress")
    out, target = torch.zeros(2, 3), torch.full((2, 3), 0.1)
    assert task.correct(out, target)["mse"].tolist() == pytest.approx([0.01, 0.01])
    assert task.finalize({"mse": 0.01, "mse_step1": 0.1})["psnr"] == pytest.approx(20.0)
    assert task.finalize({"mse": 0.01, "mse_step1": 0.1})["psnr_step1"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="unknown task"):
        create_task("segmentt")


def test_plain_net_wraps_tensor_and_list_outputs():
    two = PlainNet(_TwoStep(2, 1))
    out = two(torch.zeros(3, 2))
    assert len(out.per_step) == 2 and out.logits is out.per_step[-1]
    echo = PlainNet(_Echo(4))
    assert echo({"tokens": torch.zeros(2, 5, dtype=torch.long), "mask": torch.ones(2, 5)}).logits.shape == (2, 5, 4)


# ------------------------------------------------------------------------------------------------- the runner


def test_tokens_run_with_dict_inputs_and_an_extra_test_set(tmp_path):
    cfg = _cfg(tmp_path, **{"model.backbone": "_toy_echo_model", "data.name": "_toy_echo"})
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    m = r["metrics"]
    assert m["acc"] > 0.9 and m["long/acc"] > 0.9 and m["acc_step1"] == m["acc"]  # echo is learnable at any length
    assert 0.0 <= m["seq_acc"] <= 1.0 and m["nll"] < 1.0
    assert r["task"] == "tokens" and r["primary"] == "acc" and r["tests"] == ["long"]
    assert r["cost"]["feedback_params"] == 0 and r["cost"]["backbone_params"] == 4 * 16 + 16 * 4 + 4
    assert not (tmp_path / "run" / "predictions.pt").exists() and not (tmp_path / "run" / "samples.png").exists()


def test_regress_run_supervises_every_output_and_reports_psnr(tmp_path):
    cfg = _cfg(tmp_path, **{"model.backbone": "_toy_two_step", "data.name": "_toy_line", "train.epochs": 15,
                              "train.lr": 0.1})
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    m = r["metrics"]
    assert m["psnr"] == pytest.approx(-10 * torch.log10(torch.tensor(m["mse"])).item())
    assert {"mse_step1", "mse_step2", "psnr_step1", "psnr_step2"} <= set(m)
    assert m["psnr"] > 25.0  # a linear target: far above predicting the mean (13.8 dB: variance 1/24)
    rows = json.loads((tmp_path / "run" / "result.json").read_text())
    assert rows["primary"] == "psnr"
    (tmp_path / "run" / "DONE").touch()
    keys, table = summarize(collect(tmp_path))
    text = format_table(keys, table)
    assert "PSNR dB" in text and "acc %" not in text


@pytest.mark.parametrize("values, message", [
    ({"model.feedback": "deconv"}, "no Staged view"),
    ({"model.steps": 2}, "no Staged view"),
    ({"task": "classify"}, "does not fit data"),
    ({"eval.noise": [0.1]}, "need image data"),
    ({"data.augment.shift": 2.0}, "need image data"),
    ({"eval.mc_dropout": 2}, "mc_dropout"),
])
def test_config_errors_for_non_image_tasks(tmp_path, values, message):
    cfg = _cfg(tmp_path, **{"model.backbone": "_toy_two_step", "data.name": "_toy_line"} | values)
    with pytest.raises(ConfigError, match=message):
        train_run(cfg, tmp_path / "run", cell="c", variant={})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tokens_and_regress_runs_on_cuda_with_amp(tmp_path):
    for name, model, data in (("tok", "_toy_echo_model", "_toy_echo"), ("reg", "_toy_two_step", "_toy_line")):
        cfg = _cfg(tmp_path, **{"model.backbone": model, "data.name": data, "train.device": "cuda",
                                "train.amp": True, "train.epochs": 2})
        r = train_run(cfg, tmp_path / name, cell="c", variant={})
        assert r["compute"]["device"].startswith("cuda") and all(map(lambda v: v == v, r["metrics"].values()))


def test_train_split_on_device_policy():
    from experiments.data import ImageSet
    from experiments.train import train_split_on_device

    img = ImageSet(images=torch.zeros(4, 1, 2, 2), labels=torch.zeros(4, dtype=torch.long),
                   source_ids=torch.zeros(4, 1, dtype=torch.long))
    toks = _tokens(4, 3, 0)
    assert train_split_on_device(img, torch.device("cpu"), "always") is img
    meta = torch.device("meta")
    assert train_split_on_device(img, meta, "auto") is img  # auto moves to CUDA only
    assert train_split_on_device(img, meta, "never") is img
    moved = train_split_on_device(img, meta, "always")
    assert moved.images.is_meta and moved.labels.is_meta and not moved.source_ids.is_meta
    moved = train_split_on_device(toks, meta, "always")
    assert all(v.is_meta for v in moved.inputs.values()) and moved.targets.is_meta


def test_sync_bn_switch_converts_before_feedback_collects_the_norms(tmp_path):
    """train.sync_bn: SyncBatchNorm layers, which FeedbackNet's per-step statistics then point at (one process:
    SyncBatchNorm computes plain batch norm, so the run trains as usual)."""
    from experiments.train import build_model, load_data

    cfg = _cfg(tmp_path, **{"model.backbone": "resnet18_small", "model.backbone_args": {"channels": [4, 4, 8, 8]},
                            "model.feedback": "deconv", "model.steps": 2, "data.name": "digits",
                            "data.options": {"image_size": 16}, "train.sync_bn": True, "train.epochs": 1,
                            "eval.samples": 0})
    net = build_model(cfg, load_data(cfg))
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert net._norms and all(isinstance(m, nn.SyncBatchNorm) for m in net._norms)
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    assert 0.0 <= r["metrics"]["acc"] <= 1.0


# ------------------------------------------------------- set-level metrics, model-computed losses, lr multipliers


class _CountTask:
    """A toy task with a set-level metric: the share of all scored targets predicted right, from a running count."""

    metric_names, primary, step_metric = ("mse",), "mse", "mse"

    def loss(self, out, y):
        return torch.nn.functional.mse_loss(out, y)

    def correct(self, out, y):
        return {"mse": (out - y).pow(2).mean(-1)}

    def init_state(self):
        return {"n": 0, "close": 0}

    def update(self, state, out, y):
        state["n"] += y.shape[0]
        state["close"] += int(((out - y).abs().max(-1).values < 0.1).sum())

    def merge(self, states):
        return {k: sum(s[k] for s in states) for k in states[0]}

    def compute(self, state):
        return {"close": state["close"] / state["n"]}


class _SelfLoss(nn.Module):
    """Computes its own training loss from ``target`` (as torchvision detectors do); predicts in eval mode."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x, target=None):
        out = self.lin(x)
        if target is not None:
            return {"losses": {"mse": torch.nn.functional.mse_loss(out, target)}, "out": None}
        return out

    def lr_scales(self):
        return {"lin.bias": 10.0}


@baselines.register_model(family="toy", staged=False)
def _toy_self_loss(*, num_classes: int = 1, in_chans: int = 2) -> nn.Module:
    return _SelfLoss()


@register_dataset
def _toy_line_set(*, seed: int = 0) -> DatasetSplits:
    d = _toy_line(seed=seed)
    d.task = "_count"
    return d


def test_set_level_metrics_model_losses_and_lr_scales(tmp_path, monkeypatch):
    from experiments import tasks
    from experiments.train import make_optimizer

    monkeypatch.setitem(tasks.TASKS, "_count", _CountTask)
    cfg = _cfg(tmp_path, **{"model.backbone": "_toy_self_loss", "data.name": "_toy_line_set", "train.epochs": 15,
                            "train.lr": 0.1})
    net = PlainNet(_SelfLoss())
    assert net.takes_target and not PlainNet(_TwoStep(2, 1)).takes_target
    opt = make_optimizer(net, cfg)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1, pytest.approx(1.0)]
    assert opt.param_groups[2]["params"] == [net.backbone.lin.bias]
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    m = r["metrics"]
    assert 0.9 < m["close"] <= 1.0 and m["mse"] < 0.003  # learnt from its own loss; the set metric counts it
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/aux/mse" in row for row in rows)


class _Centroids(nn.Module):
    """Learns without gradients: class centroids (a buffer) from ``fit``; logits = -squared distance."""

    def __init__(self, num_classes, in_chans):
        super().__init__()
        self.register_buffer("centroids", torch.zeros(num_classes, in_chans))

    def fit(self, inputs, targets):
        for k in range(self.centroids.shape[0]):
            self.centroids[k] = inputs[targets == k].mean(0)

    def forward(self, x):
        return -torch.cdist(x, self.centroids).pow(2)


@baselines.register_model(family="toy", staged=False)
def _toy_centroids(*, num_classes: int = 2, in_chans: int = 2) -> nn.Module:
    return _Centroids(num_classes, in_chans)


@register_dataset
def _toy_blobs(*, seed: int = 0) -> DatasetSplits:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(200) % 2
    x = torch.randn(200, 2, generator=g) * 0.5 + y[:, None] * 3.0
    return DatasetSplits(train=SampleSet(inputs=x[:150], targets=y[:150]), test=SampleSet(inputs=x[150:],
                         targets=y[150:]), num_classes=2, in_chans=2, image_size=0, multilabel=False)


def test_a_model_fitted_without_gradients(tmp_path):
    """fit() once, no optimizer steps, evaluated and checkpointed as usual; a resumed run refits then loads."""
    from experiments.checkpoint import load_checkpoint

    cfg = _cfg(tmp_path, **{"model.backbone": "_toy_centroids", "data.name": "_toy_blobs", "train.epochs": 1})
    r = train_run(cfg, tmp_path / "run", cell="c", variant={})
    assert r["metrics"]["acc"] > 0.95 and r["compute"]["train_step_ms"] is None and r["train_steps"] == 0
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["model"]["backbone.centroids"].abs().sum() > 0
    again = train_run(cfg, tmp_path / "run", cell="c", variant={})  # resumes the finished run: same metrics
    assert again["metrics"] == r["metrics"]
