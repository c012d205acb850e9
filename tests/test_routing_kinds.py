"""Routing feedback kinds for Staged backbones: ``brims``, ``layer_attention``, ``latents``.

The shared per-kind contract (tests/_kinds.py) on every fast backbone, then each kind's own invariants: top-k selection
and the null row (brims), switchable routes and weights summing to 1 (layer_attention), weights shared across steps
(latents), plus the attention helpers, cost and errors.
"""

import copy
import doctest
import importlib

import pytest
import torch
import torch.nn as nn
from _kinds import build, check_cuda_float32_and_bf16, check_kind_contract, models

import feedback
from feedback import FeedbackNet, feedback_class, feedback_cost, probe_shapes, staged_forward
from feedback._attention import GroupLinear, Resample, fourier_positions, from_tokens, pool, to_tokens
from feedback.brims_cnn import BRIMsFeedback, module_groups
from feedback.latents import LatentsFeedback
from feedback.layer_attention import LayerAttentionFeedback

FAST, SLOW = models()
KINDS = {
    "brims": {"num_modules": 4, "top_k": 2},
    "layer_attention": {},
    "layer_attention_spatial": {"weights": "spatial"},
    "latents": {"num_latents": 4, "dim": 16},
}


def _kind(name):
    return "layer_attention" if name.startswith("layer_attention") else name


def _check(name, model, size, kw):
    shapes = probe_shapes(model, size)
    kind = _kind(name)
    if kind != "latents" and shapes.num_stages < 2:
        pytest.skip("a single stage: no stage above another to route from")
    if kind == "latents" and sum(1 if len(s) == 1 else 2 for s in shapes.outputs) < 2:
        pytest.skip("one token to read: a softmax over one key is constant, so the read's keys get no gradient")
    check_kind_contract(model, size, feedback_class(kind)(shapes=shapes, **kw))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name,kw,side", FAST)
