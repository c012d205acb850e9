"""Optimal brain damage (experiments.tools.obd): the right weight on an exact quadratic, Hessian estimates, masks."""

import doctest

import pytest
import torch
import torch.nn as nn

from experiments.tools import obd
from experiments.tools.obd import (
    Pruner,
    fisher_diagonal,
    hutchinson_diagonal,
    magnitude_saliency,
    obd_saliency,
)


class Quadratic(nn.Module):
    """L(w) = 1/2 (w - w*)^T H (w - w*), initialised at its minimum w = w*."""

    def __init__(self, w_star, h):
        super().__init__()
        self.register_buffer("w_star", torch.as_tensor(w_star, dtype=torch.float64))
        self.register_buffer("h", torch.as_tensor(h, dtype=torch.float64))
        self.w = nn.Parameter(self.w_star.clone())

    def loss(self):
        d = self.w - self.w_star
        return 0.5 * d @ self.h @ d


def test_obd_prunes_the_right_weight_where_magnitude_gets_it_wrong():
    q = Quadratic([1.0, 0.5, -2.0], torch.diag(torch.tensor([1.0, 100.0, 1.0])))
    h_exact = torch.diagonal(torch.autograd.functional.hessian(lambda w: 0.5 * (w - q.w_star) @ q.h @ (w - q.w_star),
                                                               q.w.detach()))
    increase = []
    for k in range(3):  # the true loss increase of deleting each weight
        with torch.no_grad():
            q.w.copy_(q.w_star)
            q.w[k] = 0.0
            increase.append(float(q.loss()))
    with torch.no_grad():
        q.w.copy_(q.w_star)
    best = min(range(3), key=increase.__getitem__)
    for name, sal in [("obd", obd_saliency(q.w, h_exact)), ("magnitude", magnitude_saliency(q.w))]:
        pruner = Pruner(q, ["w"])
        pruner.prune_to(1 / 3, {"w": sal})
        pruned = int((pruner.masks["w"] == 0).nonzero())
        if name == "obd":
            assert pruned == best == 0
            assert torch.allclose(sal, torch.tensor(increase, dtype=torch.float64))  # exact for a diagonal H
        else:
            assert pruned == 1 != best
    assert float(q.w[0]) == 0.0 and pruner.sparsity() == pytest.approx(1 / 3)


def test_hutchinson_is_exact_for_diagonal_and_unbiased_for_full_hessians():
    q = Quadratic([1.0, 2.0, 3.0], torch.diag(torch.tensor([2.0, 5.0, 7.0])))
    (hd,) = hutchinson_diagonal(q.loss, [q.w], samples=1)
    assert torch.allclose(hd, torch.tensor([2.0, 5.0, 7.0], dtype=torch.float64))
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = Quadratic(torch.zeros(4), a @ a.T + torch.eye(4, dtype=torch.float64))
    (hd,) = hutchinson_diagonal(q.loss, [q.w], samples=1500, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(hd, torch.diagonal(q.h), rtol=0.15, atol=0.3)


def test_fisher_diagonal_matches_the_gauss_newton_diagonal_of_a_linear_softmax_model():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4, bias=False)
    x = torch.randn(6, 3)
    p = torch.softmax(lin(x), 1).detach()
    # Gauss-Newton for softmax CE: per sample, J^T (diag(p) - p p^T) J with J = d logits / d W
    ggn = torch.zeros(4, 3)
    for b in range(6):
        m = torch.diag(p[b]) - torch.outer(p[b], p[b])
        ggn += torch.diagonal(m)[:, None] * x[b][None, :] ** 2
    ggn /= 6
    xs = x.repeat(500, 1)  # 500 sampled labels per input, in one call
    est = fisher_diagonal(lin, [(xs, torch.zeros(len(xs), dtype=torch.long))], ["weight"],
                          generator=torch.Generator().manual_seed(0))["weight"]
    assert torch.allclose(est, ggn, rtol=0.15, atol=0.01)


def test_pruner_is_global_cumulative_and_masks_survive_training():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
    pruner = Pruner(net)
    assert pruner.names == ["0.weight", "2.weight"] and pruner.total == 120
    pruner.prune_to(0.5, {n: magnitude_saliency(p) for n, p in pruner.params.items()})
    assert pruner.sparsity() == pytest.approx(0.5)
    first = {n: m.clone() for n, m in pruner.masks.items()}
    pruner.prune_to(0.75, {n: torch.rand_like(p) for n, p in pruner.params.items()})
    assert pruner.sparsity() == pytest.approx(0.75)
    assert all(bool((pruner.masks[n] <= first[n]).all()) for n in first)  # pruned weights stay pruned
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(4, 10)).sum().backward()
    opt.step()
    pruner.apply()
    assert all(bool((p[pruner.masks[n] == 0] == 0).all()) for n, p in pruner.params.items())
    with pytest.raises(ValueError, match="sparsity must be in"):
        pruner.prune_to(1.0, {})


def test_docstring_examples_run():
    result = doctest.testmod(obd, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
