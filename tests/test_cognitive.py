"""``cognitive`` (Wang et al. 2014): class-hypothesis gates on stage inputs, every baseline, bf16, cost."""

import doctest

import pytest
import torch
import torch.nn as nn
from _kinds import build, check_cuda_float32_and_bf16, check_kind_contract, models

import baselines
import feedback
import feedback.cognitive
from feedback import FeedbackNet, feedback_cost, probe_shapes
from feedback.cognitive import CognitiveFeedback

# ------------------------------------------------------------------------------------------- every baseline


FAST, SLOW = models()

def _check_contract(model, size, **kw):
    shapes = probe_shapes(model, size)
    bad = [s for s in shapes.inputs if len(s) not in (1, 3)]
    if bad:  # token stages (N, D): gates are defined per channel or unit of maps and vectors
        pytest.skip(f"stage input {bad[0]} is neither a map (C, H, W) nor a vector (C,)")
    fb = CognitiveFeedback(shapes=shapes, **kw)
    check_kind_contract(model, size, fb)


@pytest.mark.parametrize("name,kw,side", FAST)
def test_every_baseline_fast_tier(name, kw, side):
    _check_contract(*build(name, kw, side))
    _check_contract(*build(name, kw, side), hypothesis="top1", gate="unit", levels=1)


@pytest.mark.slow
@pytest.mark.parametrize("name,kw,side", SLOW)
def test_every_other_baseline(name, kw, side):
    _check_contract(*build(name, kw, side))


# ------------------------------------------------------------------------------------------- the gates

SHAPES = feedback.StageShapes(
    inputs=((1, 8, 8), (4, 6, 6), (8,)), outputs=((4, 6, 6), (8,), (5,)), num_classes=3
)


def test_gates_are_sigmoids_of_the_class_hypothesis():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    feats = [torch.rand(4, *s) for s in SHAPES.outputs]
    fb = CognitiveFeedback(shapes=SHAPES)
    td, p, _ = fb(feats, logits, None)
    torch.testing.assert_close(p, logits.softmax(-1))
    assert [tuple(t.shape) for t in td] == [(4, 1, 1, 1), (4, 4, 1, 1), (4, 8)]
    for m, g in zip(fb.maps, td):
        torch.testing.assert_close(g.flatten(1), torch.sigmoid(p @ m.weight.t() + m.bias))
    # top1: the paper's binary class prior; U of a one-hot is the chosen class's column
    fb1 = CognitiveFeedback(shapes=SHAPES, hypothesis="top1", gate="unit")
    td1, p1, _ = fb1(feats, logits, None)
    assert torch.equal(p1.sum(-1), torch.ones(4)) and torch.equal(p1.argmax(-1), logits.argmax(-1))
    k = logits.argmax(-1)
    torch.testing.assert_close(td1[1].flatten(1), torch.sigmoid(fb1.maps[1].weight[:, k].t() + fb1.maps[1].bias))
    assert td1[1].shape == (4, 4, 6, 6)
    _, ps, _ = CognitiveFeedback(shapes=SHAPES, hypothesis="sigmoid")(feats, logits, None)
    torch.testing.assert_close(ps, torch.sigmoid(logits))


def test_gating_selects_and_never_creates_activity():
    """Anti-hallucination: gates lie in [0, 1], so |gated| <= |bottom-up| and zero input stays zero."""
    torch.manual_seed(0)
    fb = CognitiveFeedback(shapes=SHAPES, gate="unit")
    with torch.no_grad():
        for m in fb.maps:
            m.weight.normal_(0, 10.0)
    td, _, _ = fb([torch.rand(4, *s) for s in SHAPES.outputs], 5 * torch.randn(4, 3), None)
    h = torch.randn(4, 4, 6, 6)
    h[:, :, :2] = 0
    gated = fb.combine(1, h, td[1])
    assert ((td[1] >= 0) & (td[1] <= 1)).all() and (gated.abs() <= h.abs()).all()
    assert (gated[:, :, :2] == 0).all() and fb.combine(1, h, None) is h


def test_the_loop_gates_every_later_step():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.head = nn.Identity(), nn.Linear(8, 3)
            self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()),
                                         nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU())])

    torch.manual_seed(0)
    net = Net()
    fb = CognitiveFeedback(shapes=probe_shapes(net, (1, 8, 8)))
    seen = []
    net.stages[1].register_forward_hook(lambda m, a, o: seen.append(a[0]))
    x = torch.rand(2, 1, 8, 8)
    out = FeedbackNet(net, fb, steps=3)(x)
    assert len(seen) == 3 and not torch.equal(seen[1], seen[0])
    gates = torch.sigmoid(fb.maps[1](out.per_step[1].softmax(-1)))  # the last step used step 1's hypothesis
    torch.testing.assert_close(seen[2], net.stages[0](x * torch.sigmoid(fb.maps[0](out.per_step[1].softmax(-1))).view(2, 1, 1, 1)) * gates.view(2, 4, 1, 1))
    torch.testing.assert_close(out.state, out.per_step[1].softmax(-1))


def test_cost_and_levels():
    net = baselines.create_model("lenet5_relu", num_classes=10)
    shapes = probe_shapes(net, (1, 32, 32))
    c = feedback_cost(FeedbackNet(net, CognitiveFeedback(shapes=shapes), steps=2), (1, 32, 32))
    channels = [1, 6, 6, 16, 16, 120]  # LeNet-5 stage input channels
    assert c["feedback_params"] == sum(11 * ch for ch in channels) and c["flops"] > 2 * c["backbone_flops"]
    top = CognitiveFeedback(shapes=shapes, levels=2)
    assert len(top.maps) == 2 and top.first == 4


def test_errors():
    with pytest.raises(ValueError, match="hypothesis"):
        CognitiveFeedback(shapes=SHAPES, hypothesis="argmax")
    with pytest.raises(ValueError, match="gate"):
        CognitiveFeedback(shapes=SHAPES, gate="spatial")
    with pytest.raises(ValueError, match="levels"):
        CognitiveFeedback(shapes=SHAPES, levels=4)
    tokens = feedback.StageShapes(inputs=((16, 8),), outputs=((16, 8),), num_classes=3)
    with pytest.raises(ValueError, match="supports"):
        CognitiveFeedback(shapes=tokens)


KIND, KWARGS = "cognitive", {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["lenet5_relu", "resnet18_small"])
def test_cuda_float32_and_bf16(name):
    check_cuda_float32_and_bf16(KIND, KWARGS, name)

def test_docstring_examples_run():
    result = doctest.testmod(feedback.cognitive, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_float64_model_keeps_float64():
    """SynFlow scores a model in float64: the class hypothesis must follow the logits' dtype (it upcasts half
    precision only)."""
    import baselines

    net = FeedbackNet(baselines.create_model("lenet5_relu", num_classes=10, in_chans=1), "cognitive", steps=2,
                      input_size=(1, 32, 32)).double().eval()
    out = net(torch.ones(2, 1, 32, 32, dtype=torch.float64))
    assert out.logits.dtype == torch.float64
