"""Tests of the modern families in baselines/: ImageNet and CIFAR ResNets, DenseNets, NASNet/PNASNet, ViT, CoordConv,
Siamese networks, and the registry's metadata (model_info, small configurations, generic options).

Reference parameter counts: reference/architectures.md section 2.1 (measured there with the same torch/timm) and the
papers (He et al. 2016 Table 6; Huang et al. 2017; Zoph et al. 2018; Liu et al. 2018; Liu et al. 2018 CoordConv).
"""

from __future__ import annotations

import doctest
import importlib

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

import baselines
from baselines.coordconv import CoordConv2d, add_coords, coordconv_, first_conv
from baselines.densenet import StagedDenseNet
from baselines.nasnet import PairStage, StagedNASNet, nasnet_a
from baselines.resnet import StagedResNet
from baselines.resnet_cifar import CifarResNet, OptionAShortcut
from baselines.siamese import SiameseNet, contrastive_loss
from baselines.vit import StagedViT
from feedback import FeedbackNet

MODULES = ["resnet", "resnet_cifar", "densenet", "nasnet", "vit", "coordconv", "siamese"]
MINE = [n for n in baselines.list_models() if baselines.model_info(n)["entry_point"].split(".")[1] in MODULES]

# Reference parameter counts (1000 classes for the ImageNet models, 10 for the CIFAR ones and the ViT).
COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20_cifar": 269_722,
    "resnet32_cifar": 464_154,
    "resnet44_cifar": 658_586,
    "resnet56_cifar": 853_018,
    "resnet110_cifar": 1_727_962,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet_bc100_cifar": 769_162,  # the paper: "0.8M"
    "nasnetalarge": 88_753_150,
    "nasnetamobile": 5_289_978,  # the paper: 5.3M
    "pnasnet5large": 86_057_668,
    "vit_tiny_patch4_32": 5_362_762,
}
TIMM_OWNED = [n for n in COUNTS if baselines.model_info(n)["timm_owned"]]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these small networks run thousands of tiny ops, and on a shared 2-core machine two
    OpenMP threads spend most of their time waiting for each other (measured 50x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small(name: str, **overrides) -> tuple[nn.Module, int]:
    info = baselines.model_info(name)
    kwargs = {"num_classes": 10, "in_chans": 3} | (info["small"] or {}) | overrides
    torch.manual_seed(0)
    model = baselines.create_model(name, **kwargs)
    return model, info["small_input_size"] or model.input_size[-1]


def batch(model: nn.Module, size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, model.input_size[0], size, size, generator=torch.Generator().manual_seed(1))


def copy_weights_(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s state into ``dst`` position by position (same layers in the same order, other names)."""
    s, d = list(src.state_dict().values()), list(dst.state_dict().values())
    assert len(s) == len(d)
    with torch.no_grad():
        for a, b in zip(s, d):
            assert a.shape == b.shape
            b.copy_(a)


def registry_params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if baselines.model_info(n)["slow"] else n for n in names]


# ----------------------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts(name):
    info = baselines.model_info(name)  # a meta-device build at the entry point's defaults
    assert info["num_params"] == COUNTS[name]


@pytest.mark.parametrize("name", TIMM_OWNED)
def test_timm_owned_networks_are_timms(name):
    """Same parameter shapes, in the same order, as timm's own model of that name (meta-device builds)."""
    with torch.device("meta"):
        ours = baselines.create_model(name, num_classes=1000)
        theirs = timm.create_model(name)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert [tuple(b.shape) for b in ours.buffers()] == [tuple(b.shape) for b in theirs.buffers()]


@pytest.mark.parametrize("name", [n for n in MINE if not baselines.model_info(n)["timm_owned"]])
def test_timm_create_model_at_defaults(name):
    """timm.create_model(name) builds our model after `import baselines` (meta device: no memory, no init)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    assert n_params(model) == baselines.model_info(name)["num_params"]
    assert model.pretrained_cfg["input_size"] == tuple(model.input_size)


def test_meta_count_equals_real_count():
    for name in ("resnet20_cifar", "nasnetamobile", "densenet_bc100_cifar", "siamese"):
        assert baselines.model_info(name)["num_params"] == n_params(baselines.model_entrypoint(name)())


def test_small_variants_of_paper_models():
    assert 750_000 < COUNTS["densenet_bc100_cifar"] < 850_000
    assert 5_250_000 < COUNTS["nasnetamobile"] < 5_350_000
    # NASNet-A Mobile really has 4 cells per stack: 2 stem cells, then 1 + 4 + 1 + 4 + 1 + 4 cells
    net = nasnet_a(num_cells=4, penultimate_filters=192, stem_size=16)
    assert [len(s.cells) for s in net.stages] == [2 + 4, 1 + 4, 1 + 4]


# ----------------------------------------------------------------------------------------------- parity with timm


@pytest.mark.parametrize(
    ("name", "block", "layers"),
    [
        ("resnet34", BasicBlock, (3, 4, 6, 3)),
        ("resnet50", Bottleneck, (3, 4, 6, 3)),
        ("resnet101", Bottleneck, (3, 4, 23, 3)),
        ("resnet152", Bottleneck, (3, 8, 36, 3)),
    ],
)
def test_resnet_bit_identical_to_timm(name, block, layers):
    narrow = {"channels": (8, 16, 32, 64)}
    torch.manual_seed(0)
    net = ResNet(block, layers, num_classes=10, **narrow).eval()
    staged = StagedResNet.from_timm(net).eval()
    assert staged.stages[3] is net.layer4
    ours = baselines.create_model(name, num_classes=10, **narrow).eval()
    copy_weights_(net, ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        assert torch.equal(staged(x), ref)
        assert torch.equal(ours(x), ref)
    assert ours.strides == [4, 8, 16, 32]


@pytest.mark.parametrize("name", ["densenet121", "densenet161", "densenet169", "densenet201"])
def test_densenet_bit_identical_to_timm(name):
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=10, growth_rate=8).eval()
    staged = StagedDenseNet.from_timm(net).eval()
    ours = baselines.create_model(name, num_classes=10, growth_rate=8).eval()
    copy_weights_(net, ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        assert torch.equal(staged(x), ref)
        assert torch.equal(ours(x), ref)
        # the stage outputs are timm's feature taps: dense-block outputs before each transition, and norm5
        taps = net.forward_intermediates(x, intermediates_only=True)[1:]
        h = staged.stem(x)
        for stage, tap in zip(staged.stages, taps):
            h = stage(h)
            assert torch.equal(h, tap)
    assert staged.channels == [f["num_chs"] for f in net.feature_info[1:]]


def test_densenet_bc_is_the_paper_network():
    net = baselines.create_model("densenet_bc100_cifar", num_classes=10).eval()
    conv = net.stem[0]
    assert (conv.kernel_size, conv.stride, conv.out_channels) == ((3, 3), (1, 1), 24)  # 2k channels, 3x3, stride 1
    assert isinstance(net.stem[1], nn.Identity) and isinstance(net.stem[2], nn.Identity)  # no BN, no pooling
    assert [len(s[0 if i == 0 else 1]) for i, s in enumerate(net.stages)] == [16, 16, 16]  # (100 - 4) / 6
    _, outs = run(net, torch.zeros(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(216, 32, 32), (300, 16, 16), (342, 8, 8)]
    with pytest.raises(ValueError, match="6n \\+ 4"):
        baselines.create_model("densenet_bc100_cifar", depth=99)


def run(model, x):
    h = model.stem(x)
    outs = []
    for s in model.stages:
        h = s(h)
        outs.append(h)
    return model.head(h), outs


def test_nasnetalarge_bit_identical_to_timm():
    torch.manual_seed(0)
    kw = {"num_features": 192, "stem_size": 16, "num_classes": 10}
    net = timm.create_model("nasnetalarge", **kw).eval()
    staged = StagedNASNet.from_timm(net).eval()
    ours = baselines.create_model("nasnetalarge", **kw).eval()
    generic = nasnet_a(num_cells=6, penultimate_filters=192, stem_size=16, num_classes=10).eval()
    # the generic N-cell builder at N = 6 is timm's network, module for module (same names in the Staged tree)
    assert list(generic.state_dict()) == list(staged.state_dict()) == list(ours.state_dict())
    copy_weights_(net, ours)
    copy_weights_(net, generic)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        for model in (staged, ours, generic):
            assert torch.equal(model(x), ref)
        # boundaries: the stage outputs hold timm's taps (before their ReLU) as the first C_x channels
        taps = net.forward_intermediates(x, intermediates_only=True)
        _, outs = run(staged, x)
        for i in range(2):
            cx = staged.pair_channels[i][0]
            assert torch.equal(torch.relu(outs[i][:, :cx]), taps[2 + i])
        assert torch.equal(outs[2], taps[4])


@pytest.mark.slow
def test_pnasnet5large_bit_identical_to_timm():
    torch.manual_seed(0)
    net = timm.create_model("pnasnet5large", num_classes=10).eval()
    staged = StagedNASNet.from_timm(net).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(staged(x), net(x))
    assert staged.pair_channels == [(1080, 1080), (2160, 2160), None]


def test_pnasnet_staging_without_building_it():
    """The full PNASNet-5 stages (a meta-device build): cells 0-3, 4-7, 8-11 after the stem cells."""
    with torch.device("meta"):
        net = baselines.create_model("pnasnet5large", num_classes=1000)
    assert [len(s.cells) for s in net.stages] == [2 + 4, 4, 4]
    assert net.channels == [2160, 4320, 4320] and net.strides == [8, 16, 32]
    assert [s.calls for s in net.stages][1] == ("prev_x",) * 4


def test_pair_stage_checks_its_arguments():
    cell = nn.Identity()
    with pytest.raises(ValueError, match="single"):
        PairStage([cell], ["x_prev"], split=None)
    with pytest.raises(ValueError, match="unknown call"):
        PairStage([cell], ["sideways"], split=4)
    with pytest.raises(ValueError, match=">= 2"):
        nasnet_a(num_cells=1)


def test_vit_bit_identical_to_timm():
    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=4, embed_dim=48, depth=3, num_heads=3, num_classes=10)
    for extra in ({}, {"reg_tokens": 2, "global_pool": "avg"}, {"class_token": False, "global_pool": "avg"}):
        vit = VisionTransformer(**kw, **extra).eval()
        staged = StagedViT.from_timm(vit).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(staged(x), vit(x))
            _, outs = run(staged, x)
        assert [tuple(o.shape[1:]) for o in outs] == [(staged.num_tokens, 48)] * 3
    ours = baselines.create_model("vit_tiny_patch4_32", num_classes=10, embed_dim=48, depth=3).eval()
    vit = VisionTransformer(**kw).eval()
    copy_weights_(vit, ours)
    with torch.no_grad():
        assert torch.equal(ours(x), vit(x))
    assert ours.num_tokens == 65 and ours.num_prefix_tokens == 1 and ours.grid_size == (8, 8)
    assert ours.output_fmt == "NLC" and ours.strides == [4] * 3 and ours.channels == [48] * 3


# ----------------------------------------------------------------------------------------------- CIFAR ResNets


def test_cifar_resnet_structure():
    net = baselines.create_model("resnet56_cifar", num_classes=10).eval()
    assert [len(s) for s in net.stages] == [9, 9, 9] and net.depth == 56
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 55 and all(c.kernel_size == (3, 3) for c in convs)  # 6n + 1 convolutions + the FC layer
    _, outs = run(net, torch.zeros(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    shortcuts = [b.shortcut for s in net.stages for b in s if isinstance(b.shortcut, OptionAShortcut)]
    assert len(shortcuts) == 2 and all(n_params(s) == 0 for s in shortcuts)  # option A: parameter-free
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth=21)


def test_option_a_shortcut_is_subsampled_identity_plus_zeros():
    s = OptionAShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = s(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


# ----------------------------------------------------------------------------------------------- CoordConv


def test_coordconv_layer():
    layer = CoordConv2d(3, 64, 3, padding=1)
    assert n_params(layer) == 2_944 and layer.weight.shape == (64, 5, 3, 3)
    assert n_params(CoordConv2d(3, 64, 3, with_r=True)) == (3 + 3) * 64 * 9 + 64
    c = add_coords(torch.zeros(2, 1, 5, 4), with_r=True)
    i, j, r = c[0, 1], c[0, 2], c[0, 3]
    assert torch.equal(i[:, 0], torch.linspace(-1, 1, 5)) and torch.equal(j[0], torch.linspace(-1, 1, 4))
    assert torch.allclose(r, torch.sqrt(i**2 + j**2))
    # the layer is a convolution of [x; i; j]
    x = torch.randn(2, 3, 6, 6)
    ref = nn.functional.conv2d(add_coords(x), layer.weight, layer.bias, padding=1)
    assert torch.allclose(layer(x), ref)
    with pytest.raises(ValueError, match="coordinates are added inside"):
        layer(torch.randn(2, 5, 6, 6))
    with pytest.raises(ValueError, match="groups=1"):
        CoordConv2d(4, 4, 3, groups=2)


@pytest.mark.parametrize(
    "name",
    ["resnet18", "resnet20_cifar", "densenet_bc100_cifar", "nasnetamobile", "vit_tiny_patch4_32", "lenet5", "siamese"],
)
def test_coordconv_option_on_backbones(name):
    plain, size = small(name)
    model, _ = small(name, coordconv=True)
    _, _, conv = first_conv(model)
    assert isinstance(conv, CoordConv2d) and conv.coord_channels == 2
    assert n_params(model) - n_params(plain) == 2 * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    x = batch(model, size)
    plain.eval(), model.eval()
    with torch.no_grad():  # same seed, zero coordinate weights: the same function at initialisation
        assert torch.allclose(model(x), plain(x), atol=1e-5)
    model.train()
    model(x).logsumexp(1).sum().backward()
    assert conv.weight.grad[:, -2:].abs().sum() > 0  # the coordinate weights learn
    assert coordconv_(model) is model and first_conv(model)[2] is conv  # idempotent


def test_coordconv_errors_and_timm_adapter():
    class NoConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.stages, self.head = nn.Identity(), nn.ModuleList([nn.Flatten()]), nn.Identity()

    with pytest.raises(ValueError, match="no nn.Conv2d"):
        coordconv_(NoConv())
    with pytest.raises(TypeError, match="True or False"):
        baselines.create_model("resnet20_cifar", coordconv="yes")
    model = timm.create_model("resnet20_cifar", coordconv=True)
    assert isinstance(model.stem[0], CoordConv2d)
    assert "coordconv" in baselines.GENERIC_OPTIONS


# ----------------------------------------------------------------------------------------------- Siamese


def test_siamese_shares_one_backbone_and_scores_pairs():
    net, size = small("siamese")
    assert isinstance(net, SiameseNet) and net.input_size == (2, 32, 32) and net.num_classes == 2
    assert n_params(net) == n_params(baselines.create_model("lenet5_relu", num_classes=16, in_chans=1)) + 16 + 1
    net.eval()
    x = batch(net, size, n=3)
    with torch.no_grad():
        logits = net(x)
        # by hand: embed each image with the shared backbone, weighted L1 distance, logits (0, s)

        def embed_one(im):
            h = net.stem.stem(im)
            for stage in net.stages:
                h = stage(h)
            return net.head.act(net.head.head(h))

        z1, z2 = embed_one(x[:, :1]), embed_one(x[:, 1:])
        s = net.head.distance((z1 - z2).abs())
        assert torch.allclose(logits, torch.cat([torch.zeros_like(s), s], 1), atol=1e-6)
        # swapping the two images does not change the score; a pair of identical images has distance 0
        assert torch.allclose(net(x.flip(1)), logits, atol=1e-6)
        same = net(x[:, :1].repeat(1, 2, 1, 1))
        assert torch.allclose(same[:, 1], net.head.distance.bias.expand(3))
        e1, e2 = net.embed(x)
        assert torch.allclose(e1, z1, atol=1e-6) and torch.allclose(e2, z2, atol=1e-6)
    with pytest.raises(ValueError, match="2 classes"):
        baselines.create_model("siamese", num_classes=10)
    with pytest.raises(ValueError, match="even"):
        baselines.create_model("siamese", num_classes=2, in_chans=3)
    with pytest.raises(ValueError, match="two images along channels"):
        net(torch.zeros(1, 3, 32, 32))


def test_siamese_on_another_backbone():
    net = baselines.create_model(
        "siamese", num_classes=2, in_chans=6, backbone="resnet20_cifar", embed_dim=8, backbone_args={"width": 4}
    )
    assert net.channels == [4, 8, 16] and net.input_size == (6, 32, 32)
    assert net(torch.randn(2, 6, 32, 32)).shape == (2, 2)


def test_contrastive_loss_matches_hadsell_et_al():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4)
    y = torch.tensor([1, 0, 1, 0, 0, 1])
    m = 2.0
    d = (z1 - z2).norm(dim=1)
    expected = (0.5 * y * d**2 + 0.5 * (1 - y) * torch.clamp(m - d, min=0) ** 2).mean()
    loss = contrastive_loss(z1, z2, y, margin=m)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(z1.grad).all()
    # similar pairs are pulled together, dissimilar pairs inside the margin pushed apart, beyond it ignored
    near, far = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])  # distance 5
    zero = torch.zeros(1, 2)
    assert contrastive_loss(zero, far, torch.tensor([0]), margin=m) == 0
    assert contrastive_loss(zero, far, torch.tensor([1]), margin=m) == 12.5
    assert contrastive_loss(zero, near, torch.tensor([0]), margin=m) == 0.5 * m**2
    z = torch.zeros(2, 3, requires_grad=True)
    contrastive_loss(z, torch.zeros(2, 3), torch.tensor([1, 0])).backward()  # D = 0: finite gradient
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="margin"):
        contrastive_loss(zero, far, torch.tensor([0]), margin=0)


# ----------------------------------------------------------------------------------------------- registry


def test_model_info():
    info = baselines.model_info("nasnetamobile")
    assert info["family"] == "NASNet" and info["paper"] == "Zoph et al. 2018" and not info["timm_owned"]
    assert info["num_params"] == 5_289_978 and info["num_stages"] == 3 and info["strides"] == (8, 16, 32)
    assert info["input_size"] == (3, 224, 224) and info["num_classes"] == 1000
    assert info["summary"].startswith("NASNet-A Mobile")
    assert baselines.model_info("vit_tiny_patch4_32")["max_input_size"] == 32
    assert baselines.model_info("resnet50")["source"] == "timm resnet50"
    for name in baselines.list_models():  # every registered model, including those registered without metadata
        info = baselines.model_info(name)
        if info["family"] in ("toy", "TDBU"):  # test fixtures; TDBU learns only buffers (fit), it has no weights
            continue
        assert info["num_params"] > 0 and info["family"]
    with pytest.raises(ValueError, match="unknown model"):
        baselines.model_info("resnet-50")


def test_register_model_checks_metadata():
    def fb_tmp_model(*, num_classes: int = 10, in_chans: int = 3):
        return nn.Identity()

    with pytest.raises(TypeError, match="small must be a dict"):
        baselines.register_model(small=[1])(fb_tmp_model)
    with pytest.raises(ValueError, match="min_input_size 64 > max_input_size 32"):
        baselines.register_model(min_input_size=64, max_input_size=32)(fb_tmp_model)
    with pytest.raises(ValueError, match="generic option"):
        baselines.register_model(small={"coordconv": True})(fb_tmp_model)
    assert "fb_tmp_model" not in baselines.list_models()


@pytest.mark.parametrize("name", registry_params(baselines.list_models(staged=True)))
def test_small_config_trains_one_step(name):
    """Every registered model's small configuration: forward, backward and an optimizer step on a CPU."""
    model, size = small(name)
    x = batch(model, size)
    y = torch.arange(x.shape[0]) % model.num_classes
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing  # every parameter takes part (timm's zero-initialised last BN can make some gradients 0)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_min_input_sizes_run():
    for name in MINE:
        info = baselines.model_info(name)
        if info["slow"] or info["min_input_size"] is None:
            continue
        model, _ = small(name)
        side = max(info["min_input_size"], 1)
        with torch.no_grad():
            assert model.eval()(batch(model, side, n=1)).shape == (1, model.num_classes), name


# ----------------------------------------------------------------------------------------------- FeedbackNet


@pytest.mark.parametrize("name", registry_params(MINE))
def test_feedback_net(name):
    model, size = small(name)
    input_size = (model.input_size[0], size, size)
    token_stages = getattr(model, "output_fmt", "NCHW") == "NLC"
    kind, kw = ("none", {}) if token_stages else ("deconv", {"zero_init": False})
    x = batch(model, size)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        one = FeedbackNet(model, kind, steps=1, input_size=input_size).eval()
        assert torch.equal(one(x).logits, ref)
    net = FeedbackNet(model, kind, steps=2, input_size=input_size, feedback_kwargs=kw).train()
    out = net(x)
    assert out.logits.shape == (2, model.num_classes) and len(out.per_step) == 2
    out.logits.logsumexp(1).sum().backward()
    fb = list(net.feedback.parameters())
    if kind == "deconv":
        assert fb and all(p.grad is not None and torch.isfinite(p.grad).all() for p in fb)


# ----------------------------------------------------------------------------------------------- docs


@pytest.mark.parametrize("module", MODULES + ["_registry"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"baselines.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------------------------- pair data


def test_digit_pairs_dataset():
    from experiments.data import create_dataset
    from experiments.data.digits import load_sklearn_digits

    splits = create_dataset("digit_pairs", seed=3, image_size=16, num_train=200, num_test=60)
    again = create_dataset("digit_pairs", seed=3, image_size=16, num_train=200, num_test=60)
    assert torch.equal(splits.train.images, again.train.images)  # deterministic in the seed
    assert splits.train.images.shape == (200, 2, 16, 16) and (splits.num_classes, splits.in_chans) == (2, 2)
    assert splits.train.labels.sum() == 100 and splits.test.labels.sum() == 30  # balanced
    _, labels = load_sklearn_digits()
    for part in (splits.train, splits.test):
        ids = part.source_ids.numpy()
        assert (ids[:, 0] != ids[:, 1]).all()
        assert ((labels[ids[:, 0]] == labels[ids[:, 1]]) == part.labels.numpy().astype(bool)).all()
    assert not set(splits.train.source_ids.flatten().tolist()) & set(splits.test.source_ids.flatten().tolist())
    # the Siamese model takes the pairs as they are
    net = baselines.create_model(
        "siamese", num_classes=2, in_chans=2, embed_dim=8, backbone="resnet20_cifar", backbone_args={"width": 4}
    )
    assert net(splits.train.images[:4]).shape == (4, 2)


# ----------------------------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", MINE)
def test_on_cuda_with_bf16_autocast(name):
    """On the GPU: the staged forward is the model's forward, a bf16-autocast feedback step has finite gradients,
    and the CoordConv variant runs (checked on an H100 with torch 2.11 and timm 1.0.29)."""
    dev = torch.device("cuda")
    model, size = small(name)
    model = model.to(dev).eval()
    x = batch(model, size, n=4).to(dev)
    with torch.no_grad():
        assert torch.equal(run(model, x)[0], model(x))
    kind, kw = ("none", {}) if getattr(model, "output_fmt", "") == "NLC" else ("deconv", {"zero_init": False})
    net = FeedbackNet(model, kind, steps=2, input_size=(model.input_size[0], size, size), feedback_kwargs=kw)
    net = net.to(dev).train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(x)
    out.logits.float().logsumexp(1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    coord, _ = small(name, coordconv=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert coord.to(dev)(x).shape == (4, model.num_classes)


def test_vit_explicit_attention_is_twice_differentiable():
    torch.manual_seed(0)
    fused = baselines.create_model("vit_tiny_patch4_32", embed_dim=48, depth=2).eval()
    plain = baselines.create_model("vit_tiny_patch4_32", embed_dim=48, depth=2, fused_attn=False).eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    assert torch.allclose(plain(x), fused(x), atol=1e-5)
    (g,) = torch.autograd.grad(plain(x).square().sum(), x, create_graph=True)
    g.square().sum().backward()  # a second derivative through the attention
    assert torch.isfinite(x.grad).all()
