"""``rectified`` (Hu and Ramanan 2016): tied transposed maps, switches, the QP update, every baseline, bf16, cost."""

import copy
import doctest

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _kinds import build, check_cuda_float32_and_bf16, check_kind_contract, models

import baselines
import feedback.rectified
from feedback import FeedbackNet, feedback_cost, probe_shapes
from feedback.rectified import RectifiedFeedback, _conv_transpose, _unpool, stage_plan

# ------------------------------------------------------------------------------------------- every baseline


FAST, SLOW = models()

def _unsupported(shapes):
    bad = [s for s in shapes.inputs + shapes.outputs if len(s) not in (1, 3)]
    if bad:  # token stages (N, D): the rectified model is defined on feature maps and vectors
        return f"stage shape {bad[0]} is neither a map (C, H, W) nor a vector (C,)"
    if shapes.num_stages < 2:  # stage 0's input is the clamped z_0: a single stage has no one to send to
        return "a single stage: its only message would reach the clamped input"
    return None


def _check_contract(model, size):
    shapes = probe_shapes(model, size)
    reason = _unsupported(shapes)
    if reason:
        pytest.skip(reason)
    fb = RectifiedFeedback(shapes=shapes, backbone=model)
    check_kind_contract(model, size, fb)


@pytest.mark.parametrize("name,kw,side", FAST)
def test_every_baseline_fast_tier(name, kw, side):
    _check_contract(*build(name, kw, side))


@pytest.mark.slow
@pytest.mark.parametrize("name,kw,side", SLOW)
def test_every_other_baseline(name, kw, side):
    _check_contract(*build(name, kw, side))


# ------------------------------------------------------------------------------------------- the maps


@pytest.mark.parametrize(
    "conv,size",
    [
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), (9, 8)),  # odd size: output_padding
        (nn.Conv2d(4, 6, 5), (14, 14)),
        (nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2), (7, 7)),
        (nn.Conv2d(2, 4, 4, stride=3, padding="valid"), (11, 10)),
    ],
)
def test_tied_conv_transpose_is_the_adjoint(conv, size):
    """<W x, z> = <x, W^T z>, with the conv's own weight, sized exactly as the conv's input."""
    x = torch.randn(2, conv.in_channels, *size, dtype=torch.float64)
    conv = conv.double()
    wx = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    z = torch.randn_like(wx)
    wtz = _conv_transpose(z, conv, size)
    assert wtz.shape == x.shape
    torch.testing.assert_close((wx * z).sum(), (x * wtz).sum())


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, ceil_mode=True)])
def test_unpooling_is_the_adjoint_at_the_switches(pool):
    """Max-pooling at fixed switches is a selection S; un-pooling is S^T (overlapping windows sum)."""
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    sx = pool(x)
    m = torch.randn_like(sx)
    up = _unpool(m, pool, x)
    torch.testing.assert_close((sx * m).sum(), (x * up).sum())
    assert up.shape == x.shape and int((up != 0).sum()) <= m.numel()


def test_stage_plans():
    assert stage_plan(nn.MaxPool2d(2), (4, 8, 8), (4, 4, 4))[0] == "switches"
    assert stage_plan(nn.Sequential(nn.Flatten(), nn.Linear(8, 3), nn.ReLU()), (2, 2, 2), (3,))[0] == "tied"
    assert stage_plan(nn.Linear(8, 3), (8,), (3,))[0] == "tied"
    assert stage_plan(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3)), (3, 5, 5), (3, 3, 3))[0] == "learned"
    assert stage_plan(nn.Conv2d(3, 3, 3, padding="same"), (3, 5, 5), (3, 5, 5))[0] == "learned"
    assert stage_plan(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), (3, 5, 5), (3, 5, 5))[0] == "learned"
    lenet = baselines.create_model("lenet5_relu", num_classes=10)
    fb = RectifiedFeedback(shapes=probe_shapes(lenet, (1, 32, 32)), backbone=lenet)
    assert fb.plan == ("clamped", "switches", "tied", "switches", "tied", "tied")
    assert sum(p.numel() for p in fb.parameters()) == 2 * (6 + 16 + 120)  # BN affine only: the rest is tied
    resnet = baselines.create_model("resnet18_small", num_classes=10, channels=(8, 8, 16, 16))
    fb = RectifiedFeedback(shapes=probe_shapes(resnet, (3, 16, 16)), backbone=resnet)
    assert fb.plan == ("clamped", "learned", "learned", "learned")  # residual stacks have no single W


