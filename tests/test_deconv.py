"""``deconv`` feedback: targets previous/all, combine add/gain/gate, geometry, and the registry-driven backbone matrix.

The matrix helper :func:`registry_cases` is shared with test_generative.py: every registered baseline at its
registry ``small`` configuration; one model per family (the smallest) in the fast tier, the rest marked slow.
"""

import functools
import warnings

import pytest
import torch
import torch.nn as nn

import baselines
import feedback
from feedback import FeedbackNet, StageShapes, create_feedback
from feedback.deconv import DeconvFeedback

# --------------------------------------------------------------------------------------------------- registry matrix


def _info(name):
    info = baselines.model_info(name) if hasattr(baselines, "model_info") else {}
    return {"family": info.get("family") or name, "num_params": info.get("num_params") or 0,
            "small": info.get("small") or {}, "size": info.get("small_input_size"), "slow": bool(info.get("slow"))}


@functools.lru_cache(maxsize=1)
def _cases():
    infos = {n: _info(n) for n in baselines.list_models(staged=True)}
    smallest = {}
    for n, i in sorted(infos.items(), key=lambda kv: kv[1]["num_params"]):
        smallest.setdefault(i["family"], n)
    fast = set(smallest.values()) | ({"lenet5", "lenet5_relu", "resnet18_small"} & set(infos))
    return tuple((n, n in fast and not i["slow"]) for n, i in infos.items())


def registry_cases():
    """pytest params over every registered baseline: fast for the smallest model of each family, slow otherwise."""
    return [pytest.param(n, marks=() if fast else pytest.mark.slow) for n, fast in _cases()]


def tiny_backbone(name):
    """The registry's small configuration of ``name`` (10 classes unless it sets them) and its input size."""
    torch.manual_seed(0)
    info = _info(name)
    model = baselines.create_model(name, **({"num_classes": 10} | info["small"]))
    side = info["size"] or model.input_size[-1]
    return model, (model.input_size[0], side, side)


def check_kind_on_backbone(kind, name, kwargs):
    """steps=1 is the backbone exactly; 2 steps train (gradients to every feedback parameter) and run in bf16."""
    backbone, size = tiny_backbone(name)
    x = torch.rand(2, *size)
    backbone.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generative: opaque modules hiding ReLUs are reported by a warning
        net1 = FeedbackNet(backbone, kind, steps=1, input_size=size, feedback_kwargs=kwargs).eval()
        net2 = FeedbackNet(backbone, kind, steps=2, input_size=size, feedback_kwargs=kwargs)
    with torch.no_grad():
        assert torch.equal(net1(x).logits, backbone(x))
    net2.train()
    out = net2(x)
    loss = out.logits.float().square().mean() + sum(out.aux_losses.values(), torch.tensor(0.0))
    loss.backward()
    for pname, p in net2.feedback.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{kind} on {name}: {pname} got no gradient"
    assert len(out.per_step) == 2
    # the feedback acts (unless deconv has one stage: nothing to send; or the backbone is zero-initialised)
    if (kind != "deconv" or len(backbone.stages) > 1) and out.per_step[0].abs().sum() > 0:
        assert not torch.equal(out.per_step[0], out.per_step[1])
    net2.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net2(x)
    assert out.logits.shape == (2, backbone.num_classes) and torch.isfinite(out.logits.float()).all()
    return net2


@pytest.mark.parametrize("name", registry_cases())
def test_deconv_on_every_registered_backbone(name):
    check_kind_on_backbone("deconv", name, {"targets": "all", "combine": "gate", "zero_init": False})


# --------------------------------------------------------------------------------------------------- the kind

SHAPES = StageShapes(inputs=((3, 16, 16), (8, 8, 8), (16, 4, 4)), outputs=((8, 8, 8), (16, 4, 4), (32, 2, 2)),
                     num_classes=10)


def _feats(b=2):
    return [torch.randn(b, *s) for s in SHAPES.outputs]


def test_default_is_previous_add_with_the_original_parameter_names():
    fb = create_feedback("deconv", shapes=SHAPES)
    assert fb.mode == "add" and fb.targets == "previous"
    # checkpoints of the original kind load: the same keys, nothing added
    assert sorted(fb.state_dict()) == ["maps.0.op.bias", "maps.0.op.weight", "maps.1.op.bias", "maps.1.op.weight"]


