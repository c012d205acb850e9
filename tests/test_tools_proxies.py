"""Zero-cost proxies (experiments.tools.proxies): invariances, determinism, scaling, no side effects."""

import doctest
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.tools import proxies
from experiments.tools.proxies import PROXIES, compute_proxies, grad_norm, grasp, naswot, snip, synflow


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16),
                         nn.ReLU(), nn.Linear(16, 5))


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_synflow_is_data_independent():
    net = _net()
    x1, _ = _batch(1)
    x2, _ = _batch(2, n=3)
    assert synflow(net, (1, 8, 8)) == synflow(net, tuple(x1.shape[1:]))
    s1 = compute_proxies(net, x1, torch.zeros(8, dtype=torch.long), names=("synflow",))["synflow"]
    s2 = compute_proxies(net, x2 * 100, torch.ones(3, dtype=torch.long), names=("synflow",))["synflow"]
    assert s1 == s2 > 0


def test_proxies_are_deterministic_under_a_fixed_seed_and_leave_the_model_alone():
    x, y = _batch()
    net = _net(seed=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = compute_proxies(net, x, y, seed=0)
    b = compute_proxies(_net(seed=3), x, y, seed=0)
    assert set(a) == set(PROXIES)
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k], k
        assert math.isfinite(a[k]), k
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats and weights untouched
    assert all(p.grad is None for p in net.parameters())
    assert a["params"] == sum(p.numel() for p in net.parameters())


def test_gradient_proxies_scale_with_the_loss():
    x, y = _batch()
    net = _net()
    c = 3.0
    scaled = lambda logits, t: c * F.cross_entropy(logits, t)  # noqa: E731
    assert grad_norm(net, x, y, loss_fn=scaled) == pytest.approx(c * grad_norm(net, x, y), rel=1e-5)
    assert snip(net, x, y, loss_fn=scaled) == pytest.approx(c * snip(net, x, y), rel=1e-5)
    # GraSP is H g: both the Hessian and the gradient scale, so c^2
    assert grasp(net, x, y, loss_fn=scaled) == pytest.approx(c * c * grasp(net, x, y), rel=1e-4)


def test_grasp_matches_an_explicit_hessian_on_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2, bias=False)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    w = lin.weight.detach().clone()

    def loss(flat):
        return F.cross_entropy(x @ flat.reshape(2, 3).T, y)

    g = torch.autograd.functional.jacobian(loss, w.flatten())
    h = torch.autograd.functional.hessian(loss, w.flatten())
    assert grasp(lin, x, y) == pytest.approx(float(-(w.flatten() * (h @ g)).sum()), rel=1e-4, abs=1e-7)


def test_naswot_needs_relu_modules_and_unknown_names_raise():
    x, y = _batch()
    assert math.isnan(naswot(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), x))
    with pytest.raises(ValueError, match="unknown proxy 'nope'; choose from: grad_norm"):
        compute_proxies(_net(), x, y, names=("nope",))


def test_proxies_run_on_a_feedback_net():
    import baselines
    from feedback import FeedbackNet

    torch.manual_seed(0)
    net = FeedbackNet(baselines.create_model("lenet5_relu", num_classes=10, in_chans=1), "deconv", steps=2,
                      input_size=(1, 32, 32))
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    s = compute_proxies(net, x, y, names=("grad_norm", "fisher", "jacob_cov", "naswot"))
    assert all(math.isfinite(v) for v in s.values()) and s["grad_norm"] > 0


def test_docstring_examples_run():
    result = doctest.testmod(proxies, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
