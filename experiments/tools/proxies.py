"""Zero-cost proxies: score an untrained network from one minibatch to predict how well it will train.

After Abdelfattah, Mehrotra, Dudziak, Lane, 2021, "Zero-cost proxies for lightweight NAS", ICLR (the ICLR blog
post "A deeper look at zero-cost proxies for lightweight NAS", White et al. 2022, reviews them). With ``L`` the
cross-entropy of the minibatch ``(x, y)``, ``theta_l`` the weight of layer ``l`` (every ``nn.Conv2d`` and
``nn.Linear``) and ``g_l = dL/dtheta_l``:

- ``grad_norm``: ``sum_l ||g_l||_2`` (Frobenius norm per layer, summed);
- ``snip``: ``sum_l sum |g_l * theta_l|`` (Lee, Ajanthan, Torr 2019, "SNIP: single-shot network pruning based on
  connection sensitivity", ICLR);
- ``grasp``: ``-sum_l sum theta_l * (H g)_l`` with ``H`` the Hessian of ``L`` (a Hessian-vector product; Wang,
  Zhang, Grosse 2020, "Picking winning tickets before training by preserving gradient flow", ICLR);
- ``synflow``: ``sum_l sum theta_l * dR/dtheta_l`` with ``R = 1^T f(1; |theta|)``: all weights replaced by their
  absolute values, an all-ones input of one sample, float64 (Tanaka, Kunin, Yamins, Ganguli 2020, "Pruning neural
  networks without any data by iteratively conserving synaptic flow", NeurIPS). Data-independent: only the input
  *shape* is used. Deviation (needed with batch norm and one all-ones sample): the network runs in eval mode, so
  batch norm applies its running statistics (at initialisation: the identity up to its affine part);
- ``fisher``: ``sum_l sum_c 1/2 mean_b (sum_{hw} a_{bchw} dL/da_{bchw})^2`` over the outputs ``a`` of every
  Conv2d/Linear layer (Theis et al. 2018, "Faster gaze prediction with dense networks and Fisher pruning"; Turner
  et al. 2020, "BlockSwap"); a layer called several times (a FeedbackNet's steps) adds every call;
- ``jacob_cov``: ``-sum_i [log(lambda_i + k) + 1 / (lambda_i + k)]``, ``k = 1e-5``, with ``lambda`` the
  eigenvalues of the correlation matrix of the per-sample input Jacobians ``J_b = d(sum_k f_k(x_b))/dx_b``
  (Mellor, Turner, Storkey, Crowley 2021, "Neural architecture search without training", arXiv v1; the score
  Abdelfattah et al. evaluate);
- ``naswot``: ``log |K|``, ``K_ij = N_A - d_H(c_i, c_j)`` with ``c_b`` the binary code of which ReLU units
  (every ``nn.ReLU`` module's output) are active for sample ``b`` (Mellor et al. 2021, ICML version);
- ``params`` and ``flops`` (one sample, ``torch.utils.flop_counter``): the naive baselines.

Every proxy works on a deep copy of the model (the caller's weights, gradients and batch-norm statistics are left
untouched) in training mode (except ``synflow``, ``flops``: eval mode). Shapes: ``x`` ``(B, C, H, W)``, ``y``
``(B,)`` class indices; the model returns logits ``(B, K)`` or a ``FeedbackOutput``.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> s = compute_proxies(net, x, y, names=("params", "snip", "synflow"))
    >>> s["params"], s["snip"] > 0, s["synflow"] > 0
    (163.0, True, True)
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from experiments.tools import logits_of

__all__ = [
    "PROXIES",
    "compute_proxies",
    "fisher",
    "flops",
    "grad_norm",
    "grasp",
    "jacob_cov",
    "naswot",
    "num_params",
    "snip",
    "synflow",
    "timed_proxies",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def _weights(model: nn.Module) -> list[Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad]


def _grads(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[list[Tensor], list[Tensor]]:
    w = _weights(model)
    loss = loss_fn(logits_of(model(x)), y)
    return w, list(torch.autograd.grad(loss, w, allow_unused=True))


def _copy(model: nn.Module, train: bool = True) -> nn.Module:
    m = copy.deepcopy(model)
    m.train(train)
    m.zero_grad(set_to_none=True)
    return m


def grad_norm(model: nn.Module, x: Tensor, y: Tensor, *, loss_fn: LossFn = _ce) -> float:
    """``sum_l ||dL/dtheta_l||_2``: scales by ``c`` when the loss is scaled by ``c > 0``."""
    _, g = _grads(_copy(model), x, y, loss_fn)
    return float(sum(gi.norm() for gi in g if gi is not None))


def snip(model: nn.Module, x: Tensor, y: Tensor, *, loss_fn: LossFn = _ce) -> float:
    """``sum_l sum |dL/dtheta_l * theta_l|`` (connection sensitivity)."""
    w, g = _grads(_copy(model), x, y, loss_fn)
    return float(sum((gi * wi.detach()).abs().sum() for wi, gi in zip(w, g) if gi is not None))


def grasp(model: nn.Module, x: Tensor, y: Tensor, *, loss_fn: LossFn = _ce) -> float:
    """``-sum_l sum theta_l * (H g)_l``: the gradient g (detached) times the Hessian, by double back-propagation."""
    m = _copy(model)
    w, g = _grads(m, x, y, loss_fn)
    g = [torch.zeros_like(wi) if gi is None else gi.detach() for wi, gi in zip(w, g)]
    loss = loss_fn(logits_of(m(x)), y)
    g2 = torch.autograd.grad(loss, w, create_graph=True, allow_unused=True)
    z = sum((gi2 * gi).sum() for gi2, gi in zip(g2, g) if gi2 is not None)
    hg = torch.autograd.grad(z, w, allow_unused=True)
    return float(-sum((wi.detach() * h).sum() for wi, h in zip(w, hg) if h is not None))


def synflow(model: nn.Module, input_size: tuple[int, ...]) -> float:
    """``sum theta * dR/dtheta``, ``R = sum f(1; |theta|)`` in float64, eval mode: depends only on ``input_size``."""
    m = _copy(model, train=False).double()
    with torch.no_grad():
        for p in m.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    w = _weights(m)
    out = logits_of(m(torch.ones(1, *input_size, dtype=torch.float64)))
    g = torch.autograd.grad(out.sum(), w, allow_unused=True)
    return float(sum((wi.detach() * gi).sum() for wi, gi in zip(w, g) if gi is not None))


def fisher(model: nn.Module, x: Tensor, y: Tensor, *, loss_fn: LossFn = _ce) -> float:
    """Channel Fisher ``sum 1/2 mean_b (sum_hw a dL/da)^2`` over the outputs of every Conv2d/Linear call."""
    m = _copy(model)
    acts: list[Tensor] = []

    def hook(_mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        if out.requires_grad:
            acts.append(out)

    handles = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    try:
        loss = loss_fn(logits_of(m(x)), y)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(loss, acts, allow_unused=True)  # a FeedbackNet's last top-down pass is unused
    total = 0.0
    for a, g in zip(acts, grads):
        if g is None:
            continue
        s = (a * g).detach()
        s = s.flatten(2).sum(-1) if s.dim() > 2 else s  # (B, C)
        total += float(0.5 * s.pow(2).mean(0).sum())
    return total


def jacob_cov(model: nn.Module, x: Tensor, y: Tensor | None = None, *, k: float = 1e-5) -> float:
    """Mellor et al. (v1): ``-sum(log(lambda + k) + 1/(lambda + k))`` of the input-Jacobian correlation matrix."""
    m = _copy(model)
    xg = x.detach().clone().requires_grad_(True)
    (j,) = torch.autograd.grad(logits_of(m(xg)).sum(), xg)
    j = j.reshape(j.shape[0], -1).double()
    corr = torch.nan_to_num(torch.corrcoef(j), nan=0.0)
    lam = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(lam.clamp_min(0) + k) + 1.0 / (lam.clamp_min(0) + k)).sum())


@torch.no_grad()
def naswot(model: nn.Module, x: Tensor, y: Tensor | None = None) -> float:
    """Mellor et al. (ICML): ``log|K|`` of the Hamming-similarity kernel of the ReLU activation codes; NaN without
    ``nn.ReLU`` modules."""
    m = _copy(model)
    codes: list[Tensor] = []

    def hook(_mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        codes.append((out.detach().reshape(out.shape[0], -1) > 0).double())

    handles = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, nn.ReLU)]
    try:
        m(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return math.nan
    c = torch.cat(codes, dim=1)
    kmat = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(kmat)[1])


def num_params(model: nn.Module) -> float:
    """The number of parameters (a naive proxy)."""
    return float(sum(p.numel() for p in model.parameters()))


def flops(model: nn.Module, input_size: tuple[int, ...]) -> float:
    """FLOPs of one forward pass on one sample (``torch.utils.flop_counter``; eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = _copy(model, train=False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        m(torch.zeros(1, *input_size))
    return float(counter.get_total_flops())


PROXIES: dict[str, Callable[..., float]] = {
    "grad_norm": lambda m, x, y, lf: grad_norm(m, x, y, loss_fn=lf),
    "snip": lambda m, x, y, lf: snip(m, x, y, loss_fn=lf),
    "grasp": lambda m, x, y, lf: grasp(m, x, y, loss_fn=lf),
    "synflow": lambda m, x, y, lf: synflow(m, tuple(x.shape[1:])),
    "fisher": lambda m, x, y, lf: fisher(m, x, y, loss_fn=lf),
    "jacob_cov": lambda m, x, y, lf: jacob_cov(m, x),
    "naswot": lambda m, x, y, lf: naswot(m, x),
    "params": lambda m, x, y, lf: num_params(m),
    "flops": lambda m, x, y, lf: flops(m, tuple(x.shape[1:])),
}


def timed_proxies(model: nn.Module, x: Tensor, y: Tensor, *, names: tuple[str, ...] = tuple(PROXIES),
                  loss_fn: LossFn = _ce, seed: int = 0) -> dict[str, tuple[float, float]]:
    """``{name: (score, seconds)}`` for each proxy in ``names``; the RNG is reseeded with ``seed`` before each."""
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ValueError(f"unknown proxy '{unknown[0]}'; choose from: {', '.join(PROXIES)}")
    out = {}
    for n in names:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        score = PROXIES[n](model, x, y, loss_fn)
        out[n] = (score, time.perf_counter() - t0)
    return out


def compute_proxies(model: nn.Module, x: Tensor, y: Tensor, *, names: tuple[str, ...] = tuple(PROXIES),
                    loss_fn: LossFn = _ce, seed: int = 0) -> dict[str, float]:
    """``{name: score}`` for each proxy in ``names`` (see :func:`timed_proxies`)."""
    return {n: s for n, (s, _) in timed_proxies(model, x, y, names=names, loss_fn=loss_fn, seed=seed).items()}
