"""Tests of the classic classifiers: Perceptron, MLP, AlexNet, ZFNet, VGG, GoogLeNet, SqueezeNet.

Parameter counts (built on the meta device: no memory, no initialisation), bit-identical staged forwards against the
torchvision models whose module objects they wrap, the paper-faithful details (groups, LRN, 5x5 branches, layer
sizes), minimum input sizes, the perceptron rule, and every registered model's small configuration through a
training step and through FeedbackNet.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.googlenet import GoogLeNet
from torchvision.models.vgg import VGG, make_layers
from torchvision.ops import MLP

import baselines
from baselines.alexnet import MinInputSize, local_response_norm, stage_torchvision_alexnet
from baselines.googlenet import (
    ConvReLU,
    InceptionAuxPaper,
    InceptionPaper,
    StagedGoogLeNet,
    stage_torchvision_googlenet,
)
from baselines.mlp import BinaryStep, stage_torchvision_mlp
from baselines.perceptron import Perceptron
from baselines.squeezenet import stage_torchvision_squeezenet
from baselines.vgg import stage_torchvision_vgg
from feedback import FeedbackNet

MODULES = ("perceptron", "mlp", "alexnet", "zfnet", "vgg", "googlenet", "squeezenet")
VGGS = [f"tv_vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
NAMES = sorted(
    ["perceptron", "mlp", "alexnet", "alexnet_paper", "zfnet", "googlenet", "googlenet_paper", "squeezenet1_0"]
    + ["squeezenet1_1"]
    + VGGS
)

# Reference counts at 1000 classes (reference/architectures.md section 2.1; the VGG paper's Table 2 rounds them).
COUNTS = {
    "alexnet": 61_100_840,
    "alexnet_paper": 60_965_224,
    "zfnet": 62_357_608,
    "tv_vgg11": 132_863_336,
    "tv_vgg11_bn": 132_868_840,
    "tv_vgg13": 133_047_848,
    "tv_vgg13_bn": 133_053_736,
    "tv_vgg16": 138_357_544,
    "tv_vgg16_bn": 138_365_992,
    "tv_vgg19": 143_667_240,
    "tv_vgg19_bn": 143_678_248,
    "googlenet": 6_624_904,
    "googlenet_paper": 6_998_552,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "mlp": 269_322,  # 784-256-256-10, as torchvision.ops.MLP(784, [256, 256, 10])
    "perceptron": 785,  # d + 1, d = 28 * 28
}
# The torchvision builder each wrapped model must equal at width 1 (same parameter shapes, in the same order).
TORCHVISION = {
    "alexnet": lambda: torchvision.models.alexnet(),
    "googlenet": lambda: torchvision.models.googlenet(aux_logits=False, init_weights=True),
    "squeezenet1_0": lambda: torchvision.models.squeezenet1_0(),
    "squeezenet1_1": lambda: torchvision.models.squeezenet1_1(),
    "mlp": lambda: MLP(784, [256, 256, 10]),
} | {name: getattr(torchvision.models, name[3:]) for name in VGGS}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters()]


def small(name: str) -> tuple[dict, tuple[int, int, int]]:
    """The registry's fast configuration of ``name`` (10 classes) and the input size to run it at."""
    info = baselines.model_info(name)
    kwargs = {"num_classes": 10} | (info["small"] or {})
    if info["small_input_size"] is None:  # the defaults are small: the model's own input size
        return kwargs, tuple(info["input_size"])
    return kwargs, (3, info["small_input_size"], info["small_input_size"])


_BUILT: dict[str, nn.Module] = {}


