"""Tests for baselines.perceiver (Jaegle et al. 2021) and the permuted_digits dataset."""

from __future__ import annotations

import copy
import doctest
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import baselines
from baselines import perceiver as P
from experiments.data import create_dataset, token_tasks

SMALL = dict(num_latents=8, latent_dim=16, num_cross_attends=3, self_per_cross=1, latent_heads=2, latent_head_dim=8,
             num_bands=3)  # fmt: skip


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def small(**kw) -> P.Perceiver:
    torch.manual_seed(0)
    return baselines.create_model("perceiver_tiny", **(SMALL | kw)).eval()


# ----------------------------------------------------------------------------------------------- parameter counts


def test_perceiver_imagenet_has_the_papers_44_894_304_parameters():
    info = baselines.model_info("perceiver_imagenet")
    assert info["num_params"] == 44_894_304 and info["input_size"] == (3, 224, 224) and info["num_classes"] == 1000
    with torch.device("meta"):
        paper = P.perceiver_imagenet()
        # reference/architectures.md section 9: an unshared first latent tower (lucidrains' tying) gives 82,686,048
        untied_first = P.perceiver_imagenet(latent_sharing="all_but_first")
    assert paper.byte_dim == 261 and len(paper.cross_blocks) == 2 and len(paper.latent_towers) == 1
    assert paper.cross_index == [0, 1, 1, 1, 1, 1, 1, 1] and paper.tower_index == [0] * 8
    assert n_params(untied_first) == 82_686_048
    # by parts: latents, 2 cross-attends, one 6-block tower, head
    cross = 2 * 1024 + 2 * 261 + 1024 * 261 + 2 * 261 * 261 + 261 * 1024 + 1024 + 2 * 1024 + 2 * (1024 * 1024 + 1024)
    block = 2 * 1024 + 4 * 1024 * 1024 + 1024 + 2 * 1024 + 2 * (1024 * 1024 + 1024)
    assert 512 * 1024 + 2 * cross + 6 * block + 2 * 1024 + 1024 * 1000 + 1000 == 44_894_304


def test_sharing_options():
    m = small(cross_sharing="none", latent_sharing="none")
    assert len(m.cross_blocks) == 3 and len(m.latent_towers) == 3
    assert small(cross_sharing="all").cross_index == [0, 0, 0]
    with pytest.raises(ValueError, match="cross_sharing must be one of all, all_but_first, none"):
        small(cross_sharing="first")
    layers = small().layers
    assert layers[1][0] is layers[2][0] is not layers[0][0] and layers[0][1] is layers[2][1]


# ----------------------------------------------------------------------------------------------- Fourier features


def test_fourier_features_follow_the_formula_with_linear_spacing():
    """Per axis [x, sin(pi f_k x), cos(pi f_k x)], f_k = linspace(1, max_freq / 2, K): linear, as the official
    code (the paper's text says log-linear; reference/methods.md section 6.5)."""
    h, w, k, mu = 4, 5, 3, 8.0
    f = P.fourier_position_features((h, w), num_bands=k, max_freq=mu)
    assert f.shape == (h * w, 2 * (2 * k + 1))
    freqs = [1.0, 2.5, 4.0]
    for i, j in [(0, 0), (2, 3), (3, 4)]:
        row = f[i * w + j].tolist()  # row-major pixel order
        for axis, x in enumerate((-1 + 2 * i / (h - 1), -1 + 2 * j / (w - 1))):
            part = row[axis * (2 * k + 1) : (axis + 1) * (2 * k + 1)]
            expected = [x] + [math.sin(math.pi * fk * x) for fk in freqs] + [math.cos(math.pi * fk * x) for fk in freqs]
            assert part == pytest.approx(expected, abs=1e-5)
    x = torch.rand(2, 3, 4, 5)
    m = small(in_chans=3, num_bands=k, max_freq=mu)
    b = m.byte_array(x)
    assert b.shape == (2, 20, 3 + 14) and torch.equal(b[0, :, :3], x[0].flatten(1).T) and torch.equal(b[1, :, 3:], f)


# ----------------------------------------------------------------------------------------------- permutations


def test_exactly_invariant_to_permuting_pixels_with_their_positions():
    """Permuting the byte array (pixel values together with their Fourier features) leaves the logits unchanged."""
    m = small()
    x = torch.rand(3, 1, 8, 8)
    bytes_ = m.byte_array(x)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(m.forward_bytes(bytes_[:, perm]), m(x), rtol=1e-5, atol=1e-5)
        # permuting the pixels alone (positions stay on the grid) is a different input ...
        pixels_only = x.flatten(2)[:, :, perm].reshape(x.shape)
        assert not torch.allclose(m(pixels_only), m(x), atol=1e-4)
        # ... unless the model has no position features: then it is a set model over pixel values
        plain = small(num_bands=0)
        torch.testing.assert_close(plain(pixels_only), plain(x), rtol=1e-5, atol=1e-5)


