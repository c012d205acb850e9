"""``generative`` (CNN-F): tied transposes, AdaReLU/AdaPool, the eta update, per-sample state, every backbone."""

import doctest
import importlib
import warnings

import pytest
import torch
import torch.nn as nn
from test_deconv import check_kind_on_backbone, registry_cases, tiny_backbone

import baselines
import feedback
from feedback import FeedbackNet, probe_shapes
from feedback._tied import rms
from feedback.generative import GenerativeFeedback, _AdaPool, _AdaReLU, _Run


class Net(nn.Module):
    """A small Staged ReLU / max-pool / batch-norm net with a bias everywhere."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Flatten(), nn.Linear(8 * 3 * 3, 16), nn.ReLU()),
        ])
        self.head = nn.Linear(16, 10)
        self.input_size = (1, 12, 12)


def _net(steps=3, **kw):
    torch.manual_seed(0)
    return FeedbackNet(Net(), "generative", steps=steps, feedback_kwargs=kw)


@pytest.mark.parametrize("module", ["feedback.generative", "feedback._tied"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("name", registry_cases())
def test_generative_on_every_registered_backbone(name):
    check_kind_on_backbone("generative", name, {})


# --------------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", ["toy", "lenet5", "lenet5_relu", "resnet18_small", "resnet50"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_recomputed_forward_reproduces_every_stage(name, mode):
    """The switches come from a recomputation of the forward pass: it must equal the stages' own output."""
    backbone, size = (Net(), (1, 12, 12)) if name == "toy" else tiny_backbone(name)
    fb = GenerativeFeedback(shapes=probe_shapes(backbone, size), backbone=backbone)
    backbone.train(mode == "train")
    plan = fb._bound
    run = _Run(None, plan.num_switches)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with torch.no_grad():
        h = backbone.stem(torch.rand(4, *size))
        for stage, node in zip(backbone.stages, plan.stages):
            torch.testing.assert_close(node.forward(h, run), stage(h), rtol=1e-5, atol=1e-5)
            h = stage(h)
        torch.testing.assert_close(plan.head.forward(h, run), backbone.head(h), rtol=1e-5, atol=1e-5)
    if mode == "train":  # the recomputation leaves the batch-norm statistics alone (the stage calls moved them)
        backbone.load_state_dict(before)
        with torch.no_grad():
            plan.stages[0].forward(torch.rand(4, *probe_shapes(backbone, size).inputs[0]), run)
        assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


@pytest.mark.parametrize("name", ["toy", "lenet5_relu", "resnet18_small", "resnet50", "lenet5"])
def test_first_generative_pass_is_the_transpose_of_the_network(name):
    """With the forward's own switches (the first pass) each transposed stage is exactly the stage's adjoint:
    the vector-Jacobian product of the stage at its input, which autograd computes independently."""
    backbone, size = (Net(), (1, 12, 12)) if name == "toy" else tiny_backbone(name)
    backbone.eval()
    fb = GenerativeFeedback(shapes=probe_shapes(backbone, size), backbone=backbone)
    plan = fb._bound
    run = _Run(None, plan.num_switches)
    h = backbone.stem(torch.rand(3, *size)).detach()
    for stage, node in list(zip(backbone.stages, plan.stages)) + [(backbone.head, plan.head)]:
        u = h.clone().requires_grad_(True)
        y = stage(u)
        g = torch.randn_like(y)
        (expected,) = torch.autograd.grad(y, u, g)
        with torch.no_grad():
            node.forward(h, run)
        torch.testing.assert_close(node.transpose(g, run), expected, rtol=1e-4, atol=1e-5)
        h = y.detach()


def test_tied_weights_receive_the_reconstruction_gradient_and_nothing_is_copied():
    """CNN-F's Linear feedback copies the weights once, so its reconstruction loss never trains them. Here every
    transposed layer uses the forward module's own parameter: the loss reaches every conv and linear weight."""
    net = _net(steps=2)
    assert sum(p.numel() for p in net.feedback.parameters()) == 0 and net.feedback.state_dict() == {}
    out = net(torch.rand(4, 1, 12, 12))
    out.aux_losses["recon"].backward()
    for name, p in net.backbone.named_parameters():
        if name.endswith("weight") and p.dim() > 1:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the head's transpose uses the head weight itself: perturbing it changes the reconstruction
    x = torch.rand(4, 1, 12, 12)
    before = net(x).state["recon_mse"][0]
    with torch.no_grad():
        net.backbone.head.weight.mul_(-1.0)
    assert not torch.allclose(net(x).state["recon_mse"][0], before)


