"""Deep Sets (baselines/deepsets.py) and the set datasets (experiments/data/sets.py)."""

import doctest

import pytest
import torch
import torch.nn.functional as F

import baselines
from baselines import deepsets
from baselines.deepsets import POOLS, PermEquivariant, set_pool
from experiments.data import create_dataset


def test_doctests():
    result = doctest.testmod(deepsets, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("pool", POOLS)
def test_equivariant_layer_commutes_with_permutations(pool):
    torch.manual_seed(0)
    layer = PermEquivariant(5, 7, pool=pool)
    x = torch.randn(3, 9, 5)
    perm = torch.randperm(9)
    torch.testing.assert_close(layer(x[:, perm]), layer(x)[:, perm])


def test_equivariant_layer_is_the_sum_formula():
    """``X Lambda - 1 1^T X Gamma + 1 b^T``, written out with matrices."""
    torch.manual_seed(0)
    layer = PermEquivariant(4, 3, pool="sum")
    x = torch.randn(6, 4)
    ones = torch.ones(6, 1)
    lam, gam, b = layer.lam.weight.T, layer.gamma.weight.T, layer.lam.bias
    expected = x @ lam - ones @ ones.T @ x @ gam + ones @ b[None]
    torch.testing.assert_close(layer(x[None])[0], expected)


@pytest.mark.parametrize("name", ["deepsets_sum", "deepsets_points"])
def test_models_are_invariant_and_ignore_padding(name):
    torch.manual_seed(0)
    d = 64 if name == "deepsets_sum" else 3
    net = baselines.create_model(name, num_classes=6, in_chans=d).eval()
    x = torch.randn(4, 7, d)
    perm = torch.randperm(7)
    torch.testing.assert_close(net(x[:, perm]), net(x), atol=1e-5, rtol=1e-5)
    # padding: 5 real elements + 2 padded ones (any values) give the result of the 5 alone
    mask = torch.tensor([True] * 5 + [False] * 2).expand(4, 7)
    padded = torch.cat([x[:, :5], 100 * torch.randn(4, 2, d)], 1)
    torch.testing.assert_close(net(padded, mask=mask), net(x[:, :5]), atol=1e-5, rtol=1e-5)
    assert baselines.model_info(name)["staged"] is False


def test_set_pool_masks():
    h = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    for pool in POOLS:
        out = set_pool(h, mask, pool)
        for b, k in enumerate((2, 1)):
            torch.testing.assert_close(out[b], set_pool(h[b : b + 1, :k], None, pool)[0])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="choose from"):
        baselines.create_model("deepsets_sum", pool="median")
    with pytest.raises(ValueError, match="width"):
        baselines.create_model("deepsets_points", width=0)


def test_digit_sums_dataset():
    s = create_dataset("digit_sums", num_train=200, num_test=50, min_size=2, max_size=4)
    x, mask = s.train.inputs["x"], s.train.inputs["mask"]
    assert x.shape == (200, 4, 64) and mask.shape == (200, 4) and s.num_classes == 37 and s.task == "classify"
    assert (mask.sum(1) >= 2).all() and (x[~mask] == 0).all()
    assert s.train.targets.max() <= 36 and s.image_size == 0
    full = s.tests["size4"]
    assert full.inputs["mask"].all()
    again = create_dataset("digit_sums", num_train=200, num_test=50, min_size=2, max_size=4)
    assert torch.equal(again.train.inputs["x"], x) and torch.equal(again.test.targets, s.test.targets)


@pytest.mark.parametrize("dim", [2, 3])
def test_point_clouds_dataset(dim):
    s = create_dataset("point_clouds", num_train=40, num_test=20, num_points=32, dim=dim)
    assert s.train.inputs.shape == (40, 32, dim) and s.num_classes == 4 and s.in_chans == dim
    assert s.tests["points128"].inputs.shape == (20, 128, dim)
    r = s.train.inputs.norm(dim=-1)
    assert r.max() < 1.4 * 3 ** 0.5 + 0.3  # scaled unit shapes plus noise
    with pytest.raises(ValueError, match="dim"):
        create_dataset("point_clouds", dim=4)


@pytest.mark.parametrize("name", ["deepsets_sum", "deepsets_points"])
def test_one_cpu_training_step(name):
    torch.manual_seed(0)
    if name == "deepsets_sum":
        s = create_dataset("digit_sums", num_train=32, num_test=8)
        batch, y = s.train.inputs, s.train.targets
    else:
        s = create_dataset("point_clouds", num_train=32, num_test=8)
        batch, y = {"x": s.train.inputs}, s.train.targets
    net = baselines.create_model(name, num_classes=s.num_classes, in_chans=s.in_chans)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = F.cross_entropy(net(**batch), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())
    assert F.cross_entropy(net(**batch), y) < loss