def build_small(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """A fresh copy of ``name``'s small configuration (built once per session, seeded) and its input size."""
    kwargs, size = small(name)
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = baselines.create_model(name, **kwargs)
    return copy.deepcopy(_BUILT[name]), size


def run_staged(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    h = model.stem(x)
    outs = []
    for stage in model.stages:
        h = stage(h)
        outs.append(h)
    return model.head(h), outs


def randn(*size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- registry


def test_registered_names_and_timm_visibility():
    mine = sorted(
        n for n in baselines.list_models() if baselines.model_entrypoint(n).__module__.split(".")[-1] in MODULES
    )
    assert mine == NAMES
    for name in NAMES:
        assert timm.is_model(name), name
        info = baselines.model_info(name)
        assert info["paper"] and info["source"] and info["family"], name
        assert not info["timm_owned"]


@pytest.mark.parametrize("name", NAMES)
def test_timm_create_model_finds_it(name):
    kwargs, size = small(name)
    with torch.device("meta"):  # the same entry point either way: compare the structure, without initialising
        ours = baselines.create_model(name, **kwargs)
        theirs = timm.create_model(name, **kwargs)
    assert type(theirs) is type(ours) and shapes(theirs) == shapes(ours)
    assert theirs.pretrained_cfg["input_size"] == tuple(ours.input_size) == size


# ----------------------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts_at_1000_classes(name):
    with torch.device("meta"):  # counting needs no memory and no initialisation
        model = baselines.model_entrypoint(name)()
        assert n_params(model) == COUNTS[name] == baselines.model_info(name)["num_params"]
        assert n_params(timm.create_model(name)) == COUNTS[name]  # timm finds it, with the same defaults
        if name in TORCHVISION:  # width 1 is torchvision's network itself
            assert shapes(model) == shapes(TORCHVISION[name]())


def test_other_counts():
    with torch.device("meta"):
        assert n_params(baselines.create_model("googlenet", num_classes=1000, aux_logits=True)) == 13_004_888
        assert n_params(torchvision.models.googlenet(aux_logits=True, init_weights=True)) == 13_004_888
        # paper heads: ConvReLU (conv bias, no batch norm) instead of BasicConv2d
        assert n_params(baselines.create_model("googlenet_paper", num_classes=1000, aux_logits=True)) == 13_378_280
        paper = baselines.create_model("googlenet_paper", num_classes=1000)
        assert sum(p.numel() for n, p in paper.named_parameters() if not n.endswith("bias")) == 6_990_272
    for d in (2, 5, 784):
        assert n_params(baselines.create_model("perceptron", num_classes=2, in_chans=d, img_size=1)) == d + 1
    assert n_params(baselines.create_model("perceptron", num_classes=10, in_chans=1, img_size=8)) == 10 * 65
    for depth, width, d, k in ((1, 32, 64, 10), (3, 100, 784, 7)):
        expected = (d + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * k
        net = baselines.create_model("mlp", num_classes=k, in_chans=d, img_size=1, depth=depth, width=width)
        assert n_params(net) == expected and net.channels == [width] * depth


# ----------------------------------------------------------------------------------------------- small configurations


@pytest.mark.parametrize("name", NAMES)
def test_small_config_trains_a_step_is_staged_and_takes_feedback(name):
    model, size = build_small(name)
    assert tuple(model.input_size) == size
    assert len(model.channels) == len(model.strides) == len(model.stages) and isinstance(model.stages, nn.ModuleList)
    x = randn(2, *size)
    model.eval()
    with torch.no_grad():
        logits, outs = run_staged(model, x)
        assert torch.equal(logits, model(x)) and logits.shape == (2, 10)
        assert torch.equal(FeedbackNet(model, "deconv", steps=1, input_size=size).eval()(x).logits, logits)
    for i, (out, c, s) in enumerate(zip(outs, model.channels, model.strides)):
        assert out.shape[1] == c, f"stage {i}"
        assert (s == 0) if out.dim() == 2 else (out.shape[-1] <= math.ceil(size[-1] / s)), f"stage {i}"

    # one training step of the model alone
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert sum(changed) >= len(changed) - 1  # every parameter moves (a ReLU-dead bias may not)

    # two steps of deconvolutional feedback
    net = FeedbackNet(model, "deconv", steps=2, input_size=size, feedback_kwargs={"zero_init": False}).train()
    net.zero_grad(set_to_none=True)
    out = net(x)
    assert out.logits.shape == (2, 10) and len(out.per_step) == 2
    out.logits.square().mean().backward()
    assert len(net.feedback.maps) == len(model.stages) - 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.feedback.parameters())


# ----------------------------------------------------------------------------------------------- input sizes


@pytest.mark.parametrize(
    "name",
    ["alexnet", "alexnet_paper", "zfnet", "tv_vgg11", "googlenet", "googlenet_paper", "squeezenet1_0", "squeezenet1_1"],
)
def test_min_input_size_is_the_smallest_that_works(name):
    model, _ = build_small(name)
    model.eval()
    m = baselines.model_info(name)["min_input_size"]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, m, m)).shape == (1, 10)
        with pytest.raises(ValueError, match=f"H, W >= {m} px"):
            model(torch.zeros(1, 3, m - 1, m))
        checks = [i for i, mod in enumerate(model.stem.modules()) if isinstance(mod, MinInputSize)]
        assert len(checks) == 1
        unchecked = copy.deepcopy(model)
        if isinstance(unchecked.stem, MinInputSize):
            unchecked.stem = nn.Identity()
        else:
            unchecked.stem[0] = nn.Identity()
        with pytest.raises(RuntimeError):  # the bound is tight: one pixel less fails inside the network
            unchecked(torch.zeros(1, 3, m - 1, m - 1))
    with pytest.raises(ValueError, match=f"img_size >= {m}"):
        baselines.create_model(name, img_size=m - 1)


# ----------------------------------------------------------------------------------------------- torchvision parity


def _assert_parity(staged: nn.Module, library: nn.Module, x: torch.Tensor) -> None:
    library.eval(), staged.eval()
    with torch.no_grad():
        ref = library(x)
        logits, _ = run_staged(staged, x)
        assert torch.equal(logits, ref) and torch.equal(staged(x), ref)
    library_params = {id(p) for p in library.parameters()}
    assert {id(p) for p in staged.parameters()} <= library_params  # the wrapper reuses the library's modules


def test_alexnet_parity_with_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(num_classes=10)
    staged = stage_torchvision_alexnet(tv)
    assert staged.stages[0][0] is tv.features[0] and staged.head[2] is tv.classifier
    assert staged.channels == [64, 192, 384, 256, 256] and n_params(staged) == n_params(tv)
    _assert_parity(staged, tv, randn(2, 3, 64, 64))


@pytest.mark.parametrize("bn", [False, True])
def test_vgg_parity_with_torchvision(bn):
    # a narrow torchvision VGG (its classifier resized to the narrow features) keeps the test fast
    torch.manual_seed(0)
    features = make_layers([8, "M", 16, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"], batch_norm=bn)
    with torch.device("meta"):  # the 25088-wide classifier built here is replaced by a narrow one
        tv = VGG(features, num_classes=10, init_weights=False)
    tv.classifier[0] = nn.Linear(32 * 7 * 7, 64)
    tv.classifier[3] = nn.Linear(64, 64)
    tv.classifier[6] = nn.Linear(64, 10)
    staged = stage_torchvision_vgg(tv, input_size=(3, 32, 32))
    assert staged.stages[4][-1] is tv.features[-1] and staged.head[2] is tv.classifier
    assert staged.channels == [8, 16, 16, 32, 32] and staged.strides == [2, 4, 8, 16, 32]
    if bn:  # batch norm in training mode once, so that the running statistics are not the identity
        tv.train()(randn(4, 3, 32, 32))
    _assert_parity(staged, tv, randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="11, 13, 16, 19"):
        baselines.vgg.tv_vgg(12)


@pytest.mark.slow
@pytest.mark.parametrize("name", VGGS)
def test_full_vgg_parity_with_torchvision(name):
    torch.manual_seed(0)
    tv = TORCHVISION[name](num_classes=10)
    staged = stage_torchvision_vgg(tv)
    _assert_parity(staged, tv, randn(2, 3, 32, 32))
    ours = baselines.create_model(name, num_classes=10)
    assert shapes(ours) == shapes(tv) and len(ours.stages) == 5


def test_vgg_structure_at_full_width():
    with torch.device("meta"):
        for name in VGGS:
            model = baselines.create_model(name, num_classes=1000)
            convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
            bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
            depth = int(name[6:8])
            assert convs == depth - 3 and bns == (convs if name.endswith("_bn") else 0), name
            assert model.channels == [64, 128, 256, 512, 512] and model.strides == [2, 4, 8, 16, 32]


def test_vgg_stage_shapes_at_224():
    model = baselines.create_model("tv_vgg16_bn", width=0.125).eval()
    with torch.no_grad():
        _, outs = run_staged(model, torch.zeros(1, 3, 224, 224))
    assert [o.shape[-1] for o in outs] == [112, 56, 28, 14, 7]


def test_googlenet_parity_with_torchvision_including_aux_heads():
    torch.manual_seed(0)
    tv = GoogLeNet(num_classes=10, aux_logits=True, init_weights=False, dropout=0.2, dropout_aux=0.7)  # init: fast
    staged = stage_torchvision_googlenet(tv, input_size=(3, 32, 32))
    assert isinstance(staged, StagedGoogLeNet) and staged.aux_stages == (2, 5)
    assert staged.aux_heads[0] is tv.aux1 and staged.stem[1] is tv.conv1 and staged.stages[1][0] is tv.inception3b
    assert staged.channels == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    _assert_parity(staged, tv, randn(2, 3, 32, 32))  # eval: torchvision returns the main logits only
    x = randn(4, 3, 32, 32)
    tv.train(), staged.train()
    torch.manual_seed(1)
    ref = tv(x)  # GoogLeNetOutputs(logits, aux2, aux1), dropout on
    torch.manual_seed(1)
    logits, (aux1, aux2) = staged.forward_aux(x)
    assert torch.equal(logits, ref.logits) and torch.equal(aux1, ref.aux_logits1) and torch.equal(aux2, ref.aux_logits2)


def test_googlenet_registered_variants():
    net, _ = build_small("googlenet")
    assert len(net.aux_heads) == 0 and net.head[2].p == 0.2 and net.strides == [8, 16, 16, 16, 16, 16, 32, 32, 32]
    with torch.no_grad():
        _, outs = run_staged(net.eval(), torch.zeros(1, 3, 64, 64))
    assert [64 // o.shape[-1] for o in outs] == net.strides and [o.shape[1] for o in outs] == net.channels
    with_aux = baselines.create_model("googlenet_paper", num_classes=10, aux_logits=True, img_size=32).eval()
    x = randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, aux = with_aux.forward_aux(x)
        assert torch.equal(logits, with_aux(x)) and [a.shape for a in aux] == [(2, 10), (2, 10)]


def test_googlenet_paper_blocks_and_parity():
    torch.manual_seed(0)
    tv = GoogLeNet(
        num_classes=10, aux_logits=True, init_weights=False, blocks=[ConvReLU, InceptionPaper, InceptionAuxPaper]
    )
    plain = stage_torchvision_googlenet(tv, input_size=(3, 32, 32), lrn=False)
    _assert_parity(plain, tv, randn(2, 3, 32, 32))  # without LRN: exactly torchvision's forward for these blocks
    paper = baselines.create_model("googlenet_paper", num_classes=10, aux_logits=True)
    assert sorted(shapes(paper)) == sorted(shapes(tv))  # the same layers (the heads are registered last here)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    convs = [m for m in paper.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    assert [s.branch3[1].conv.kernel_size for s in (paper.stages[i] for i in (0, 2, 3, 4, 5, 7, 8))] == [(5, 5)] * 7
    assert paper.stages[1][0].branch3[1].conv.kernel_size == (5, 5) == paper.stages[6][0].branch3[1].conv.kernel_size
    lrns = [i for i, m in enumerate(paper.stem) if isinstance(m, nn.LocalResponseNorm)]
    assert lrns == [3, 6]  # after maxpool1, after conv3 (Figure 3); stem[0] is the input check
    assert paper.head[2].p == 0.4 and all(h.dropout.p == 0.7 for h in paper.aux_heads)
    # with LRN the stem is the plain stem with the two normalisations inserted
    with_lrn = stage_torchvision_googlenet(tv, input_size=(3, 32, 32), lrn=True).eval()
    x = randn(2, 3, 32, 32)
    with torch.no_grad():
        h = tv.maxpool2(local_response_norm()(tv.conv3(tv.conv2(local_response_norm()(tv.maxpool1(tv.conv1(x)))))))
        assert torch.equal(with_lrn.stem(x), h)


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_squeezenet_parity_with_torchvision(version):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"squeezenet{version}")(num_classes=10)
    staged = stage_torchvision_squeezenet(tv, input_size=(3, 32, 32), version=version)
    assert staged.head[0] is tv.classifier and len(staged.stages) == 8
    assert staged.channels == [128, 128, 256, 256, 384, 384, 512, 512]
    expected = [4, 4, 8, 8, 8, 8, 16, 16] if version == "1_0" else [4, 8, 8, 16, 16, 16, 16, 16]
    assert staged.strides == expected
    _assert_parity(staged, tv, randn(2, 3, 32, 32))
    with torch.no_grad():
        _, outs = run_staged(staged.eval(), torch.zeros(1, 3, 224, 224))
    sizes = [54, 54, 27, 27, 27, 27, 13, 13] if version == "1_0" else [55, 27, 27, 13, 13, 13, 13, 13]
    assert [o.shape[-1] for o in outs] == sizes  # 224 / stride, less the unpadded conv1 and pool borders


def test_mlp_parity_with_torchvision_ops_mlp():
    torch.manual_seed(0)
    tv = MLP(3 * 8 * 8, [32, 16, 5], activation_layer=nn.Tanh, dropout=0.3)
    staged = stage_torchvision_mlp(tv, input_size=(3, 8, 8))
    assert staged.head is tv[-2] and staged.stages[1][0] is tv[3] and staged.channels == [32, 16]
    x = randn(2, 3, 8, 8)
    _assert_parity(staged, tv, x.flatten(1))
    with torch.no_grad():
        assert torch.equal(staged(x), staged(x.flatten(1)))  # images are flattened by the stem
    ours = baselines.create_model("mlp", num_classes=5, in_chans=3, img_size=8, depth=2, width=32)
    assert [s[0].out_features for s in ours.stages] == [32, 32]


# ----------------------------------------------------------------------------------------------- MLP details


@pytest.mark.parametrize(
    ("act", "cls"),
    [("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("step", BinaryStep)],
)
def test_mlp_activations(act, cls):
    net = baselines.create_model("mlp", num_classes=3, in_chans=4, img_size=1, depth=3, width=8, act=act)
    assert all(isinstance(s[1], cls) for s in net.stages) and net.act == act and len(net.stages) == 3
    x = randn(5, 4)
    out = net(x)
    out.sum().backward()
    first = net.stages[0][0].weight.grad
    if act == "step":  # the true derivative: zero, so only the output layer learns by gradient descent
        assert torch.equal(first, torch.zeros_like(first)) and net.head.weight.grad.abs().sum() > 0
        assert set(net.stages[0](x).unique().tolist()) <= {0.0, 1.0}
    else:
        assert first.abs().sum() > 0
    if act == "leaky_relu":
        slope = baselines.create_model("mlp", act=act, negative_slope=0.2).stages[0][1].negative_slope
        assert net.stages[0][1].negative_slope == 0.01 and slope == 0.2


def test_binary_step_matches_heaviside():
    a = torch.tensor([-2.0, -0.0, 0.0, 1e-8, 3.0])
    assert torch.equal(BinaryStep()(a), torch.heaviside(a, torch.tensor(0.0)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"act": "swish"}, "choose from: sigmoid, tanh, relu, leaky_relu, step"),
        ({"depth": 0}, "depth must be an integer >= 1"),
        ({"width": 0}, "width must be an integer >= 1"),
    ],
)
def test_mlp_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        baselines.create_model("mlp", **kwargs)


# ----------------------------------------------------------------------------------------------- perceptron


def separable(n: int = 200, d: int = 2, margin: float = 0.1, seed: int = 0):
    """Points in [-1, 1]^d labelled by a fixed hyperplane, with those closer than ``margin`` removed."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d + 1, generator=g)
    u = u / u.norm()  # unit vector over (w, b)
    x = torch.rand(4 * n, d, generator=g) * 2 - 1
    score = x @ u[:d] + u[d]
    keep = score.abs() >= margin
    x, score = x[keep][:n], score[keep][:n]
    return x, (score > 0).long(), u


def test_perceptron_converges_within_novikoffs_bound():
    x, y, u = separable()
    p = baselines.create_model("perceptron", num_classes=2, in_chans=2, img_size=1)
    assert n_params(p) == 3 and len(p.stages) == 1 and p.channels == [1]
    history = p.fit(x, y, epochs=1000)
    assert history[-1] == 0 and len(history) < 1000
    assert torch.equal(p.predict(x), y)
    augmented = torch.cat([x, torch.ones(len(x), 1)], 1)
    gamma = ((2 * y - 1) * (augmented @ u)).min()
    radius = augmented.norm(dim=1).max()
    assert sum(history) <= (radius / gamma) ** 2  # Novikoff 1962
    # shuffled visiting order converges too
    q = Perceptron(num_classes=2, in_chans=2, img_size=1)
    assert q.fit(x, y, epochs=1000, shuffle=True, seed=3)[-1] == 0


def test_perceptron_updates_only_on_mistakes():
    p = Perceptron(num_classes=2, in_chans=2, img_size=1)
    x = torch.tensor([[1.0, 2.0], [1.0, 1.0]])
    history = p.fit(x, torch.tensor([1, 1]), epochs=5)
    # zero weights predict 0: the first sample is a mistake (w = x0, b = 1); the second is then right
    assert history == [1, 0]
    assert torch.equal(p.unit.weight, torch.tensor([[1.0, 2.0]])) and p.unit.bias.item() == 1.0


def test_perceptron_never_converges_on_xor():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    p = Perceptron(num_classes=2, in_chans=2, img_size=1)
    history = p.fit(x, y, epochs=200)
    assert len(history) == 200 and min(history) >= 1
    assert (p.predict(x) == y).float().mean() <= 0.75  # no line separates XOR (Minsky and Papert 1969)


def test_multiclass_perceptron_converges_on_separable_classes():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    y = torch.arange(3).repeat_interleave(30)
    x = centres[y] + 0.5 * torch.randn(90, 2, generator=g)
    p = Perceptron(num_classes=3, in_chans=2, img_size=1)
    assert n_params(p) == 3 * 3 and p.channels == [3]
    history = p.fit(x.view(90, 2, 1, 1), y, epochs=100)  # (N, C, H, W) inputs are flattened
    assert history[-1] == 0 and torch.equal(p.predict(x), y)


def test_perceptron_logits_and_errors():
    p = Perceptron(num_classes=2, in_chans=1, img_size=2)
    with torch.no_grad():
        p.unit.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0]]))
    x = torch.tensor([[[[2.0, 1.0], [0.0, 0.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])
    assert torch.equal(p(x), torch.tensor([[0.0, 1.0], [0.0, -1.0]]))  # [0, a]: argmax is the threshold unit
    assert p.predict(x).tolist() == [1, 0]
    with pytest.raises(ValueError, match="4 features"):
        p.fit(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class labels"):
        p.fit(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        p.fit(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        Perceptron(num_classes=1)


# ----------------------------------------------------------------------------------------------- AlexNet / ZFNet


def test_lrn_is_the_papers_formula():
    a = randn(2, 7, 3, 3) * 10
    n, k, alpha, beta = 5, 2.0, 1e-4, 0.75
    sq = F.pad(a.pow(2), (0, 0, 0, 0, n // 2, n // 2))
    window = sum(sq[:, j : j + a.shape[1]] for j in range(n))  # sum over max(0, i - 2) .. min(N - 1, i + 2)
    expected = a / (k + alpha * window).pow(beta)
    torch.testing.assert_close(local_response_norm()(a), expected, rtol=1e-6, atol=1e-6)


def test_alexnet_paper_layers_and_init():
    with torch.device("meta"):
        full = baselines.create_model("alexnet_paper", num_classes=1000)
    convs = [m for m in full.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in full.modules() if isinstance(m, nn.Linear)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256] and convs[0].kernel_size == (11, 11)
    assert [c.stride[0] for c in convs] == [4, 1, 1, 1, 1] and convs[0].padding == (0, 0)
    assert [(f.in_features, f.out_features) for f in fcs] == [(9216, 4096), (4096, 4096), (4096, 1000)]
    assert [len(s) for s in full.stages] == [4, 4, 2, 2, 3]
    assert isinstance(full.stages[0][2], nn.LocalResponseNorm) and isinstance(full.stages[1][2], nn.LocalResponseNorm)
    net = baselines.create_model("alexnet_paper", num_classes=10, width=0.5)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [m.bias.detach().mean().item() for m in layers] == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # section 5
    assert all(m.bias.detach().std().item() == 0 for m in layers)
    assert abs(layers[5].weight.detach().std().item() - 0.01) < 1e-4  # fc6: N(0, 0.01^2)


def strict_paper_stack(net: nn.Module) -> nn.Module:
    """The same weights with floor-mode pools and no adaptive pool: the paper's layers exactly."""
    strict = copy.deepcopy(net)
    for m in strict.modules():
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = False
    strict.head[0] = nn.Identity()
    return strict


def test_alexnet_paper_sizes_and_deviations_are_no_ops_at_227():
    net = baselines.create_model("alexnet_paper", num_classes=10, width=0.125).eval()
    x = randn(1, 3, 227, 227)
    with torch.no_grad():
        logits, outs = run_staged(net, x)
        assert [tuple(o.shape[-2:]) for o in outs] == [(27, 27), (13, 13), (13, 13), (13, 13), (6, 6)]
        assert torch.equal(strict_paper_stack(net)(x), logits)
        with pytest.raises(RuntimeError):  # the strict stack cannot take 64 px; ours can
            strict_paper_stack(net)(torch.zeros(1, 3, 64, 64))


def test_zfnet_layer_sizes_match_figure_3():
    net = baselines.create_model("zfnet", num_classes=10, width=0.125).eval()
    x = randn(1, 3, 224, 224)
    sizes = []
    h = x
    with torch.no_grad():
        for stage in net.stages:
            for layer in stage:
                h = layer(h)
                if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                    sizes.append(h.shape[-1])
        assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]  # conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5
        head = copy.deepcopy(net.head)
        head[0] = nn.Identity()
        assert torch.equal(head(h), net.head(h))  # the adaptive pool is the identity at 224 px
    with torch.device("meta"):
        full = baselines.create_model("zfnet", num_classes=1000)
    convs = [m for m in full.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.groups) for c in convs] == [
        (96, 7, 2, 1),
        (256, 5, 2, 1),
        (384, 3, 1, 1),
        (384, 3, 1, 1),
        (256, 3, 1, 1),
    ]
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(m.bias.detach().abs().sum().item() == 0 for m in layers)  # section 3: biases 0, weights N(0, 0.01^2)
    assert abs(layers[5].weight.detach().std().item() - 0.01) < 2e-4


def test_zfnet_filter_renormalisation():
    net = baselines.create_model("zfnet", width=0.125)
    conv1 = net.stages[0][0]
    with torch.no_grad():
        conv1.weight[:3] *= 100.0
    before = conv1.weight.detach().clone()
    assert net.renormalize_filters_(0.1) == 3
    rms = conv1.weight.pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(rms[:3], torch.full((3,), 0.1))
    assert torch.equal(conv1.weight[3:], before[3:])  # filters within the radius are untouched
    assert net.renormalize_filters_(0.1) == 0


def test_width_knob_and_in_chans():
    for name in ("alexnet", "alexnet_paper", "zfnet", "tv_vgg11_bn"):
        net = baselines.create_model(name, num_classes=7, in_chans=1, width=0.25, img_size=64).eval()
        assert net.input_size == (1, 64, 64)
        with torch.no_grad():
            assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 7)
        assert not any(p.is_meta for p in net.parameters())
    for name in ("googlenet_paper", "squeezenet1_0", "squeezenet1_1"):
        net = baselines.create_model(name, num_classes=7, in_chans=1, img_size=32).eval()
        with torch.no_grad():
            assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    with torch.device("meta"):  # torchvision's GoogLeNet initialisation is slow; its first convolution is the point
        conv1 = baselines.create_model("googlenet", num_classes=7, in_chans=1).stem[1]
        assert conv1.conv.weight.shape == (64, 1, 7, 7) and conv1.bn.num_features == 64
    assert baselines.create_model("alexnet_paper", width=0.1).channels == [10, 26, 38, 38, 26]  # even: two groups
    with pytest.raises(ValueError, match="width must be a positive"):
        baselines.create_model("zfnet", width=0.0)


# ----------------------------------------------------------------------------------------------- docstrings


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"baselines.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