# --------------------------------------------------------------------------------------------------- AdaReLU, AdaPool


def test_adarelu_keeps_units_whose_sign_agrees_with_the_prediction():
    node = _AdaReLU(0)
    node.key = 0
    z = torch.tensor([[1.0, -1.0, 2.0, -2.0]])
    g = torch.ones(1, 4)
    run = _Run(None, 1)
    node.forward(z, run)
    assert torch.equal(node.transpose(g, run), torch.tensor([[1.0, 0.0, 1.0, 0.0]]))  # first pass: z > 0
    assert torch.equal(run.hidden[0], g)  # the top-down signal at the ReLU, for the next pass
    run = _Run([torch.tensor([[1.0, -1.0, -1.0, 1.0]])], 1)
    node.forward(z, run)
    assert torch.equal(node.transpose(g, run), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))  # then: z * h_prev > 0


def test_adapool_routes_to_the_max_or_the_min_by_the_sign_of_the_prediction():
    node = _AdaPool(nn.MaxPool2d(2), 0)
    node.key = 0
    x = torch.tensor([[[[1.0, 5.0], [-3.0, 2.0]]]])  # one window: max 5 at (0, 1), min -3 at (1, 0)
    run = _Run(None, 1)
    node.forward(x, run)
    assert torch.equal(node.transpose(torch.ones(1, 1, 1, 1), run), torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))
    for prev, where in ((1.0, (0, 1)), (-1.0, (1, 0))):
        run = _Run([torch.full((1, 1, 1, 1), prev)], 1)
        node.forward(x, run)
        out = node.transpose(torch.full((1, 1, 1, 1), 2.0), run)
        expected = torch.zeros(1, 1, 2, 2)
        expected[0, 0, where[0], where[1]] = 2.0
        assert torch.equal(out, expected)


def test_switches_adapt_after_the_first_cycle():
    """From the second generative pass on the masks follow the previous top-down signal, not only the forward."""
    net = _net(steps=3).eval()
    out = net(torch.rand(2, 1, 12, 12))
    hidden = out.state["hidden"]
    assert len(hidden) == net.feedback._bound.num_switches == 4 and all(h is not None for h in hidden)


# --------------------------------------------------------------------------------------------------- the loop


def test_update_rule_at_ind():
    """f_1 = f_0 + eta (r - f_0): with eta = 1 the stage reads the reconstruction, at the scale of f_0."""
    torch.manual_seed(1)
    x = torch.rand(3, 1, 12, 12)
    tops = {}
    for eta in (1.0, 0.25):
        net = _net(steps=2, ind=1, eta=eta, ada_above=False).eval()
        state = net.feedback.init_state(x)
        with torch.no_grad():
            h = net.backbone.stem(x)
            feats = []
            for stage in net.backbone.stages:
                h = stage(h)
                feats.append(h)
            td, state, aux = net.feedback(feats, net.backbone.head(h), state)
        assert td[0] is None and td[2] is None and set(aux) == {"recon"}
        tops[eta] = (td[1], feats[0])
    r, f0 = tops[1.0]
    torch.testing.assert_close(rms(r), rms(f0))
    torch.testing.assert_close(tops[0.25][0], f0 + 0.25 * (r - f0))
    # the stage reads the update (replace), the bottom-up input is not added again
    assert torch.equal(net.feedback.combine(1, torch.zeros_like(f0), r), r)


def test_ada_above_mixes_and_masks_the_higher_stage_inputs():
    fb = _net(steps=2, ind=0).feedback
    h, r = torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[1.0, -1.0, -20.0]])
    x = h + 0.1 * (r - h)  # [1.9, -0.1, -1.1]: signs agree with r on all three units
    torch.testing.assert_close(fb.combine(1, h, r), x)
    r = torch.tensor([[1.0, 1.0, -1.0]])
    x = h + 0.1 * (r - h)  # [1.9, 0.1, 0.8]: the last unit disagrees with its prediction
    torch.testing.assert_close(fb.combine(1, h, r), torch.tensor([[1.9, 0.1, 0.0]]))
    assert fb.combine(2, h, None) is h


def test_losses_every_cycle_and_readouts():
    net = _net(steps=4)
    out = net(torch.rand(2, 1, 12, 12))
    assert len(out.state["recon_mse"]) == 3 and all(e.shape == (2,) for e in out.state["recon_mse"])
    assert out.aux_losses["recon"].dim() == 0 and out.aux_losses["recon"] > 0
    mean = FeedbackNet(net.backbone, net.feedback, steps=4, readout="mean").eval()(torch.rand(2, 1, 12, 12))
    torch.testing.assert_close(mean.logits, torch.stack(mean.per_step).mean(0))


