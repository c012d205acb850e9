"""The `excitation` and `wta` feedback kinds: maps computed inside the forward pass, no hooks, no state, train mode."""

import doctest
import importlib

import pytest
import torch
import torch.nn as nn

import baselines
from feedback import FeedbackNet, list_feedback, readout
from feedback.excitation import ExcitationFeedback, attention_gain
from feedback.readout._rules import Rules, run_topdown
from feedback.readout._trace import Trace, TracedTensor, replay, trace_of


def _net(seed=0):
    torch.manual_seed(seed)
    net = baselines.create_model("resnet18_small", num_classes=5, in_chans=1, channels=(8, 8, 8, 8))
    with torch.no_grad():  # timm zero-initialises each block's last BN scale: wake the residual branches up
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.1, 0.1)
    return net


def _spy(fb):
    seen = []
    original = fb.forward

    def forward(feats, logits, state):
        td, st, aux = original(feats, logits, state)
        seen.append([None if t is None else t.detach().clone() for t in td])
        return td, st, aux

    fb.forward = forward
    return seen


def test_registered_without_parameters():
    assert {"excitation", "wta"} <= set(list_feedback())
    net = FeedbackNet(_net(), "excitation", steps=2, input_size=(1, 16, 16))
    assert sum(p.numel() for p in net.feedback.parameters()) == 0
    assert sum(p.numel() for p in FeedbackNet(_net(), "wta", steps=2, input_size=(1, 16, 16)).feedback.parameters()) == 0
    with pytest.raises(ValueError, match="strength"):
        FeedbackNet(_net(), "excitation", input_size=(1, 16, 16), feedback_kwargs={"strength": 2.0})
    with pytest.raises(ValueError, match="choose from"):
        FeedbackNet(_net(), "wta", input_size=(1, 16, 16), feedback_kwargs={"mode": "max"})


def test_excitation_gains_are_the_readout_maps_of_the_predicted_class():
    """The kind's gains equal those built from feedback.readout.excitation_backprop on the backbone itself."""
    backbone = _net().eval()
    net = FeedbackNet(backbone, "excitation", steps=2, input_size=(1, 16, 16), feedback_kwargs={"strength": 0.7})
    net.eval()
    seen = _spy(net.feedback)
    x = torch.rand(3, 1, 16, 16)
    out = net(x)
    pred = out.per_step[0].argmax(-1)
    layers = ["stem", 0, 1, 2]  # stage i's input is the stem's (i = 0) or stage i-1's output
    for i, layer in enumerate(layers):
        m = readout.excitation_backprop(backbone, x, pred, layer=layer)
        want = attention_gain(torch.cat([m, torch.zeros_like(m)], 1), 0.7)  # channel sum of the signal = the map
        torch.testing.assert_close(seen[0][i], want, atol=1e-5, rtol=1e-4)
    assert not torch.equal(out.per_step[0], out.per_step[1])


def test_wta_gains_are_the_binary_beams_of_the_readout():
    backbone = _net(1).eval()
    net = FeedbackNet(backbone, "wta", steps=2, input_size=(1, 16, 16),
                      feedback_kwargs={"strength": 0.75, "theta": 0.3}).eval()
    seen = _spy(net.feedback)
    x = torch.rand(2, 1, 16, 16)
    pred = net(x).per_step[0].argmax(-1)
    for i, layer in enumerate(["stem", 0, 1, 2]):
        beam = readout.selective_tuning(backbone, x, pred, layer=layer, theta=0.3)
        assert set(seen[0][i].unique().tolist()) <= {0.25, 1.0}
        torch.testing.assert_close(seen[0][i], 0.25 + 0.75 * beam)


