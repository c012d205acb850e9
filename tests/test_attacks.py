"""Robustness evaluation (experiments/attacks.py) on a tiny trained feedback model: FGSM, PGD, SPSA, noise."""

import doctest

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments import attacks
from experiments.attacks import fgsm, first_pass, pgd, random_noise, robustness_report, spsa, through_loop
from experiments.data import create_dataset
from feedback import FeedbackNet
from feedback.core import staged_forward


class Tiny(nn.Module):
    """A small Staged conv net for 8x8 digits."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU()),
        ])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 2 * 2, 10))
        self.input_size = (1, 8, 8)


@pytest.fixture(scope="module")
def trained():
    """A deconv feedback net (3 steps) trained for a few seconds on scikit-learn's 8x8 digits; 256 test images."""
    torch.manual_seed(0)
    data = create_dataset("digits", seed=0, image_size=8)
    x, y = data.train.images, data.train.labels
    net = FeedbackNet(Tiny(), "deconv", steps=3, feedback_kwargs={"combine": "add"})
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for i in range(40):
        idx = torch.randint(0, len(x), (128,), generator=torch.Generator().manual_seed(i))
        out = net(x[idx])
        loss = torch.stack([F.cross_entropy(lg, y[idx]) for lg in out.per_step]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    net.eval()
    return net, data.test.images[:256], data.test.labels[:256]


def test_docstring_examples_run():
    result = doctest.testmod(attacks)
    assert result.failed == 0 and result.attempted > 0


def test_first_pass_is_the_backbone(trained):
    net, x, _ = trained
    with torch.no_grad():
        torch.testing.assert_close(first_pass(net)(x), staged_forward(net.backbone, x))
        torch.testing.assert_close(through_loop(net)(x), net(x).logits)
        assert not torch.equal(net(x).per_step[0], net(x).logits)  # the feedback changes the prediction


@pytest.mark.parametrize("attack", [fgsm, pgd, spsa, random_noise])
def test_eps_zero_is_identity_and_the_ball_and_clamp_hold(trained, attack):
    net, x, y = trained
    x = x[:32]
    y = y[:32]
    kw = {"iters": 2, "samples": 4} if attack is spsa else {}
    assert torch.equal(attack(through_loop(net), x, y, eps=0.0, loss_fn=F.cross_entropy, **kw), x)
    x_adv = attack(through_loop(net), x, y, eps=0.3, loss_fn=F.cross_entropy, **kw)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0  # the digits reach 0 and 1: the clamp is active
    assert not torch.equal(x_adv, x)
    with pytest.raises(ValueError, match="eps"):
        attack(through_loop(net), x, y, eps=-0.1, loss_fn=F.cross_entropy)


def test_attacks_are_deterministic_and_leave_parameter_gradients_alone(trained):
    net, x, y = trained
    a = pgd(through_loop(net), x[:16], y[:16], eps=0.1, loss_fn=F.cross_entropy, iters=3, seed=3)
    b = pgd(through_loop(net), x[:16], y[:16], eps=0.1, loss_fn=F.cross_entropy, iters=3, seed=3)
    assert torch.equal(a, b)
    assert all(p.grad is None for p in net.parameters())


def test_report_attacks_lower_accuracy_and_the_loop_attack_is_at_least_as_strong(trained):
    net, x, y = trained
    r = robustness_report(net, F.cross_entropy, x, y, eps=0.1, pgd_iters=10, spsa_iters=5, spsa_samples=8,
                          sigmas=(0.1, 0.5))
    assert list(r) == ["clean", "fgsm_loop", "fgsm_first", "pgd_loop", "pgd_first", "spsa_loop", "spsa_first",
                       "random", "noise0.1", "noise0.5"]
    assert r["clean"] > 0.8  # the model learned the digits
    for k in ("fgsm_loop", "fgsm_first", "pgd_loop", "pgd_first", "spsa_loop"):
        assert r[k] < r["clean"], k
    assert r["pgd_loop"] <= r["fgsm_loop"]  # the iterated attack is at least as strong as one step
    assert r["pgd_loop"] <= r["pgd_first"]  # end-to-end is at least as strong as attacking the first pass
    assert r["pgd_loop"] < r["random"]  # gradients beat a random point of the same ball: no gradient masking
    assert r["noise0.5"] < r["clean"]
    assert net.training is False


def test_report_rejects_bad_arguments(trained):
    net, x, y = trained
    with pytest.raises(ValueError, match="unknown attack"):
        robustness_report(net, F.cross_entropy, x, y, attacks=("cw",))
    with pytest.raises(ValueError, match="through"):
        robustness_report(net, F.cross_entropy, x, y, through=("middle",))


def test_multilabel_task_loss_and_metric():
    """The runner's task loss (multi-label soft-max cross-entropy) works as the attack objective, SPSA included."""
    from experiments.tasks import create_task

    torch.manual_seed(0)
    task = create_task("classify", multilabel=True)
    net = FeedbackNet(Tiny(), "deconv", steps=2, feedback_kwargs={"zero_init": False}).eval()
    x = torch.rand(6, 1, 8, 8)
    y = torch.zeros(6, 10)
    y[torch.arange(6), torch.arange(6)] = 1
    y[0, 7] = 1
    r = robustness_report(net, task.loss, x, y, correct_fn=lambda lg, t: task.correct(lg, t)["acc"], eps=0.05,
                          pgd_iters=2, spsa_iters=1, spsa_samples=2, sigmas=(0.1,))
    assert set(r) >= {"clean", "pgd_loop", "spsa_first", "noise0.1"} and all(0 <= v <= 1 for v in r.values())


def test_the_loop_attack_differentiates_through_the_generative_feedback():
    """CNN-F's trap: its attack sees the first pass only. Through the loop the gradient includes the generative
    pass (tied transposes, the eta update), so it differs from the first-pass gradient."""
    torch.manual_seed(0)
    net = FeedbackNet(Tiny(), "generative", steps=3, readout="mean").eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    grads = {}
    for name, fwd in (("loop", through_loop(net)), ("first", first_pass(net))):
        xg = x.clone().requires_grad_(True)
        (grads[name],) = torch.autograd.grad(F.cross_entropy(fwd(xg), y), xg)
    assert grads["loop"].abs().sum() > 0 and not torch.allclose(grads["loop"], grads["first"])
    x_adv = pgd(through_loop(net), x, y, eps=0.1, loss_fn=F.cross_entropy, iters=3)
    assert F.cross_entropy(net(x_adv).logits, y) > F.cross_entropy(net(x).logits, y)
