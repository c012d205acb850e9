"""Tiling: a sequence of small networks, each trained on the residual error of the ensemble before it.

The notes' "tiling" builds a classifier from small networks added one at a time, each one fitting what the ones
before it still get wrong (the tiling algorithm of Mezard & Nadal 1989 grows a network unit by unit on the
errors of the previous layer; cascade-correlation, Fahlman & Lebiere 1990, and gradient boosting, Friedman 2001,
are the same idea in other forms). Here the members are additive in logit space:

.. math::

    F_k(x) = \\sum_{j \\le k} f_j(x), \\qquad
    f_k = \\arg\\min_f \\; \\mathrm{CE}\\big(F_{k-1}(x) + f(x),\\, y\\big) \\text{ with } F_{k-1} \\text{ frozen,}

so member k is trained on the residual error of the ensemble before it: the gradient it follows,
``softmax(F_{k-1} + f_k) - onehot(y)``, is what the ensemble still gets wrong (functional gradient boosting with
a network as the weak learner). The last layer of every member starts at zero, so adding a member starts from the
previous ensemble exactly and training can only lower the training loss it starts from.

Shapes: ``x`` (B, D) -> logits (B, K).

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    >>> members = fit_tiling(x, y, num_classes=3, members=2, hidden=4, epochs=20)
    >>> ensemble_logits(members, x).shape
    torch.Size([64, 3])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ensemble_logits", "fit_member", "fit_tiling", "mlp_member"]


def mlp_member(inputs: int, hidden: int, classes: int) -> nn.Sequential:
    """A one-hidden-layer ReLU MLP whose output layer starts at zero (it adds nothing until trained)."""
    net = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    nn.init.zeros_(net[2].weight)
    nn.init.zeros_(net[2].bias)
    return net


@torch.no_grad()
def ensemble_logits(members: list[nn.Module], x: Tensor) -> Tensor:
    """``F_k(x) = sum_j f_j(x)`` over the given members (zeros for an empty list is not defined: pass >= 1)."""
    return torch.stack([m(x) for m in members]).sum(0)


def fit_member(member: nn.Module, x: Tensor, y: Tensor, base: Tensor | None, *, epochs: int, lr: float = 1e-2,
               batch_size: int = 128, seed: int = 0) -> list[float]:
    """Train ``member`` to minimise CE(base + member(x), y) with ``base`` (the frozen ensemble's logits) fixed.

    Returns the full-batch training loss before training and after every epoch.
    """
    opt = torch.optim.Adam(member.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(x.shape[0], 1) if base is None else base

    def full_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(base + member(x), y))

    history = [full_loss()]
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            b = base[idx] if base.shape[0] == x.shape[0] else base
            loss = F.cross_entropy(b + member(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(full_loss())
    return history


def fit_tiling(x: Tensor, y: Tensor, *, num_classes: int, members: int, hidden: int, epochs: int,
               lr: float = 1e-2, seed: int = 0) -> list[nn.Module]:
    """Grow ``members`` MLPs of width ``hidden``, each trained on the residual error of the ones before it."""
    out: list[nn.Module] = []
    for k in range(members):
        torch.manual_seed(seed * 1000 + k)
        member = mlp_member(x.shape[1], hidden, num_classes)
        base = ensemble_logits(out, x) if out else None
        fit_member(member, x, y, base, epochs=epochs, lr=lr, seed=seed * 1000 + k)
        member.eval()
        out.append(member)
    return out
