"""Tests of baselines/: parameter counts, LeNet-5's C3 table, the Staged contract, timm parity and the registry."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, ResNet

import baselines
from baselines.lenet import C3_TABLE
from baselines.resnet import StagedResNet, small_input_stem_


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def probe_input(model: nn.Module, batch: int = 2, size: int | None = None) -> torch.Tensor:
    """A random batch at ``size`` px (default: the model's input size, capped at 64 px to keep 224 px models fast)."""
    c, h, w = model.input_size
    h, w = (size, size) if size is not None else (min(h, 64), min(w, 64))
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


def small_case(name: str) -> tuple[dict, int | None]:
    """The registry's fast configuration of ``name``: create_model keyword arguments and the input side."""
    info = baselines.model_info(name)
    kwargs = {"num_classes": 10, "in_chans": 3} | (info["small"] or {})
    return kwargs, info["small_input_size"]


def registry_params() -> list:
    """Every registered name, marked slow where the registry says even its small configuration is slow."""
    slow = pytest.mark.slow
    return [pytest.param(n, marks=slow) if baselines.model_info(n)["slow"] else n for n in baselines.list_models(staged=True)]


def run_staged(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    h = model.stem(x)
    outs = []
    for stage in model.stages:
        h = stage(h)
        outs.append(h)
    return model.head(h), outs


# ----------------------------------------------------------------------------------------------- parameter counts


def test_lenet5_has_exactly_60000_trainable_parameters_and_fixed_prototypes():
    model = baselines.create_model("lenet5", num_classes=10, in_chans=1)
    assert n_params(model, trainable_only=True) == n_params(model) == 60_000
    per_stage = [n_params(s) for s in model.stages]
    assert per_stage == [156, 12, 1_516, 32, 48_120, 10_164]
    assert n_params(model.head) == 0
    buffers = dict(model.head.named_buffers())
    assert buffers["prototypes"].shape == (10, 84)
    assert set(buffers["prototypes"].unique().tolist()) == {-1.0, 1.0}
    assert "head.prototypes" in model.state_dict()


def test_lenet5_init_follows_the_paper():
    model = baselines.create_model("lenet5", num_classes=10, in_chans=1)
    c1, c3, c5 = model.stages[0][0], model.stages[2][0], model.stages[4][0]
    assert c1.weight.abs().max() <= 2.4 / 25
    assert c5.weight.abs().max() <= 2.4 / 400
    # C3 connection c belongs to map j with fan-in 25 * len(table[j]).
    bounds = torch.tensor([2.4 / (25 * len(C3_TABLE[j])) for j in c3.out_index.tolist()])
    assert (c3.weight.abs().amax(dim=(1, 2)) <= bounds).all()


def test_other_parameter_counts():
    assert n_params(baselines.create_model("lenet5_relu", num_classes=10, in_chans=1)) == 61_706
    assert n_params(baselines.create_model("resnet18", num_classes=1000, in_chans=3)) == 11_689_512
    assert n_params(baselines.create_model("resnet18_small", num_classes=10, in_chans=3)) == 11_173_962


# ----------------------------------------------------------------------------------------------- LeNet-5 details


def test_c3_connectivity_matches_table_1():
    model = baselines.create_model("lenet5", num_classes=10, in_chans=1)
    c3 = model.stages[2]
    s2 = torch.randn(1, 6, 14, 14, requires_grad=True)
    out = c3(s2)
    assert out.shape == (1, 16, 10, 10)
    assert c3[0].weight.shape == (60, 5, 5)
    for j, expected in enumerate(C3_TABLE):
        (grad,) = torch.autograd.grad(out[:, j].sum(), s2, retain_graph=True)
        connected = {i for i in range(6) if grad[0, i].abs().sum() > 0}
        assert connected == set(expected), f"C3 map {j}"
    assert sum(len(t) for t in C3_TABLE) == 60


@pytest.mark.parametrize("name", ["lenet5", "lenet5_relu"])
@pytest.mark.parametrize("size", [28, 36])
def test_lenet_rejects_wrong_input_size(name, size):
    model = baselines.create_model(name, num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="32, 32"):
        model(torch.zeros(1, 1, size, size))


def test_lenet5_rbf_logits_are_negative_squared_distances():
    model = baselines.create_model("lenet5", num_classes=10, in_chans=1).eval()
    f6 = torch.randn(3, 84)
    logits = model.head(f6)
    expected = -(torch.cdist(f6, model.head.prototypes) ** 2)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    same = baselines.create_model("lenet5", num_classes=10, in_chans=1).head.prototypes
    assert torch.equal(model.head.prototypes, same)  # seeded: the same codes in every run


# ----------------------------------------------------------------------------------------------- Staged contract


@pytest.mark.parametrize("name", registry_params())
def test_staged_contract(name):
    torch.manual_seed(0)
    kwargs, size = small_case(name)
    model = baselines.create_model(name, **kwargs)
    for attr in ("stem", "stages", "head"):
        assert isinstance(getattr(model, attr), nn.Module)
    assert isinstance(model.stages, nn.ModuleList)
    assert len(model.channels) == len(model.strides) == len(model.stages)
    assert len(model.input_size) == 3 and model.input_size[0] == kwargs["in_chans"]
    assert model.num_classes == kwargs["num_classes"]

    x = probe_input(model, size=size)
    model.eval()
    with torch.no_grad():
        logits, outs = run_staged(model, x)
        assert torch.equal(logits, model(x))
    assert logits.shape == (2, kwargs["num_classes"])

    height = x.shape[-1]
    prev_stride = 1
    for i, (out, c, s) in enumerate(zip(outs, model.channels, model.strides)):
        if out.dim() == 3:  # tokens (B, L, D): channels = the token dimension, strides = the patch size
            assert getattr(model, "output_fmt", None) == "NLC", f"stage {i}: token output without output_fmt NLC"
            assert out.shape[-1] == c and s >= prev_stride, f"stage {i}"
            continue
        assert out.shape[1] == c, f"stage {i} channels"
        if out.dim() == 2:
            assert s == 0, f"stage {i}: vector output must have stride 0"
            continue
        assert out.dim() == 4 and s >= prev_stride, f"stage {i}"
        assert out.shape[-1] <= math.ceil(height / s), f"stage {i}: output denser than stride {s}"
        prev_stride = s

    model.train()
    model(x).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_lenet_strides_and_shapes():
    for name in ("lenet5", "lenet5_relu"):
        model = baselines.create_model(name, num_classes=10, in_chans=1)
        _, outs = run_staged(model, torch.zeros(1, 1, 32, 32))
        shapes = [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,)]
        assert [tuple(o.shape[1:]) for o in outs] == shapes
        assert model.strides == [1, 2, 2, 4, 4, 0]
        assert isinstance(model.stem, nn.Identity)


@pytest.mark.parametrize(
    ("name", "size", "strides"), [("resnet18", 64, [4, 8, 16, 32]), ("resnet18_small", 32, [1, 2, 4, 8])]
)
def test_resnet_strides_are_exact(name, size, strides):
    model = baselines.create_model(name, num_classes=10, in_chans=3).eval()
    _, outs = run_staged(model, torch.zeros(1, 3, size, size))
    assert model.strides == strides
    assert [o.shape[-1] for o in outs] == [size // s for s in strides]


# ----------------------------------------------------------------------------------------------- timm parity


def test_resnet18_bit_identical_to_timm():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=10).eval()
    staged = StagedResNet.from_timm(net).eval()
    assert staged.stem[0] is net.conv1 and staged.stages[3] is net.layer4 and staged.head.fc is net.fc
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(staged(x), net(x))
    ours = baselines.create_model("resnet18", num_classes=10, in_chans=3)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in staged.parameters()]