def test_every_fast_baseline(kind, name, kw, side):
    _check(kind, *build(name, kw, side), KINDS[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name,kw,side", SLOW)
def test_every_other_baseline(kind, name, kw, side):
    _check(kind, *build(name, kw, side), KINDS[kind])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["brims", "layer_attention", "latents"])
def test_cuda(kind):
    check_cuda_float32_and_bf16(kind, {}, "lenet5_relu")


def test_registered_and_doctests():
    assert {"brims", "layer_attention", "latents"} <= set(feedback.list_feedback())
    for module in ("_attention", "brims_cnn", "layer_attention", "latents"):
        result = doctest.testmod(importlib.import_module(f"feedback.{module}"), optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module


# ------------------------------------------------------------------------------------------- helpers

def test_tokens_pool_and_resample():
    x = torch.randn(2, 5, 3, 4)
    t = to_tokens(x)
    assert t.shape == (2, 12, 5) and torch.equal(from_tokens(t, (5, 3, 4)), x)
    assert torch.equal(from_tokens(to_tokens(x[:, :, 0, 0]), (5,)), x[:, :, 0, 0])
    torch.testing.assert_close(pool(x), x.mean((2, 3)))
    r = Resample((5, 3, 4), (7, 6, 8))
    y = r(x)
    assert y.shape == (2, 7, 6, 8)
    z = torch.nn.functional.conv2d(x, r.proj.weight[:, :, None, None], r.proj.bias)
    torch.testing.assert_close(y[:, :, ::2, ::2], z)  # nearest upsampling of the projection
    assert Resample((5, 6, 6), (3, 3, 3))(torch.randn(2, 5, 6, 6)).shape == (2, 3, 3, 3)
    assert Resample((5, 6, 6), (3,))(torch.randn(2, 5, 6, 6)).shape == (2, 3)
    assert Resample((4,), (6, 2, 2))(torch.randn(2, 4)).shape == (2, 6, 2, 2)
    assert Resample((10, 4), (5, 6))(torch.randn(2, 10, 4)).shape == (2, 5, 6)
    assert Resample((4,), (5, 6))(torch.randn(2, 4)).shape == (2, 5, 6)
    with pytest.raises(ValueError, match="map and tokens"):
        Resample((4, 2, 2), (4, 8))
    g = GroupLinear(3, 4, 2)
    u = torch.randn(5, 3, 4)
    torch.testing.assert_close(g(u)[:, 1], u[:, 1] @ g.weight[1] + g.bias[1])
    pos = fourier_positions(3, 5, bands=2)
    assert pos.shape == (15, 10) and pos[:, 4].unique().numel() == 3 and pos[:, 9].unique().numel() == 5


# ------------------------------------------------------------------------------------------- brims

SHAPES = feedback.StageShapes(
    inputs=((8, 16, 16), (12, 8, 8), (16, 4, 4)),
    outputs=((12, 8, 8), (16, 4, 4), (20,)),
    num_classes=5,
)


def test_brims_groups_topk_and_inactive_pass_through():
    torch.manual_seed(0)
    fb = BRIMsFeedback(shapes=SHAPES, num_modules=4, top_k=2)
    assert [r.groups for r in fb.routers] == [4, 4] and module_groups(6, 4) == 3 and module_groups(1, 4) == 1
    for p in fb.parameters():
        nn.init.normal_(p, std=0.5)
    h = torch.randn(6, 8, 16, 16) + 2 * torch.randn(6, 8, 1, 1)  # per-sample channel means: per-sample selection
    r = torch.randn(6, 8, 16, 16) + 2 * torch.randn(6, 8, 1, 1)
    out, attn, active = fb.attend(0, h, r)
    assert attn.shape == (6, 4, 3) and active.shape == (6, 4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(6, 4))
    assert (active.sum(1) == 2).all()  # exactly top_k groups per sample
    for b in range(6):  # the active groups are those with the least attention to the null row
        null = attn[b, :, 0]
        assert set(active[b].nonzero().flatten().tolist()) == set(null.argsort()[:2].tolist())
        for k in range(4):
            sl = slice(2 * k, 2 * k + 2)
            if active[b, k]:
                torch.testing.assert_close(out[b, sl], attn[b, k, 1] * h[b, sl] + attn[b, k, 2] * r[b, sl])
            else:
                assert torch.equal(out[b, sl], h[b, sl])  # inactive groups: the bottom-up input, unchanged
    assert len({tuple(a.tolist()) for a in active}) > 1  # and with random weights it does


def test_brims_null_row():
    """A dominant null score: active groups read (almost) nothing; a dominant bottom-up score: identity."""
    fb = BRIMsFeedback(shapes=SHAPES, num_modules=4, top_k=4)
    h, r = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        fb.routers[0].row_bias.copy_(torch.tensor([30.0, 0.0, 0.0]))
    out, attn, active = fb.attend(0, h, r)
    assert active.all() and (attn[..., 0] > 0.999).all() and out.abs().max() < 1e-6 * h.abs().max() * 1e3
    with torch.no_grad():
        fb.routers[0].row_bias.copy_(torch.tensor([0.0, 30.0, 0.0]))
    torch.testing.assert_close(fb.attend(0, h, r)[0], h)
    with torch.no_grad():
        fb.routers[0].row_bias.copy_(torch.tensor([0.0, 0.0, 30.0]))
    torch.testing.assert_close(fb.attend(0, h, r)[0], r)  # listens to the top-down row alone
    assert fb.combine(0, h, None) is h


def test_brims_loop_top_stage_and_vectors():
    shapes = feedback.StageShapes(inputs=((6,), (8,)), outputs=((8,), (4,)), num_classes=4)
    fb = BRIMsFeedback(shapes=shapes, num_modules=3, top_k=1)
    assert fb.routers[0].groups == 3 and fb.routers[0].top_k == 1
    td, state, aux = fb([torch.randn(2, 8), torch.randn(2, 4)], None, "s")
    assert td[1] is None and td[0].shape == (2, 6) and state == "s" and aux == {}


# ------------------------------------------------------------------------------------------- layer attention

@pytest.mark.parametrize("routes", [("next",), ("self",), ("next", "self"), ("next", "prev"), ("self", "prev"),
                                    ("next", "self", "prev")])
@pytest.mark.parametrize("weights", ["stage", "spatial"])
def test_layer_attention_routes_switch_and_weights_sum_to_one(routes, weights):
    torch.manual_seed(0)
    fb = LayerAttentionFeedback(shapes=SHAPES, routes=routes, weights=weights)
    with torch.no_grad():
        fb.logits.normal_()
    top = tuple(r for r in ("self", "prev") if r in routes) if "self" in routes else ()
    assert fb.stage_routes == (fb.routes, fb.routes, top)
    assert {k.split("_")[0] for k in fb.maps} == set(routes) - {"prev"}
    feats = [torch.randn(3, *s) for s in SHAPES.outputs]
    td, _, _ = fb(feats, None, None)
    h = torch.randn(3, 12, 8, 8)
    n_td = len([r for r in routes if r != "prev"])
    assert td[1].shape == (3, n_td, 12, 8, 8)
    values = list(td[1].unbind(1)) + ([h] if "prev" in routes else [])
    w = fb.route_weights(1, values)
    total = w.sum(0) if weights == "stage" else w.sum(1)
    torch.testing.assert_close(total, torch.ones_like(total))
    if weights == "stage":
        expect = sum(wk * v for wk, v in zip(w, values))
        torch.testing.assert_close(fb.combine(1, h, td[1]), expect)
        # a route switched off contributes nothing: changing its source leaves the result unchanged
        for r, j in (("self", 1), ("next", 2)):
            if r not in routes:
                other = list(feats)
                other[j] = torch.randn_like(other[j])
                assert torch.equal(fb.combine(1, h, fb(other, None, None)[0][1]), fb.combine(1, h, td[1]))
        if "prev" not in routes:  # without the bottom-up route the input does not reach the combination
            assert torch.equal(fb.combine(1, torch.randn_like(h), td[1]), fb.combine(1, h, td[1]))
    else:
        assert w.shape == (3, len(values), 8, 8)


def _lenet_like():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.head = nn.Identity(), nn.Linear(20, 5)
            self.stages = nn.ModuleList([
                nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1), nn.ReLU()),
                nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 20)),
            ])

        def forward(self, x):
            return staged_forward(self, x)

    torch.manual_seed(0)
    return Net()


