"""Helpers shared by the per-kind test files (test_rectified, test_cognitive, test_tdm).

Fast tier: cheap models covering every stage structure a kind meets: maps with tanh, ReLU and max-pool stages and a
vector stage (LeNets), residual stacks with batch norm (ResNet), vector-only stages (MLP), a single stage
(perceptron), two images stacked along the batch (Siamese), token stages (ViT: skipped, with the reason).
Slow tier: every other registered model, at the registry's small configuration.
"""

import torch
import torch.nn as nn

import baselines
from feedback import FeedbackNet

FAST_NAMES = ("lenet5", "lenet5_relu", "resnet18_small", "mlp", "perceptron", "siamese", "vit_tiny_patch4_32")


def models():
    """(fast, slow): lists of (name, small-config kwargs, small input size) from the registry."""
    rows = []
    for name in baselines.list_models(staged=True):
        meta = baselines.model_info(name)
        rows.append((name, dict(meta.get("small") or {}), meta.get("small_input_size")))
    return [r for r in rows if r[0] in FAST_NAMES], [r for r in rows if r[0] not in FAST_NAMES]


def build(name, kw, side):
    """The model ``name`` with kwargs ``kw`` and its input size (C, side, side), or its default input size."""
    torch.manual_seed(0)
    model = baselines.create_model(name, **{"num_classes": 10, **kw})
    for p in model.parameters():  # zero-initialised weights (the perceptron's) would block every gradient
        if p.dim() > 1 and not p.detach().any():
            nn.init.normal_(p, std=0.1)
    c, h, w = model.input_size
    return model, (c, h, w) if side is None else (c, side, side)


def check_cuda_float32_and_bf16(kind, kwargs, name):
    """On CUDA: steps=1 is the backbone, the CPU and CUDA loops agree, gradients reach every parameter, bf16 runs."""
    model, size = build(name, {"channels": (8, 16, 16, 32)} if name == "resnet18_small" else {}, None)
    net = FeedbackNet(model, kind, steps=3, input_size=size, feedback_kwargs=kwargs).eval()
    x = torch.randn(4, *size)
    cpu = net(x).logits
    net = net.cuda()
    xc = x.cuda()
    assert torch.equal(FeedbackNet(model, net.feedback, steps=1).eval()(xc).logits, model(xc))
    torch.testing.assert_close(net(xc).logits.cpu(), cpu, rtol=1e-3, atol=1e-3)
    net.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(xc)
    out.logits.float().square().mean().backward()
    assert torch.isfinite(out.logits.float()).all()
    for pname, p in net.feedback.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def check_kind_contract(model, size, fb):
    """The kind ``fb`` on ``model``: steps=1 is the backbone, gradients reach its parameters, no leak across
    batches, per-sample results, bf16 autocast runs."""
    x = torch.randn(2, *size)
    ref = model.eval()(x)
    assert torch.equal(FeedbackNet(model, fb, steps=1).eval()(x).logits, ref)
    net = FeedbackNet(model, fb, steps=2).train()
    net(x).logits.square().mean().backward()
    for pname, p in fb.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    net.eval()
    first = net(x).logits
    net(torch.randn(2, *size))
    assert torch.equal(net(x).logits, first)  # nothing leaks between batches
    torch.testing.assert_close(net(x[:1]).logits, first[:1], rtol=1e-4, atol=1e-5)  # per sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lg = net.train()(x).logits
    assert torch.isfinite(lg.float()).all()
    lg.float().sum().backward()
