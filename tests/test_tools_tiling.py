"""Tiling: each member starts from the frozen ensemble exactly and lowers its training loss."""

import doctest

import torch
import torch.nn.functional as F

import experiments.tools.tiling as tiling
from experiments.tools.tiling import ensemble_logits, fit_member, fit_tiling, mlp_member


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long() + (x[:, 3] > 1).long()  # 3 classes, not linearly separable
    return x, y


def test_member_starts_from_the_ensemble_and_lowers_its_loss():
    x, y = _data()
    torch.manual_seed(0)
    first = mlp_member(6, 4, 3)
    h1 = fit_member(first, x, y, None, epochs=30)
    assert abs(h1[0] - float(torch.log(torch.tensor(3.0)))) < 1e-6  # zero output layer: uniform logits
    base = ensemble_logits([first], x)
    second = mlp_member(6, 4, 3)
    h2 = fit_member(second, x, y, base, epochs=30)
    assert abs(h2[0] - float(F.cross_entropy(base, y))) < 1e-6  # adding a member starts from the ensemble
    assert h2[-1] < h2[0] and h1[-1] < h1[0]


def test_ensemble_is_the_sum_of_members_and_training_loss_falls_as_members_are_added():
    x, y = _data()
    members = fit_tiling(x, y, num_classes=3, members=3, hidden=4, epochs=30)
    total = sum(m(x) for m in members)
    torch.testing.assert_close(ensemble_logits(members, x), total.detach())
    losses = [float(F.cross_entropy(ensemble_logits(members[:k], x), y)) for k in (1, 2, 3)]
    assert losses[0] > losses[1] > losses[2]


def test_docstring_example_runs():
    result = doctest.testmod(tiling, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
