"""``tdm`` (Shrivastava et al.): the top-down pathway, modulation, levels and growth, every baseline, bf16, cost."""

import copy
import doctest

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _kinds import build, check_cuda_float32_and_bf16, check_kind_contract, models

import feedback
import feedback.tdm
from feedback import FeedbackNet, feedback_cost, probe_shapes
from feedback.tdm import TDMFeedback

# ------------------------------------------------------------------------------------------- every baseline

FAST, SLOW = models()

def _check_contract(model, size, **kw):
    shapes = probe_shapes(model, size)
    bad = [s for s in shapes.inputs + shapes.outputs if len(s) not in (1, 3)]
    if bad:  # token stages (N, D): lateral and top-down modules are convolutions over maps
        pytest.skip(f"stage shape {bad[0]} is neither a map (C, H, W) nor a vector (C,)")
    if shapes.num_stages < 2:
        pytest.skip("a single stage: a top-down pathway needs a stage above another")
    fb = TDMFeedback(shapes=shapes, **kw)
    check_kind_contract(model, size, fb)


@pytest.mark.parametrize("name,kw,side", FAST)
def test_every_baseline_fast_tier(name, kw, side):
    _check_contract(*build(name, kw, side), zero_init=False, width=8)
    _check_contract(*build(name, kw, side), zero_init=False, combine="gain", levels=1)


@pytest.mark.slow
@pytest.mark.parametrize("name,kw,side", SLOW)
def test_every_other_baseline(name, kw, side):
    _check_contract(*build(name, kw, side), zero_init=False)


# ------------------------------------------------------------------------------------------- the pathway

SHAPES = feedback.StageShapes(
    inputs=((4, 16, 16), (6, 16, 16), (8, 8, 8), (12, 3, 3)),
    outputs=((6, 16, 16), (8, 8, 8), (12, 3, 3), (20,)),
    num_classes=5,
)


def test_pathway_by_hand():
    """T_i = ReLU(conv1x1([Up(ReLU(conv3x3 T_{i+1})), ReLU(conv3x3 C_i)])) from the top; M_i T_i to stage i+1."""
    torch.manual_seed(0)
    fb = TDMFeedback(shapes=SHAPES, zero_init=False)
    feats = [torch.randn(2, *s) for s in SHAPES.outputs]
    ts = fb.pathway(feats)
    td, state, aux = fb(feats, torch.randn(2, 5), "kept")
    assert state == "kept" and aux == {} and td[0] is None
    t = feats[3][:, :, None, None]  # the vector top stage as a 1x1 map
    assert torch.equal(ts[3], t)
    for k, i in enumerate((2, 1, 0)):
        u = fb.units[k]
        up = F.interpolate(F.relu(u.topdown(t)), size=feats[i].shape[-2:], mode="nearest")
        t = F.relu(u.out(torch.cat([up, F.relu(u.lateral(feats[i]))], 1)))
        torch.testing.assert_close(ts[i], t)
        torch.testing.assert_close(td[i + 1], u.modulation(t))
        assert ts[i].shape[1] == SHAPES.outputs[i][0]  # default width: the stage's channels
    narrow = TDMFeedback(shapes=SHAPES, width=3)
    assert [t.shape[1] for t in narrow.pathway(feats)[:3]] == [3, 3, 3]


def test_combine_modes():
    fb_add, fb_gain = TDMFeedback(shapes=SHAPES), TDMFeedback(shapes=SHAPES, combine="gain")
    h, s = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(fb_add.combine(2, h, s), h + s)
    torch.testing.assert_close(fb_gain.combine(2, h, s), h * (1 + torch.tanh(s)))
    assert fb_add.combine(2, h, None) is h


def _net():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.head = nn.Identity(), nn.Linear(6, 3)
            self.stages = nn.ModuleList(
                [
                    nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
                    nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU()),
                    nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
                    nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 6), nn.ReLU()),
                ]
            )

    torch.manual_seed(0)
    return Net()


def test_levels_and_the_progressive_schedule():
    """levels=k modulates the inputs of the top k stages; grow() adds the next pair below, and with zero_init the
    grown net computes exactly what it computed before (the paper's stage-by-stage schedule)."""
    net = _net()
    shapes = probe_shapes(net, (1, 8, 8))
    fb = TDMFeedback(shapes=shapes, levels=1)
    assert fb.levels == 1 and fb.lowest == 2
    feats = [torch.rand(2, *s) for s in shapes.outputs]
    assert [t is None for t in fb(feats, None, None)[0]] == [True, True, True, False]
    x = torch.randn(3, 1, 8, 8)
    fnet = FeedbackNet(net, fb, steps=3)
    out = fnet(x)
    assert all(torch.equal(out.per_step[0], lg) for lg in out.per_step)  # zero_init: starts as the backbone
    with torch.no_grad():
        for p in fb.parameters():
            p.add_(0.3 * torch.randn_like(p))  # as if trained at this level
    before = fnet.eval()(x).logits
    new = fb.grow()
    assert fb.levels == 2 and new is fb.units[-1] and new.modulation.out_channels == 8
    assert torch.equal(fnet(x).logits, before)  # growing with a zero projection changes nothing
    assert [t is None for t in fb(feats, None, None)[0]] == [True, True, False, False]
    fb.grow()
    assert fb.lowest == 0
    with pytest.raises(ValueError, match="already has all 3 units"):
        fb.grow()


def test_cost_and_stage_schedule():
    net = _net()
    shapes = probe_shapes(net, (1, 8, 8))
    c1 = feedback_cost(FeedbackNet(copy.deepcopy(net), "tdm", steps=2, input_size=(1, 8, 8),
                                   feedback_kwargs={"levels": 1}), (1, 8, 8))
    c3 = feedback_cost(FeedbackNet(net, "tdm", steps=2, input_size=(1, 8, 8)), (1, 8, 8))
    assert 0 < c1["feedback_params"] < c3["feedback_params"]
    assert c3["flops"] > c1["flops"] > 2 * c1["backbone_flops"]
    fb = TDMFeedback(shapes=shapes)
    assert sum(p.numel() for p in fb.parameters()) == c3["feedback_params"]


def test_errors():
    with pytest.raises(ValueError, match="levels"):
        TDMFeedback(shapes=SHAPES, levels=4)
    with pytest.raises(ValueError, match="levels"):
        TDMFeedback(shapes=SHAPES, levels=0)
    with pytest.raises(ValueError, match="combine"):
        TDMFeedback(shapes=SHAPES, combine="concat")
    with pytest.raises(ValueError, match="width"):
        TDMFeedback(shapes=SHAPES, width=0)
    one = feedback.StageShapes(inputs=((3, 8, 8),), outputs=((4, 4, 4),), num_classes=2)
    with pytest.raises(ValueError, match="at least 2 stages"):
        TDMFeedback(shapes=one)
    tokens = feedback.StageShapes(inputs=((3, 8, 8), (16, 8)), outputs=((16, 8), (16, 8)), num_classes=2)
    with pytest.raises(ValueError, match="supports"):
        TDMFeedback(shapes=tokens)


KIND, KWARGS = "tdm", {"zero_init": False}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["lenet5_relu", "resnet18_small"])
def test_cuda_float32_and_bf16(name):
    check_cuda_float32_and_bf16(KIND, KWARGS, name)

def test_docstring_examples_run():
    result = doctest.testmod(feedback.tdm, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