def test_targets_all_sums_every_higher_stage():
    torch.manual_seed(0)
    fb = DeconvFeedback(shapes=SHAPES, targets="all", zero_init=False)
    assert sorted(fb.long_maps) == ["2_to_0"]
    feats = _feats()
    td, state, aux = fb(feats, torch.randn(2, 10), "s")
    assert state == "s" and aux == {} and td[2] is None
    torch.testing.assert_close(td[0], fb.maps[0](feats[1]) + fb.long_maps["2_to_0"](feats[2]))
    torch.testing.assert_close(td[1], fb.maps[1](feats[2]))
    assert [tuple(t.shape[1:]) for t in td[:2]] == list(SHAPES.inputs[:2])
    n = 6  # maps for L stages: L (L - 1) / 2 with "all", L - 1 with "previous"
    shapes = StageShapes(inputs=((4, 32, 32),) * n, outputs=((4, 32, 32),) * n, num_classes=10)
    assert len(DeconvFeedback(shapes=shapes, targets="all").long_maps) + n - 1 == n * (n - 1) // 2


def test_combine_modes_follow_their_equations():
    torch.manual_seed(0)
    x, r = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    assert torch.equal(DeconvFeedback(shapes=SHAPES).combine(0, x, r), x + r)
    assert torch.equal(DeconvFeedback(shapes=SHAPES, combine="gain").combine(0, x, r), x * (1 + torch.tanh(r)))
    fb = DeconvFeedback(shapes=SHAPES, combine="gate")
    g = fb.gates[0]
    for p in (g.u, g.v, g.b):
        nn.init.normal_(p)
    a = torch.sigmoid(g.u.view(1, 3, 1, 1) * x + g.v.view(1, 3, 1, 1) * r + g.b.view(1, 3, 1, 1))
    torch.testing.assert_close(fb.combine(0, x, r), x + a * r)
    # the gate reads the bottom-up input: the same top-down signal enters differently for another x
    y = x + 1.0
    assert not torch.allclose(fb.combine(0, y, r) - y, fb.combine(0, x, r) - x)
    for mode in ("add", "gain", "gate"):  # no signal, or a zero signal, leaves the input alone
        m = DeconvFeedback(shapes=SHAPES, combine=mode)
        assert m.combine(1, x, None) is x and torch.equal(m.combine(0, x, torch.zeros_like(x)), x)


@pytest.mark.parametrize("combine", ["add", "gain", "gate"])
def test_zero_init_is_the_backbone_at_every_step(combine):
    from test_feedback import Toy

    torch.manual_seed(0)
    net = FeedbackNet(Toy(), "deconv", steps=3, feedback_kwargs={"combine": combine, "targets": "all"}).eval()
    out = net(torch.randn(2, 1, 12, 12))
    assert all(torch.equal(out.per_step[0], lg) for lg in out.per_step[1:])


def test_tokens_and_vectors():
    shapes = StageShapes(inputs=((5, 8), (5, 8), (12,)), outputs=((5, 8), (5, 6), (4,)), num_classes=3)
    fb = DeconvFeedback(shapes=shapes, targets="all", combine="gate", zero_init=False)
    td, _, _ = fb([torch.randn(2, 5, 8), torch.randn(2, 5, 6), torch.randn(2, 4)], torch.randn(2, 3), None)
    assert tuple(td[0].shape) == (2, 5, 8) and tuple(td[1].shape) == (2, 5, 8) and td[2] is None
    x = torch.randn(2, 5, 8)
    assert fb.combine(0, x, td[0]).shape == x.shape and fb.gates[0].u.shape == (8,)
    assert torch.equal(td[1][:, 0], td[1][:, 4])  # a vector source reaches every token alike
    with pytest.raises(ValueError, match="tokens"):  # a token target needs tokens of the same count
        DeconvFeedback(shapes=StageShapes(inputs=((5, 8), (3, 8)), outputs=((3, 8), (3, 8)), num_classes=3))


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="targets 'next'; choose from: previous, all"):
        DeconvFeedback(shapes=SHAPES, targets="next")
    with pytest.raises(ValueError, match="combine mode 'mul'; choose from: add, gain, gate"):
        DeconvFeedback(shapes=SHAPES, combine="mul")


def test_cost_reports_the_added_parameters_and_flops():
    from test_feedback import Toy

    size = (1, 12, 12)
    prev = feedback.feedback_cost(FeedbackNet(Toy(), "deconv", steps=3, input_size=size), size)
    every = feedback.feedback_cost(
        FeedbackNet(Toy(), "deconv", steps=3, input_size=size, feedback_kwargs={"targets": "all", "combine": "gate"}),
        size)
    net = FeedbackNet(Toy(), "deconv", steps=3, input_size=size)
    assert prev["feedback_params"] == sum(p.numel() for p in net.feedback.parameters()) > 0
    # Toy has 2 stages: "all" adds no long map, "gate" adds u, v, b for stage 0 (4 channels)
    assert every["feedback_params"] == prev["feedback_params"] + 3 * 4
    assert prev["flops"] > 2 * prev["backbone_flops"]