def _manual_loop(net, x):
    """FeedbackNet's loop written out, one step at a time (a generator yielding after every step)."""
    fb, bb = net.feedback, net.backbone
    state = fb.init_state(x)
    stem = bb.stem(x)
    topdown = [None] * len(bb.stages)
    for t in range(net.steps):
        h, feats = stem, []
        for i, stage in enumerate(bb.stages):
            h = stage(fb.combine(i, h, topdown[i]))
            feats.append(h)
        logits = bb.head(h)
        yield logits
        if t < net.steps - 1:
            topdown, state, _ = fb(feats, logits, state)


def test_no_state_leaks_and_interleaved_batches_equal_separate_ones():
    net = _net(steps=4).eval()
    a, b = torch.rand(3, 1, 12, 12), torch.rand(5, 1, 12, 12)
    with torch.no_grad():
        alone_a, alone_b = net(a).per_step, net(b).per_step
        assert all(torch.equal(p, q) for p, q in zip(net(a).per_step, alone_a))  # after b: no leak
        ga, gb = _manual_loop(net, a), _manual_loop(net, b)
        for t in range(4):  # a0 b0 a1 b1 ...: each batch's state travels with it, not on the modules
            torch.testing.assert_close(next(ga), alone_a[t])
            torch.testing.assert_close(next(gb), alone_b[t])
        torch.testing.assert_close(net(a[:1]).logits, net(a).logits[:1], rtol=1e-5, atol=1e-6)  # per sample


# --------------------------------------------------------------------------------------------------- binding, errors


def test_binding_and_errors():
    backbone = Net()
    shapes = probe_shapes(backbone, (1, 12, 12))
    fb = GenerativeFeedback(shapes=shapes)
    with pytest.raises(RuntimeError, match="not bound to a backbone"):
        fb([torch.zeros(1, 8, 6, 6)] * 3, torch.zeros(1, 10), fb.init_state(torch.zeros(1, 1, 12, 12)))
    net = FeedbackNet(backbone, fb, steps=2)  # attaching binds
    assert fb._bound.backbone is backbone and net(torch.rand(1, 1, 12, 12)).logits.shape == (1, 10)
    assert "generative" in feedback.list_feedback()
    with pytest.raises(ValueError, match=r"ind must be a stage index in 0..2"):
        GenerativeFeedback(shapes=shapes, ind=3)
    with pytest.raises(ValueError, match="eta"):
        GenerativeFeedback(shapes=shapes, eta=0.0)


class Hidden(nn.Module):
    """A module whose forward hides a ReLU from the generative pass."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)) + nn.functional.avg_pool2d(x, 2)


def test_opaque_modules_hiding_switches_warn_or_raise():
    backbone = Net()
    backbone.stages[1] = Hidden()
    shapes = probe_shapes(backbone, (1, 12, 12))
    with pytest.warns(UserWarning, match=r"stages.1 \(Hidden, holds ReLU\)"):
        fb = GenerativeFeedback(shapes=shapes, backbone=backbone)
    with pytest.raises(ValueError, match="Hidden"):
        GenerativeFeedback(shapes=shapes, backbone=backbone, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # below ind the stages are never walked: nothing to warn about
        GenerativeFeedback(shapes=shapes, backbone=backbone, ind=2)
    net = FeedbackNet(backbone, fb, steps=3)  # still runs: the opaque stage is transposed by its exact VJP
    out = net(torch.rand(2, 1, 12, 12))
    (out.logits.sum() + out.aux_losses["recon"]).backward()
    assert backbone.stages[1].conv.weight.grad.abs().sum() > 0


def test_register_block_rejects_duplicates():
    from timm.models.resnet import BasicBlock

    from feedback.generative import register_block

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FeedbackNet(baselines.create_model("resnet18_small", channels=(8, 8, 8, 8)), "generative",
                    input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="already registered"):
        register_block(BasicBlock, branch=("conv1",))


def test_cost_reports_no_added_parameters_and_the_extra_compute():
    size = (1, 12, 12)
    c1 = feedback.feedback_cost(_net(steps=1), size)
    c2 = feedback.feedback_cost(_net(steps=2), size)
    assert c1["feedback_params"] == c2["feedback_params"] == 0
    # step 2 costs a forward, the recomputation of the switches and the transposed pass: more than 2 forwards
    assert c2["flops"] > 2 * c2["backbone_flops"] and c1["flops"] == c1["backbone_flops"]