class _Net(nn.Module):
    """stem identity (z_0 = x), conv-ReLU, max-pool, conv-ReLU, flatten-linear-ReLU; linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Identity()
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()),
                nn.MaxPool2d(2),
                nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.ReLU()),
            ]
        )
        self.head = nn.Linear(5, 2)


def _capture(net):
    """Record every stage's input and output, step by step."""
    log = {i: [] for i in range(len(net.stages))}
    for i, s in enumerate(net.stages):
        s.register_forward_hook(lambda m, a, o, i=i: log[i].append((a[0].detach(), o.detach())))
    return log


def test_the_qp_update_by_hand():
    """message_norm='none': stage inputs at step t+1 are max(0, h + W^T z) with the stages' own weights, the conv
    message un-pooled at the switches of the pool's actual input, and the clamped input untouched."""
    torch.manual_seed(0)
    net = _Net().eval()
    fb = RectifiedFeedback(shapes=probe_shapes(net, (1, 8, 8)), backbone=net, message_norm="none")
    assert fb.plan == ("clamped", "switches", "tied", "tied") and not list(fb.parameters())
    log = _capture(net)
    x = torch.randn(3, 1, 8, 8)
    out = FeedbackNet(net, fb, steps=3)(x)
    conv2, lin = net.stages[2][0], net.stages[3][1]
    for t in (1, 2):
        z2, z3 = log[2][t - 1][1], log[3][t - 1][1]  # states of step t - 1
        pool_in = log[1][t - 1][0]  # the pool's actual input at step t - 1 (its switches)
        msg2 = F.conv_transpose2d(z2, conv2.weight, padding=1)
        _, idx = F.max_pool2d(pool_in, 2, return_indices=True)
        unpooled = torch.zeros_like(pool_in).flatten(2).scatter_add(2, idx.flatten(2), msg2.flatten(2)).view_as(pool_in)
        h0 = log[0][t][1]  # stage 0's output at step t (the clamped input never changes)
        torch.testing.assert_close(log[1][t][0], F.relu(h0 + unpooled))
        msg3 = (z3 @ lin.weight).view(-1, 4, 3, 3)
        torch.testing.assert_close(log[3][t][0], F.relu(log[2][t][1] + msg3))
        torch.testing.assert_close(log[0][t][0], x)
        assert torch.equal(log[2][t][0], log[1][t][1])  # no message of its own into the pool's output
    assert out.state["step"] == 2 and out.state["topdown"][0] is None and out.state["topdown"][2] is None


def test_message_norm_keeps_statistics_per_step():
    """Each step's messages update their own running statistics (shared affine), so eval mode matches training."""
    torch.manual_seed(0)
    net = _Net()
    fb = RectifiedFeedback(shapes=probe_shapes(net, (1, 8, 8)), backbone=net, norm_steps=2)
    assert sorted(fb.norms) == ["2", "3"] and fb.norms["2"].running_mean.shape == (2, 3)
    FeedbackNet(net, fb, steps=2).train()(torch.randn(4, 1, 8, 8))
    bn = fb.norms["2"]
    assert not torch.equal(bn.running_mean[0], torch.zeros(3)) and torch.equal(bn.running_mean[1], torch.zeros(3))
    FeedbackNet(net, fb, steps=4).train()(torch.randn(4, 1, 8, 8))  # steps 2 and 3 share the last row
    assert not torch.equal(bn.running_mean[1], torch.zeros(3))
    msg = torch.randn(6, 3, 6, 6) * 3 + 1
    torch.testing.assert_close(bn.train()(msg, 1), F.batch_norm(msg, None, None, bn.weight, bn.bias, True))
    with pytest.raises(ValueError, match="norm_steps"):
        RectifiedFeedback(shapes=probe_shapes(net, (1, 8, 8)), norm_steps=0)