def test_training_on_permuted_bytes_follows_the_same_trajectory():
    """Training on pixels permuted with their positions is training on the original data: the same losses and the
    same weights after a few SGD steps (up to float summation order)."""
    m1 = small().train()
    m2 = copy.deepcopy(m1)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (m1, m2)]
    for _ in range(3):
        losses = []
        for m, opt, p in ((m1, opts[0], None), (m2, opts[1], perm)):
            b = m.byte_array(x)
            loss = F.cross_entropy(m.forward_bytes(b if p is None else b[:, p]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_forward_under_no_grad_with_a_flop_counter():
    """The runner counts FLOPs under no_grad with FlopCounterMode, whose module hooks reject views of parameters
    made under no_grad (the latent array is copied per sample, not expanded)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = small()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.zeros(1, 1, 8, 8))
    assert counter.get_total_flops() > 0


def test_one_training_step_reaches_every_parameter():
    m = small().train()
    x, y = torch.rand(4, 1, 16, 16), torch.arange(4)
    F.cross_entropy(m(x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\)"):
        m(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="byte_dim = 15"):
        m(torch.zeros(2, 64, 3))


# ----------------------------------------------------------------------------------------------- dataset


def test_permuted_digits_dataset():
    plain = create_dataset("digits", image_size=8)
    same = create_dataset("permuted_digits", image_size=8, permute_pixels=False)
    perm_set = create_dataset("permuted_digits", image_size=8, permutation_seed=3)
    assert torch.equal(same.train.images, plain.train.images)
    perm = token_tasks.pixel_permutation(64, 3)
    for split in ("train", "test"):
        a, b = getattr(plain, split), getattr(perm_set, split)
        assert torch.equal(b.images.flatten(1), a.images.flatten(1)[:, perm]) and torch.equal(b.labels, a.labels)
    assert not torch.equal(perm_set.train.images, plain.train.images)
    with pytest.raises(ValueError, match="permute_pixels and tokens must be true or false"):
        create_dataset("permuted_digits", permute_pixels="yes")


def test_permuted_digits_tokens_carry_their_positions():
    """tokens=true: byte arrays whose position features move with their pixels, so a Perceiver built with the same
    Fourier features gives exactly (up to float order) the same logits on permuted tokens as on the ordered image."""
    ordered = create_dataset("permuted_digits", image_size=8, tokens=True, permute_pixels=False, num_bands=3)
    permuted = create_dataset("permuted_digits", image_size=8, tokens=True, num_bands=3)
    images = create_dataset("digits", image_size=8)
    assert ordered.image_size == 0 and ordered.in_chans == 1 and ordered.train.inputs.shape == (1347, 64, 15)
    m = small(img_size=8)  # num_bands 3, max_freq 8 = image_size: byte_dim 1 + 14
    with torch.no_grad():
        x = images.test.images[:16]
        assert torch.equal(ordered.test.inputs[:16], m.byte_array(x))
        torch.testing.assert_close(m(permuted.test.inputs[:16]), m(x), rtol=1e-5, atol=1e-5)
    perm = token_tasks.pixel_permutation(64, 0)
    assert torch.equal(permuted.train.inputs, ordered.train.inputs[:, perm])


def test_permuted_digits_standardized_tokens():
    """standardize=true: the pixel channel standardised with the training split's statistics (unchanged by the
    permutation), the position features untouched; the permuted byte array is still the ordered one reordered."""
    raw = create_dataset("permuted_digits", image_size=8, tokens=True, permute_pixels=False, num_bands=3)
    std = create_dataset("permuted_digits", image_size=8, tokens=True, permute_pixels=False, num_bands=3,
                         standardize=True)
    perm_std = create_dataset("permuted_digits", image_size=8, tokens=True, num_bands=3, standardize=True)
    px = std.train.inputs[..., 0]
    assert abs(px.mean().item()) < 1e-4 and abs(px.std().item() - 1) < 1e-3
    assert torch.equal(std.train.inputs[..., 1:], raw.train.inputs[..., 1:])
    r = raw.test.inputs[..., 0]
    torch.testing.assert_close(std.test.inputs[..., 0], (r - raw.train.inputs[..., 0].mean())
                               / raw.train.inputs[..., 0].std())
    assert torch.equal(perm_std.test.inputs, std.test.inputs[:, token_tasks.pixel_permutation(64, 0)])
    with pytest.raises(ValueError, match="standardize must be true or false"):
        create_dataset("permuted_digits", tokens=True, standardize="yes")


def test_doctests():
    result = doctest.testmod(P, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
