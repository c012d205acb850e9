"""Low-rank compression (experiments.tools.lowrank): exact recovery, identity at full rank, parameter counts."""

import doctest

import pytest
import torch
import torch.nn as nn

from experiments.tools import lowrank
from experiments.tools.lowrank import (
    compress_model,
    count_params,
    factorize,
    fisher_information,
    low_rank_factors,
    rank_for_ratio,
)


@pytest.mark.parametrize("weighted", [False, True])
def test_exactly_low_rank_matrix_is_recovered_exactly(weighted):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(3, 9, generator=g, dtype=torch.float64)
    w = a @ b
    rows = torch.rand(12, generator=g, dtype=torch.float64) + 0.1 if weighted else None
    A, B = low_rank_factors(w, 3, row_weights=rows)
    assert A.shape == (12, 3) and B.shape == (3, 9)
    assert torch.allclose(A @ B, w, atol=1e-10)
    # one rank short of the true rank it cannot be exact
    A2, B2 = low_rank_factors(w, 2, row_weights=rows)
    assert (A2 @ B2 - w).abs().max() > 1e-3


def test_truncated_svd_is_the_eckart_young_optimum():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(10, 8, generator=g, dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    A, B = low_rank_factors(w, 3)
    assert torch.isclose(torch.linalg.norm(w - A @ B), s[3:].square().sum().sqrt())


def test_fisher_weighting_protects_heavy_rows():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 8, generator=g, dtype=torch.float64)
    rows = torch.ones(8, dtype=torch.float64)
    rows[0] = 1e4
    err_plain = (w - torch.mm(*low_rank_factors(w, 2)))[0].norm()
    err_weighted = (w - torch.mm(*low_rank_factors(w, 2, row_weights=rows)))[0].norm()
    assert err_weighted < 0.1 * err_plain
    # and the weighted objective is minimal for the weighted solution
    d = rows.sqrt()[:, None]
    obj = lambda A, B: (d * (w - A @ B)).norm()  # noqa: E731
    assert obj(*low_rank_factors(w, 2, row_weights=rows)) <= obj(*low_rank_factors(w, 2)) + 1e-12


@pytest.mark.parametrize("layer", [nn.Linear(7, 5), nn.Conv2d(3, 6, 3, stride=2, padding=1),
                                   nn.Conv2d(4, 5, (3, 1), dilation=2, bias=False)])
def test_full_rank_is_identity(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 7) if isinstance(layer, nn.Linear) else torch.randn(2, layer.in_channels, 9, 9)
    m, n = layer.weight.shape[0], layer.weight[0].numel()
    full = factorize(layer, rank=min(m, n))
    assert torch.allclose(full(x), layer(x), atol=1e-5)
    rows = torch.rand(m) + 0.5
    assert torch.allclose(factorize(layer, rank=min(m, n), row_weights=rows)(x), layer(x), atol=1e-5)


def test_parameter_counts_and_ratio():
    conv = nn.Conv2d(16, 32, 3)
    r = rank_for_ratio(tuple(conv.weight.shape), 0.25)
    assert r == int(0.25 * 32 * 144 / (32 + 144))
    small = factorize(conv, ratio=0.25)
    assert small[0].weight.shape == (r, 16, 3, 3) and small[1].weight.shape == (32, r, 1, 1)
    assert count_params(small) == r * (32 + 144) + 32
    assert count_params(small) - 32 <= 0.25 * conv.weight.numel()
    with pytest.raises(ValueError, match="exactly one"):
        factorize(conv)
    with pytest.raises(ValueError, match="rank must be between"):
        factorize(conv, rank=33)
    with pytest.raises(TypeError, match="nn.Linear"):
        factorize(nn.Conv2d(4, 4, 3, groups=2), rank=1)


def test_compress_model_replaces_layers_and_keeps_skipped():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    loss = lambda m, a, b: nn.functional.cross_entropy(m(a), b)  # noqa: E731
    fisher = fisher_information(net, [(x, y), (x[:8], y[:8])], loss)
    assert set(fisher) == {n for n, _ in net.named_parameters()} and all(f.min() >= 0 for f in fisher.values())
    assert all(p.grad is None for p in net.parameters())
    for f in (None, fisher):
        small, ranks = compress_model(net, ratio=0.25, fisher=f, skip=("2",))
        assert ranks == {"0": 8} and isinstance(small[2], nn.Linear)
        assert count_params(small) == 8 * 128 + 64 + 64 * 10 + 10
        assert small(x).shape == (16, 10)
    assert isinstance(net[0], nn.Linear)  # the original is untouched


def test_docstring_examples_run():
    result = doctest.testmod(lowrank, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_fwsvd_solution_is_the_projection_and_dead_rows_can_stay_silent():
    """Given B, the weighted optimum is A = W B^T (rows decouple); zero_dead zeroes the rows with no importance."""
    from experiments.tools.lowrank import low_rank_factors

    torch.manual_seed(0)
    w = torch.randn(6, 5, dtype=torch.float64)
    imp = torch.tensor([1.0, 2.0, 0.0, 3.0, 0.5, 0.0], dtype=torch.float64)
    a, b = low_rank_factors(w, 2, row_weights=imp)
    torch.testing.assert_close(a, w @ b.T)
    d = imp.clamp_min(imp.max() * 1e-8).sqrt()
    u, s, vh = torch.linalg.svd(d[:, None] * w, full_matrices=False)
    torch.testing.assert_close(a[imp > 0], ((u[:, :2] * s[:2]) / d[:, None])[imp > 0])
    a0, b0 = low_rank_factors(w, 2, row_weights=imp, zero_dead=True)
    assert torch.equal(b0, b) and a0[imp == 0].abs().sum() == 0 and torch.equal(a0[imp > 0], a[imp > 0])