def test_train_mode_leaves_running_statistics_and_hooks_alone():
    backbone = _net(2)
    ref = _net(2)
    x = torch.rand(4, 1, 16, 16)
    for kind in ("excitation", "wta"):
        net = FeedbackNet(backbone, kind, steps=2, input_size=(1, 16, 16)).train()
        stats = [s.running_mean.clone() for s in net.step_stats[0]]
        counts = [int(s.num_batches_tracked) for s in net.step_stats[0]]
        out = net(x)
        ref.train()(x)  # the backbone's own buffers see one plain training pass (step 0)
        for (k, a), b in zip(backbone.state_dict().items(), ref.state_dict().values()):
            assert torch.equal(a, b), (kind, k)
        # step 1's statistics were updated once, by the real step: the replay never touches a buffer
        assert [int(s.num_batches_tracked) for s in net.step_stats[0]] == [c + 1 for c in counts]
        assert any(not torch.equal(a, s.running_mean) for a, s in zip(stats, net.step_stats[0]))
        out.logits.square().mean().backward()
        assert all(p.grad is not None for p in backbone.parameters())
        backbone.zero_grad(set_to_none=True)
        for m in net.modules():
            assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), (kind, type(m).__name__)
        assert torch._C._len_torch_function_stack() == 0
        assert trace_of(out.per_step[0]) is None  # the step the kind read was closed after its replay


def test_no_grad_eval_and_strength_zero_is_the_backbone():
    backbone = _net(3).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        plain = backbone(x)
        out = FeedbackNet(backbone, "excitation", steps=3, input_size=(1, 16, 16),
                          feedback_kwargs={"strength": 0.0}).eval()(x)
    assert all(torch.equal(lg, plain) for lg in out.per_step)
    assert isinstance(out.logits, TracedTensor)  # values exact; the class records the (unread) last step


def test_lenet_and_vector_stage_inputs():
    torch.manual_seed(4)
    net = FeedbackNet(baselines.create_model("lenet5_relu", num_classes=10, in_chans=1), "excitation", steps=2).eval()
    seen = _spy(net.feedback)
    net(torch.rand(2, 1, 32, 32))
    shapes = [None if t is None else tuple(t.shape) for t in seen[0]]
    assert shapes == [(2, 1, 32, 32), (2, 1, 28, 28), (2, 1, 14, 14), (2, 1, 10, 10), (2, 1, 5, 5), (2, 1, 1, 1)]


def test_trace_records_inplace_ops_and_closes():
    lin = nn.Linear(3, 3)
    tr = Trace()
    x = tr.input(torch.rand(2, 3), tap=0)
    y = lin(x)
    y += x  # in place, on a traced tensor: the record follows the new value
    logits = torch.relu(y) @ torch.ones(3, 2)
    assert isinstance(logits, TracedTensor) and trace_of(logits) is tr
    sig = replay(logits, Rules("excitation"), target=torch.tensor([0, 1]))
    probes, _, _ = run_topdown(_Wrap(lin), x.detach(), [0, 1], rules=Rules("excitation"), layers=[""])
    torch.testing.assert_close(sig[0], probes[0].signal)
    assert tr.closed and trace_of(logits) is None
    with pytest.raises(RuntimeError, match="not traced"):
        ExcitationFeedback(shapes=None)([], torch.zeros(2, 2), None)


class _Wrap(nn.Module):
    """The same computation as in test_trace_records_inplace_ops_and_closes, as a module."""

    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        y = self.lin(x)
        y += x
        return torch.relu(y) @ torch.ones(3, 2)


@pytest.mark.parametrize("module", ["feedback.excitation", "feedback.wta"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_rule_based_readouts_of_the_unrolled_net_raise_gradient_ones_work():
    net = FeedbackNet(_net(5), "excitation", steps=2, input_size=(1, 16, 16))
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(RuntimeError, match="read out net.backbone"):
        readout.excitation_backprop(net, x, 1, layer=1)
    assert readout.gradient(net, x, 1, layer=1).shape == (2, 1, 8, 8)
    assert readout.excitation_backprop(net.backbone, x, 1, layer=1).shape == (2, 1, 8, 8)
    assert torch._C._len_torch_function_stack() == 0 and all(not m._forward_hooks for m in net.modules())