def test_weights_are_tied_not_copied():
    torch.manual_seed(0)
    net = _Net()
    fb = RectifiedFeedback(shapes=probe_shapes(net, (1, 8, 8)), backbone=net, message_norm="none")
    fnet = FeedbackNet(net, fb, steps=2)
    assert not any(k.startswith("feedback.") for k in fnet.state_dict())  # no copy of the backbone in the kind
    assert feedback_cost(fnet, (1, 8, 8))["feedback_params"] == 0
    x = torch.randn(2, 1, 8, 8)
    feats = []
    h = x
    for s in net.stages:
        h = s(h)
        feats.append(h)
    td, _, _ = fb(feats, net.head(h), None)
    conv2 = net.stages[2][0]
    (g,) = torch.autograd.grad(td[1].sum(), conv2.weight)  # the top-down pass reaches the forward weight
    assert g.abs().sum() > 0
    with torch.no_grad():
        conv2.weight.mul_(2.0)
    td2, _, _ = fb([f.detach() for f in feats], None, None)
    torch.testing.assert_close(td2[1], 2 * td[1].detach())  # the message reads the current weight


def test_cost_and_steps():
    net = baselines.create_model("lenet5_relu", num_classes=10)
    fb = RectifiedFeedback(shapes=probe_shapes(net, (1, 32, 32)), backbone=net)
    c = feedback_cost(FeedbackNet(net, fb, steps=3), (1, 32, 32))
    assert c["feedback_params"] == 2 * (6 + 16 + 120) and c["flops"] > 3 * c["backbone_flops"]


def test_binding_by_name_and_on_attach():
    """FeedbackNet(backbone, "rectified") ties to that backbone (the runner's path); a kind attached elsewhere stays
    unbound; the learned form needs no backbone."""
    net = _Net()
    fnet = FeedbackNet(net, "rectified", steps=2, input_size=(1, 8, 8))
    assert fnet.feedback.plan == ("clamped", "switches", "tied", "tied")
    assert fnet.feedback._ops[2] is net.stages[2][0]
    fb = RectifiedFeedback(shapes=probe_shapes(net, (1, 8, 8)))
    holder = nn.Module()
    holder.kind = fb  # no backbone here: nothing to bind to
    assert fb.plan is None
    FeedbackNet(net, fb, steps=2)
    assert fb.plan == ("clamped", "switches", "tied", "tied")
    learned = FeedbackNet(net, "rectified", steps=2, input_size=(1, 8, 8), feedback_kwargs={"weights": "learned"})
    assert learned.feedback.plan == ("clamped", "learned", "learned", "learned")
    x = torch.randn(2, 1, 8, 8)
    learned(x).logits.sum().backward()
    assert all(p.grad is not None for p in learned.feedback.parameters())


def test_errors():
    net = _Net()
    shapes = probe_shapes(net, (1, 8, 8))
    fb = RectifiedFeedback(shapes=shapes)
    feats = [torch.randn(2, *s) for s in shapes.outputs]
    with pytest.raises(RuntimeError, match="not bound"):
        fb(feats, torch.randn(2, 2), None)
    fb.bind(net)
    assert fb.bind(net) is fb  # binding the same backbone again (as FeedbackNet does) is a no-op
    other = copy.deepcopy(net)
    with pytest.raises(RuntimeError, match="already bound"):
        fb.bind(other)
    with pytest.raises(ValueError, match="weights"):
        RectifiedFeedback(shapes=shapes, weights="shared")
    with pytest.raises(ValueError, match="message_norm"):
        RectifiedFeedback(shapes=shapes, message_norm="layer")
    with pytest.raises(ValueError, match="stages"):
        RectifiedFeedback(shapes=shapes).bind(baselines.create_model("lenet5_relu"))
    learned = RectifiedFeedback(shapes=shapes, weights="learned")
    assert learned.plan == ("clamped", "learned", "learned", "learned") and learned.bind(net) is learned


KIND, KWARGS = "rectified", {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["lenet5_relu", "resnet18_small"])
def test_cuda_float32_and_bf16(name):
    check_cuda_float32_and_bf16(KIND, KWARGS, name)

def test_docstring_examples_run():
    result = doctest.testmod(feedback.rectified, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