def test_layer_attention_in_the_loop_each_route_matters():
    net = _lenet_like()
    x = torch.randn(2, 8, 16, 16)
    outs = {}
    for routes in (("next",), ("self",), ("next", "self", "prev")):
        torch.manual_seed(1)
        outs[routes] = FeedbackNet(net, "layer_attention", steps=2, input_size=(8, 16, 16),
                                   feedback_kwargs={"routes": routes})(x)
        assert torch.equal(outs[routes].per_step[0], net(x))
    assert not torch.allclose(outs[("next",)].logits, outs[("self",)].logits)


# ------------------------------------------------------------------------------------------- latents

def test_latents_weights_shared_across_steps():
    net = _lenet_like()
    counts = []
    for steps in (1, 2, 5):
        fnet = FeedbackNet(copy.deepcopy(net), "latents", steps=steps, input_size=(8, 16, 16))
        counts.append(sum(p.numel() for p in fnet.feedback.parameters()))
    assert len(set(counts)) == 1
    torch.manual_seed(0)
    fb = LatentsFeedback(shapes=probe_shapes(net, (8, 16, 16)), num_latents=4, dim=16)
    fnet = FeedbackNet(net, fb, steps=3)
    x = torch.randn(2, 8, 16, 16)
    out = fnet(x)
    assert out.state.shape == (2, 4, 16)
    # the loop by hand: the same read/process/write modules at every step
    feats, h = [], x
    for stage in net.stages:
        h = stage(h)
        feats.append(h)
    z = fb.read_and_process(feats, None)
    h, feats2 = x, []
    for i, stage in enumerate(net.stages):
        h = stage(h + fb.write(i, h, z))
        feats2.append(h)
    torch.testing.assert_close(out.per_step[1], net.head(h))
    torch.testing.assert_close(out.state, fb.read_and_process(feats2, z))


def test_latents_on_vectors_and_tokens():
    shapes = feedback.StageShapes(inputs=((9, 6), (9, 6)), outputs=((9, 6), (7,)), num_classes=3)
    fb = LatentsFeedback(shapes=shapes, num_latents=3, dim=8)
    td, z, _ = fb([torch.randn(2, 9, 6), torch.randn(2, 7)], None, None)
    assert z.shape == (2, 3, 8) and all(t is z for t in td)
    assert fb.combine(0, torch.randn(2, 9, 6), z).shape == (2, 9, 6)


# ------------------------------------------------------------------------------------------- cost and errors

def test_cost_reported():
    net = _lenet_like()
    for kind in ("brims", "layer_attention", "latents"):
        c = feedback_cost(FeedbackNet(copy.deepcopy(net), kind, steps=2, input_size=(8, 16, 16)), (8, 16, 16))
        fb = feedback_class(kind)(shapes=probe_shapes(net, (8, 16, 16)))
        assert c["feedback_params"] == sum(p.numel() for p in fb.parameters()) > 0
        assert c["flops"] > 2 * c["backbone_flops"], kind


def test_errors():
    one = feedback.StageShapes(inputs=((3, 8, 8),), outputs=((4, 4, 4),), num_classes=2)
    with pytest.raises(ValueError, match="at least 2 stages"):
        BRIMsFeedback(shapes=one)
    with pytest.raises(ValueError, match="top_k"):
        BRIMsFeedback(shapes=SHAPES, num_modules=2, top_k=3)
    with pytest.raises(ValueError, match="num_modules"):
        BRIMsFeedback(shapes=SHAPES, num_modules=0)
    with pytest.raises(ValueError, match="route"):
        LayerAttentionFeedback(shapes=SHAPES, routes=("up",))
    with pytest.raises(ValueError, match="'next' or 'self'"):
        LayerAttentionFeedback(shapes=SHAPES, routes=("prev",))
    with pytest.raises(ValueError, match="weights"):
        LayerAttentionFeedback(shapes=SHAPES, weights="global")
    with pytest.raises(ValueError, match="no stage a signal"):
        LayerAttentionFeedback(shapes=one, routes=("next",))
    with pytest.raises(ValueError, match="heads"):
        LatentsFeedback(shapes=SHAPES, dim=10, heads=3)
    with pytest.raises(ValueError, match="num_latents"):
        LatentsFeedback(shapes=SHAPES, num_latents=0)