def test_resnet18_small_bit_identical_to_timm():
    torch.manual_seed(0)
    net = small_input_stem_(ResNet(BasicBlock, (2, 2, 2, 2), num_classes=10, drop_rate=0.2)).eval()
    staged = StagedResNet.from_timm(net, input_size=(3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(staged(x), net(x))
    ours = baselines.create_model("resnet18_small", num_classes=10, in_chans=3, drop_rate=0.2)
    assert n_params(ours) == n_params(staged) == 11_173_962
    assert ours.head.drop_rate == 0.2
    assert small_input_stem_(net) is net and net.feature_info[1]["reduction"] == 1  # idempotent


def test_resnet18_small_width_knob():
    model = baselines.create_model("resnet18_small", num_classes=10, in_chans=3, channels=(16, 32, 64, 128))
    assert model.channels == [16, 32, 64, 128]
    _, outs = run_staged(model.eval(), torch.zeros(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]
    with pytest.raises(ValueError, match="4 stage widths"):
        baselines.create_model("resnet18_small", channels=(16, 32, 64))


# ----------------------------------------------------------------------------------------------- registry


def test_duplicate_registration_raises():
    def lenet5(*, num_classes: int = 10, in_chans: int = 1, **kwargs):
        return nn.Linear(in_chans, num_classes)

    with pytest.raises(ValueError, match="already registered"):
        baselines.register_model(lenet5)
    with pytest.raises(ValueError, match="already registered"):
        baselines.register_model(baselines.lenet.lenet5)  # the same function twice


def test_entry_points_must_be_keyword_only():
    def positional_model(num_classes=10, in_chans=3):
        return nn.Identity()

    with pytest.raises(TypeError, match="keyword-only"):
        baselines.register_model(positional_model)
    assert "positional_model" not in baselines.list_models()


def test_timm_name_clash_raises():
    def resnet26(*, num_classes: int = 10, in_chans: int = 3, **kwargs):
        return nn.Identity()

    with pytest.raises(ValueError, match="timm already has a model named 'resnet26'"):
        baselines.register_model(resnet26)
    assert "resnet26" not in baselines.list_models()


def test_unknown_name_lists_choices_and_suggests():
    with pytest.raises(ValueError) as info:
        baselines.create_model("lenet-5")
    message = str(info.value)
    assert message.startswith("unknown model 'lenet-5'; choose from: ")
    for name in baselines.list_models():
        assert name in message
    assert "did you mean 'lenet5'?" in message
    with pytest.raises(ValueError, match="choose from") as info:
        baselines.create_model("zzzz")
    assert "did you mean" not in str(info.value)


def test_list_models_pattern():
    assert baselines.list_models("lenet*") == ["lenet5", "lenet5_relu"]
    assert baselines.list_models("resnet*small") == ["resnet18_small"]
    assert "resnet18_small" in baselines.list_models("*small")
    assert baselines.list_models("nothing*") == []
    everything = baselines.list_models()
    assert everything == sorted(everything)
    assert {"lenet5", "lenet5_relu", "resnet18", "resnet18_small"} <= set(everything)


@pytest.mark.parametrize("name", registry_params())
def test_timm_create_model(name):
    kwargs, _ = small_case(name)
    ours = baselines.create_model(name, **kwargs)
    theirs = timm.create_model(name, **kwargs)
    assert n_params(theirs) == n_params(ours)
    assert [tuple(p.shape) for p in theirs.parameters()] == [tuple(p.shape) for p in ours.parameters()]


def test_timm_adapter_defaults_and_errors():
    model = timm.create_model("lenet5")  # the entry point's own defaults: 1 channel, 10 classes
    assert n_params(model) == 60_000 and model.input_size == (1, 32, 32)
    assert model.pretrained_cfg["input_size"] == (1, 32, 32)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("lenet5", pretrained=True)
    with pytest.raises(ValueError, match="Staged view"):
        timm.create_model("resnet18_small", features_only=True)


REIMPORT_SCRIPT = """
import importlib, warnings
import timm
import baselines
with warnings.catch_warnings():
    warnings.simplefilter("error")  # timm warns when a name is overwritten
    lenet = importlib.reload(baselines.lenet)
    resnet = importlib.reload(baselines.resnet)
assert type(timm.create_model("lenet5")) is lenet.LeNet5  # the adapter resolves the reloaded entry point
assert type(baselines.create_model("resnet18_small")) is resnet.StagedResNet
print("ok")
"""


def test_reimport_is_idempotent():
    # In a subprocess: a reload replaces the classes, which would break isinstance checks in later test files.
    result = subprocess.run([sys.executable, "-c", REIMPORT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
