"""The feedback contract: steps=1 identity, gradients, no state leaks, registry, deconv geometry, cost."""

import doctest

import pytest
import torch
import torch.nn as nn

import baselines
import feedback
from feedback import FeedbackNet, StageShapes, create_feedback, list_feedback, probe_shapes, register_feedback
from feedback.core import Feedback, staged_forward
from feedback.deconv import deconv_geometry

# small, fast configurations of every registered backbone (the full-size ones are tested in test_baselines)
BACKBONE_KW = {
    "lenet5": dict(in_chans=1),
    "lenet5_relu": dict(in_chans=1),
    "resnet18": dict(in_chans=3),
    "resnet18_small": dict(in_chans=3, channels=(8, 16, 16, 32)),
}
INPUT = {"lenet5": (1, 32, 32), "lenet5_relu": (1, 32, 32), "resnet18": (3, 64, 64), "resnet18_small": (3, 16, 16)}


class Toy(nn.Module):
    """A user's own Staged model: no baselines import needed."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.stages = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU()), nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())]
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        self.input_size = (1, 12, 12)


def _backbone(name):
    torch.manual_seed(0)
    if name == "toy":
        return Toy(), (1, 12, 12)
    kw = dict(BACKBONE_KW.get(name, {}))
    return baselines.create_model(name, num_classes=10, **kw), INPUT.get(name)


def _backbone_names():
    return ["toy"] + [n for n in baselines.list_models() if n in BACKBONE_KW]


def _kind_kwargs(kind):
    return {
        "deconv": [{"combine": "add", "zero_init": False}, {"combine": "gain", "zero_init": False},
                   {"combine": "gate", "targets": "all", "zero_init": False}],
        "rectified": [{}],  # tied where the stage structure allows (bound on attach), learned elsewhere
        "cognitive": [{}, {"hypothesis": "top1", "gate": "unit", "levels": 2}],
        "tdm": [{"zero_init": False}, {"combine": "gain", "zero_init": False, "levels": 1, "width": 4}],
    }.get(kind, [{}])


@pytest.mark.parametrize("kind", list_feedback())
@pytest.mark.parametrize("name", _backbone_names())
def test_steps1_is_backbone_exactly(kind, name):
    backbone, size = _backbone(name)
    backbone.eval()
    x = torch.randn(2, *size)
    ref = staged_forward(backbone, x) if name == "toy" else backbone(x)
    for kw in _kind_kwargs(kind):
        net = FeedbackNet(backbone, kind, steps=1, input_size=size, feedback_kwargs=kw).eval()
        out = net(x)
        assert torch.equal(out.logits, ref)
        assert len(out.per_step) == 1 and out.aux_losses == {}
        # the feedback kind's parameters are not used at steps=1: no gradient reaches them
        out.logits.sum().backward()
        assert all(p.grad is None for p in net.feedback.parameters())
        net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kind", list_feedback())
@pytest.mark.parametrize("name", _backbone_names())
def test_gradients_reach_every_feedback_parameter(kind, name):
    backbone, size = _backbone(name)
    for kw in _kind_kwargs(kind):
        net = FeedbackNet(backbone, kind, steps=3, input_size=size, feedback_kwargs=kw)
        out = net(torch.randn(2, *size))
        loss = out.logits.square().mean() + sum(out.aux_losses.values(), torch.tensor(0.0))
        loss.backward()
        for pname, p in net.feedback.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{kind} {pname} got no gradient"
        net.zero_grad(set_to_none=True)


def test_zero_init_gradients_still_flow():
    """With zero-initialised transposed convolutions the net starts as the backbone, yet learns the feedback."""
    backbone, size = _backbone("toy")
    net = FeedbackNet(backbone, "deconv", steps=3, input_size=size).eval()
    x = torch.randn(3, *size)
    out = net(x)
    assert all(torch.equal(out.per_step[0], lg) for lg in out.per_step[1:])
    out.logits.square().mean().backward()
    assert all(p.grad.abs().sum() > 0 for n, p in net.feedback.named_parameters() if n.endswith("weight"))


@pytest.mark.parametrize("kind", list_feedback())
def test_no_state_leaks_between_batches(kind):
    backbone, size = _backbone("toy")
    net = FeedbackNet(backbone, kind, steps=3, input_size=size, feedback_kwargs=_kind_kwargs(kind)[0]).eval()
    a, b = torch.randn(4, *size), torch.randn(4, *size)
    first = net(a).logits
    net(b)
    assert torch.equal(net(a).logits, first)
    # per-sample: a sample's output does not depend on the rest of the batch
    alone = net(a[:1]).logits
    torch.testing.assert_close(alone, first[:1], rtol=1e-5, atol=1e-6)


def test_feedback_changes_later_steps():
    backbone, size = _backbone("toy")
    net = FeedbackNet(backbone, "deconv", steps=3, input_size=size, feedback_kwargs={"zero_init": False}).eval()
    out = net(torch.randn(2, *size))
    assert not torch.equal(out.per_step[0], out.per_step[1])
    mean = FeedbackNet(backbone, net.feedback, steps=3, readout="mean").eval()(torch.zeros(2, *size))
    torch.testing.assert_close(mean.logits, torch.stack(mean.per_step).mean(0))


def test_none_repeats_the_backbone():
    backbone, size = _backbone("toy")
    out = FeedbackNet(backbone, "none", steps=4, input_size=size).eval()(torch.randn(2, *size))
    assert all(torch.equal(out.per_step[0], lg) for lg in out.per_step)


def test_registry():
    assert {"none", "deconv"} <= set(list_feedback())
    assert list_feedback("dec*") == ["deconv"]
    with pytest.raises(ValueError, match="already registered"):
        register_feedback("deconv")(type("Dup", (Feedback,), {}))
    with pytest.raises(ValueError, match="did you mean 'deconv'"):
        create_feedback("deconvv", shapes=StageShapes(inputs=(), outputs=(), num_classes=1))


def test_staged_check_and_errors():
    with pytest.raises(TypeError, match="missing attribute"):
        FeedbackNet(nn.Linear(2, 2), "none")
    backbone, size = _backbone("toy")
    with pytest.raises(ValueError, match="steps"):
        FeedbackNet(backbone, "none", steps=0, input_size=size)
    with pytest.raises(ValueError, match="readout"):
        FeedbackNet(backbone, "none", readout="max", input_size=size)
    with pytest.raises(ValueError, match="combine"):
        FeedbackNet(backbone, "deconv", input_size=size, feedback_kwargs={"combine": "mul"})


def test_probe_shapes_leaves_batchnorm_alone():
    backbone, size = _backbone("toy")
    before = backbone.stem[1].running_mean.clone()
    shapes = probe_shapes(backbone, size)
    assert torch.equal(before, backbone.stem[1].running_mean) and backbone.training
    assert shapes.inputs == ((4, 12, 12), (8, 6, 6)) and shapes.outputs == ((8, 6, 6), (8, 3, 3))
    assert shapes.num_classes == 5


@pytest.mark.parametrize("source,target", [(1, 5), (5, 14), (10, 28), (14, 32), (4, 16), (8, 32), (5, 10), (3, 3)])
def test_deconv_geometry_is_exact(source, target):
    stride, kernel = deconv_geometry(source, target)
    assert (source - 1) * stride + kernel == target and kernel >= stride >= 1
    with pytest.raises(ValueError):
        deconv_geometry(target + 1, target)


def test_deconv_shapes_on_lenet_and_vector_stages():
    backbone, size = _backbone("lenet5")
    shapes = probe_shapes(backbone, size)
    fb = create_feedback("deconv", shapes=shapes)
    feats = [torch.randn(2, *s) for s in shapes.outputs]
    td, _, _ = fb(feats, torch.randn(2, 10), None)
    assert [tuple(t.shape[1:]) for t in td[:-1]] == list(shapes.inputs[:-1]) and td[-1] is None


def test_cost_reports_parameters_and_flops():
    backbone, size = _backbone("toy")
    c1 = feedback.feedback_cost(FeedbackNet(backbone, "deconv", steps=1, input_size=size), size)
    c3 = feedback.feedback_cost(FeedbackNet(backbone, "deconv", steps=3, input_size=size), size)
    assert c1["flops"] == c1["backbone_flops"] > 0
    assert c3["feedback_params"] == c1["feedback_params"] > 0
    assert c3["flops"] > 2 * c3["backbone_flops"]


@pytest.mark.parametrize("module", ["feedback.core", "feedback.none", "feedback.deconv", "feedback.cost"])
def test_docstring_examples_run(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_per_step_norm_stats_leave_the_backbone_statistics_alone():
    """Extra steps update their own batch-norm statistics; the backbone's are updated as by one plain pass."""
    import copy

    backbone, size = _backbone("resnet18_small")
    reference = copy.deepcopy(backbone)
    net = FeedbackNet(backbone, "deconv", steps=3, input_size=size, feedback_kwargs={"zero_init": False}).train()
    x = torch.randn(4, *size)
    net(x)
    reference.train()(x)
    for (k, a), b in zip(backbone.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), k
    assert len(net.step_stats) == 2 and all(s.num_batches_tracked == 1 for s in net.step_stats[1])
    step2 = net.step_stats[0][0].running_mean
    assert not torch.equal(step2, net.step_stats[1][0].running_mean)  # feedback changed the step-3 statistics
    # the buffers live in the state dict, so a checkpoint restores them
    assert any(k.startswith("step_stats.1.") for k in net.state_dict())


def test_shared_norm_stats_update_the_backbone_buffers_every_step():
    backbone, size = _backbone("resnet18_small")
    net = FeedbackNet(backbone, "none", steps=3, input_size=size, norm_stats="shared").train()
    net(torch.randn(4, *size))
    bn = backbone.stages[0][0].bn1
    assert int(bn.num_batches_tracked) == 3 and len(net.step_stats) == 0
    with pytest.raises(ValueError, match="norm_stats"):
        FeedbackNet(backbone, "none", input_size=size, norm_stats="per_batch")
