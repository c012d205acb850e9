"""CUDA: every feedback kind on every small backbone, in float32 and bf16 autocast (skipped without CUDA)."""

import pytest
import torch

import baselines
from feedback import FeedbackNet, list_feedback

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SMALL = {"lenet5": {}, "lenet5_relu": {}, "resnet18_small": {"channels": (16, 32, 64, 128)}}


def _net(name, kind, steps):
    torch.manual_seed(0)
    backbone = baselines.create_model(name, num_classes=10, **SMALL[name])
    size = backbone.input_size
    return FeedbackNet(backbone, kind, steps=steps, input_size=size).cuda(), size


@pytest.mark.parametrize("kind", list_feedback())
@pytest.mark.parametrize("name", list(SMALL))
def test_cuda_steps1_identity_and_train_step(kind, name):
    net, size = _net(name, kind, 1)
    net.eval()
    x = torch.randn(4, *size, device="cuda")
    assert torch.equal(net(x).logits, net.backbone(x))
    net3, _ = _net(name, kind, 3)
    opt = torch.optim.AdamW(net3.parameters(), lr=1e-3)
    for dtype in (None, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net3(x)
            loss = out.logits.float().logsumexp(-1).mean() + sum(out.aux_losses.values(), torch.zeros((), device="cuda"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        if dtype is not None:
            assert out.logits.dtype == torch.bfloat16 or out.logits.dtype == torch.float32


def test_cuda_and_cpu_agree():
    net, size = _net("resnet18_small", "deconv", 2)
    net.eval()
    x = torch.randn(2, *size)
    gpu = net(x.cuda()).logits.cpu()
    cpu = net.cpu()(x).logits
    torch.testing.assert_close(gpu, cpu, rtol=1e-2, atol=1e-2)  # TF32 convolutions on Ampere+
