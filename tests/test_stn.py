"""Spatial transformer (baselines/stn.py) and the distorted_digits dataset (experiments/data/distorted.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

import baselines
from baselines.stn import SpatialTransformer
from experiments.data import create_dataset


def test_identity_at_initialisation():
    torch.manual_seed(0)
    stn = SpatialTransformer(in_chans=3)
    x = torch.rand(4, 3, 20, 28)
    theta = stn.localise(x)
    assert theta.shape == (4, 2, 3)
    assert torch.equal(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3))
    torch.testing.assert_close(stn(x), x, atol=1e-5, rtol=0)


def test_theta_moves_the_image_as_the_equations_say():
    """A translation by one pixel (2 / W in normalised coordinates) shifts the image by one pixel."""
    stn = SpatialTransformer(in_chans=1)
    with torch.no_grad():
        stn.theta.bias.copy_(torch.tensor([1.0, 0.0, 2.0 / 8, 0.0, 1.0, 0.0]))  # x_s = x_t + 2/8: read one px right
    x = torch.rand(1, 1, 8, 8)
    y = stn(x)
    torch.testing.assert_close(y[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
    assert y[..., -1].abs().max() == 0  # zero padding outside the image


def test_output_size_and_bad_input():
    stn = SpatialTransformer(in_chans=1, out_size=(10, 12))
    assert stn(torch.rand(2, 1, 32, 32)).shape == (2, 1, 10, 12)
    with pytest.raises(ValueError, match="expects"):
        stn(torch.rand(2, 3, 32, 32))


def test_gradients_reach_the_localisation_net():
    torch.manual_seed(0)
    net = baselines.create_model("stn_classifier", num_classes=10, in_chans=1)
    x = torch.rand(8, 1, 32, 32)
    F.cross_entropy(net(x), torch.arange(8)).backward()
    # at the identity init the last layer's weights have gradient; the layers before it see zero weights
    assert net.stem.theta.weight.grad.abs().sum() > 0 and net.stem.theta.bias.grad.abs().sum() > 0
    with torch.no_grad():
        net.stem.theta.weight.normal_(std=0.01)
    net.zero_grad()
    F.cross_entropy(net(x), torch.arange(8)).backward()
    for name, p in net.stem.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_staged_view_and_plain_cnn():
    net = baselines.create_model("stn_classifier", num_classes=7, in_chans=1, stn=False)
    assert isinstance(net.stem, torch.nn.Identity) and net.channels == [16, 32, 64] and net.strides == [2, 4, 8]
    with_stn = baselines.create_model("stn_classifier", num_classes=7, in_chans=1)
    extra = sum(p.numel() for p in with_stn.parameters()) - sum(p.numel() for p in net.parameters())
    assert extra == sum(p.numel() for p in with_stn.stem.parameters()) > 0
    x = torch.rand(2, 1, 32, 32)
    net.eval()
    h = net.stem(x)
    for stage in net.stages:
        h = stage(h)
    assert torch.equal(net.head(h), net(x))


def test_one_train_step_changes_theta():
    torch.manual_seed(0)
    data = create_dataset("distorted_digits", num_train=32, num_test=8)
    net = baselines.create_model("stn_classifier", num_classes=10, in_chans=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = data.train.images, data.train.labels
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    assert not torch.equal(net.stem.theta.bias, torch.tensor([1.0, 0, 0, 0, 1.0, 0]))


def test_distorted_digits_deterministic_and_disjoint():
    a = create_dataset("distorted_digits", seed=3, num_train=50, num_test=20, canvas=28)
    b = create_dataset("distorted_digits", seed=3, num_train=50, num_test=20, canvas=28)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.shape == (50, 1, 28, 28) and a.train.labels.dtype == torch.int64
    assert 0 <= a.train.images.min() and a.train.images.max() <= 1
    assert not set(a.train.source_ids.flatten().tolist()) & set(a.test.source_ids.flatten().tolist())
    c = create_dataset("distorted_digits", seed=4, num_train=50, num_test=20, canvas=28)
    assert not torch.equal(a.train.images, c.train.images)
    plain = create_dataset("distorted_digits", num_train=5, num_test=1, rotate=0, scale=(1, 1), translate=0, clutter=0,
                           noise=0, canvas=14, digit_size=14)
    from experiments.data.cluttered import _upscaled
    torch.testing.assert_close(plain.train.images[:, 0], torch.from_numpy(_upscaled(14)[plain.train.source_ids[:, 0]]),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="digit_size"):
        create_dataset("distorted_digits", canvas=10, digit_size=14)
