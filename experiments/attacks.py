"""Adversarial and noise robustness of feedback models: FGSM, PGD, SPSA, random noise, through the loop or not.

The evaluation trap of CNN-F (reference/methods.md section 4.3): its PGD attacks *only the first feed-forward
pass* and scores the adversarial images with the whole feedback loop. That measures whether feedback repairs an
attack on the feed-forward network, not whether the feedback network is robust; an attacker who knows the model
differentiates through every step. So every attack here takes the function it differentiates, and
:func:`robustness_report` runs each one twice, side by side:

- ``loop``: the readout of the whole T-step loop (``model(x).logits``), gradients through every top-down step;
- ``first``: the logits of the first bottom-up pass (``model(x).per_step[0]``, the backbone alone);

and always scores the adversarial images with the whole loop. A gradient-free attack (SPSA) and a random point of
the same L-inf ball are the checks against gradient masking: if SPSA beats PGD, or random noise hurts as much as
PGD, the gradients are not telling the truth.

Attacks (all L-inf, images clamped to ``bounds``, default [0, 1]; each returns the adversarial batch, detached):

- :func:`fgsm` (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples", ICLR):
  ``x + eps * sign(grad_x L)``;
- :func:`pgd` (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks", ICLR):
  a uniform random start in the ball (``random_start``), then ``iters`` steps ``x + step * sign(grad_x L)``, each
  projected onto the ball and the bounds; default step ``2.5 eps / iters`` (Madry et al.);
- :func:`spsa` (Uesato et al. 2018, "Adversarial risk and the dangers of evaluating against weak attacks", ICML):
  the gradient is *estimated* from ``samples`` antithetic pairs of Rademacher directions ``v``,
  ``g = mean_v [L(x + delta v) - L(x - delta v)] / (2 delta) v`` per image, from loss values only; then a PGD
  sign step and projection. **Deviation:** Uesato et al. update with Adam (lr 0.01); a sign step keeps it on the
  same footing as PGD;
- :func:`random_noise`: one uniform random point of the ball (no model needed: the floor any attack must beat).

Every attack has the signature ``attack(forward, x, y, *, eps, loss_fn, **options) -> x_adv``, ``forward`` mapping
images to logits and ``loss_fn(logits, y)`` a scalar to *increase* (the task's loss): the contract
:func:`experiments.evaluate.attack_metrics` calls them with. ``eps = 0`` returns ``x`` unchanged (for ``x``
within ``bounds``). Call them with the model in eval mode; they use ``torch.autograd.grad`` with respect to the
images only, so no parameter gradient is touched.

For a whole report, :func:`robustness_report` takes a model (a :class:`~feedback.core.FeedbackNet`), the task
loss and data tensors and returns accuracies; the runner can call it on the test set after training::

    from experiments.attacks import robustness_report
    acc = robustness_report(model, task.loss, x_test, y_test, correct_fn=lambda lg, y: task.correct(lg, y)["acc"],
                            eps=0.1, sigmas=(0.1, 0.2))
    # {'clean': ..., 'fgsm_first': ..., 'fgsm_loop': ..., 'pgd_first': ..., 'pgd_loop': ..., 'spsa_first': ...,
    #  'spsa_loop': ..., 'random': ..., 'noise0.1': ..., 'noise0.2': ...}

Example:
    >>> import torch, torch.nn as nn, torch.nn.functional as F
    >>> forward = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    >>> x_adv = pgd(forward, x, y, eps=0.1, loss_fn=F.cross_entropy, iters=5)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool(x_adv.min() >= 0 and x_adv.max() <= 1)
    (True, True)
    >>> F.cross_entropy(forward(x_adv), y) > F.cross_entropy(forward(x), y)
    tensor(True)
    >>> torch.equal(fgsm(forward, x, y, eps=0.0, loss_fn=F.cross_entropy), x)
    True
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["ATTACKS", "THROUGH", "accuracy", "fgsm", "first_pass", "pgd", "random_noise", "robustness_report",
           "spsa", "through_loop"]

ATTACKS = ("fgsm", "pgd", "spsa", "random_noise")
THROUGH = ("loop", "first")

Forward = Callable[[Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def through_loop(model: nn.Module) -> Forward:
    """``x -> model(x).logits``: the readout of the whole feedback loop."""
    return lambda x: model(x).logits


def first_pass(model: nn.Module) -> Forward:
    """``x -> model(x).per_step[0]``: the logits of the first bottom-up pass only."""
    return lambda x: model(x).per_step[0]


def _project(x_adv: Tensor, x: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(*bounds)


def _check(eps: float) -> None:
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _grad(forward: Forward, loss_fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(forward(x), y), x)
    return g


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def fgsm(forward: Forward, x: Tensor, y: Tensor, *, eps: float, loss_fn: LossFn,
         bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """One signed-gradient step of size ``eps`` (Goodfellow et al. 2015), clamped to ``bounds``."""
    _check(eps)
    if eps == 0:
        return x.detach().clone()
    return (x + eps * _grad(forward, loss_fn, x, y).sign()).clamp(*bounds).detach()


def pgd(forward: Forward, x: Tensor, y: Tensor, *, eps: float, loss_fn: LossFn, step: float | None = None,
        iters: int = 10, random_start: bool = True, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> Tensor:
    """L-inf projected gradient ascent (Madry et al. 2018): ``iters`` sign steps of ``step`` inside the eps-ball."""
    _check(eps)
    if eps == 0:
        return x.detach().clone()
    step = 2.5 * eps / iters if step is None else step
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=_generator(seed, x.device), device=x.device, dtype=x.dtype)
        x_adv = _project(x + eps * (2 * noise - 1), x, eps, bounds)
    for _ in range(iters):
        x_adv = _project(x_adv + step * _grad(forward, loss_fn, x_adv, y).sign(), x, eps, bounds)
    return x_adv.detach()


def _per_sample_loss(loss_fn: LossFn, logits: Tensor, y: Tensor) -> Tensor:
    """``loss_fn`` of each sample on its own (a batch-mean loss cannot be split otherwise)."""
    try:
        return torch.func.vmap(lambda lg, t: loss_fn(lg[None], t[None]))(logits, y)
    except Exception:  # a loss that vmap cannot trace: one call per sample
        return torch.stack([loss_fn(logits[i : i + 1], y[i : i + 1]) for i in range(logits.shape[0])])


@torch.no_grad()
def spsa(forward: Forward, x: Tensor, y: Tensor, *, eps: float, loss_fn: LossFn, step: float | None = None,
         iters: int = 10, samples: int = 32, delta: float = 0.01, bounds: tuple[float, float] = (0.0, 1.0),
         seed: int = 0) -> Tensor:
    """Gradient-free L-inf attack: SPSA gradient estimates (Uesato et al. 2018) with PGD sign steps.

    ``samples`` antithetic pairs of Rademacher directions per image and iteration (``2 * samples`` forward passes
    of the batch), finite-difference scale ``delta``, step ``2.5 eps / iters`` by default. Never calls backward.
    """
    _check(eps)
    if eps == 0:
        return x.detach().clone()
    step = 2.5 * eps / iters if step is None else step
    gen = _generator(seed, x.device)
    b = x.shape[0]
    x = x.detach()
    x_adv = x.clone()
    chunk = max(1, min(samples, 512 // max(1, b)))  # directions per forward: about 1,000 images per call
    ones = [1] * (x.dim() - 1)
    for _ in range(iters):
        g = torch.zeros_like(x)
        for start in range(0, samples, chunk):
            s = min(chunk, samples - start)
            v = torch.randint(0, 2, (s, *x.shape), generator=gen, device=x.device).to(x.dtype) * 2 - 1
            probes = torch.cat([x_adv + delta * v, x_adv - delta * v]).flatten(0, 1)  # (2 s B, ...)
            y_rep = y.repeat(2 * s, *([1] * (y.dim() - 1)))
            losses = _per_sample_loss(loss_fn, forward(probes), y_rep).view(2, s, b)
            diff = (losses[0] - losses[1]) / (2 * delta)  # (s, B)
            g += (diff.view(s, b, *ones) * v).sum(0)
        x_adv = _project(x_adv + step * g.sign(), x, eps, bounds)
    return x_adv


def random_noise(forward: Forward | None, x: Tensor, y: Tensor | None = None, *, eps: float,
                 loss_fn: LossFn | None = None, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> Tensor:
    """A uniform random point of the L-inf ball of radius ``eps`` (clamped); ``forward``, ``y``, ``loss_fn`` unused."""
    _check(eps)
    if eps == 0:
        return x.detach().clone()
    noise = torch.rand(x.shape, generator=_generator(seed, x.device), device=x.device, dtype=x.dtype)
    return _project(x + eps * (2 * noise - 1), x, eps, bounds).detach()


def _default_correct(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(-1) == y).float()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, correct_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
             batch_size: int = 256) -> float:
    """Share of correct samples under the readout of the whole loop (``model(x).logits``)."""
    correct_fn = correct_fn or _default_correct
    hits = [correct_fn(model(x[i : i + batch_size]).logits, y[i : i + batch_size]).float().sum()
            for i in range(0, x.shape[0], batch_size)]
    return float(torch.stack(hits).sum() / x.shape[0])


def robustness_report(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    correct_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    eps: float = 0.1,
    attacks: Sequence[str] = ("fgsm", "pgd", "spsa"),
    through: Sequence[str] = THROUGH,
    pgd_iters: int = 10,
    spsa_iters: int = 10,
    spsa_samples: int = 32,
    sigmas: Sequence[float] = (0.1, 0.2, 0.3),
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracies of ``model`` (a FeedbackNet) on ``(x, y)``: clean, under each attack through the loop and the
    first pass, at a random point of the same ball, and under Gaussian pixel noise of each std in ``sigmas``.

    Keys: ``clean``, ``<attack>_<through>`` for ``attack`` in ``attacks`` and ``through`` in ``through``,
    ``random``, ``noise<sigma>``. Every adversarial batch is scored by the whole loop. The model is put in eval mode
    and its training flag restored.
    """
    unknown = [a for a in attacks if a not in ATTACKS or a == "random_noise"]
    if unknown:
        raise ValueError(f"unknown attack(s) {', '.join(unknown)}; choose from: fgsm, pgd, spsa")
    bad = [t for t in through if t not in THROUGH]
    if bad:
        raise ValueError(f"unknown through mode(s) {', '.join(bad)}; choose from: {', '.join(THROUGH)}")
    was_training = model.training
    model.eval()
    try:
        forwards = {"loop": through_loop(model), "first": first_pass(model)}
        options = {"fgsm": {}, "pgd": {"iters": pgd_iters, "seed": seed},
                   "spsa": {"iters": spsa_iters, "samples": spsa_samples, "seed": seed}}
        fns = {"fgsm": fgsm, "pgd": pgd, "spsa": spsa}
        perturbed: dict[str, list[Tensor]] = {}
        gen = torch.Generator(device=x.device).manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            batches = {"clean": xb, "random": random_noise(None, xb, eps=eps, bounds=bounds, seed=seed + i)}
            for a in attacks:
                for t in through:
                    batches[f"{a}_{t}"] = fns[a](forwards[t], xb, yb, eps=eps, loss_fn=loss_fn, bounds=bounds,
                                                 **options[a])
            for s in sigmas:
                noise = torch.randn(xb.shape, generator=gen, device=xb.device, dtype=xb.dtype)
                batches[f"noise{s:g}"] = (xb + s * noise).clamp(*bounds)
            for k, v in batches.items():
                perturbed.setdefault(k, []).append(v)
        order = ["clean"] + [f"{a}_{t}" for a in attacks for t in through] + ["random"] + [f"noise{s:g}" for s in sigmas]
        return {k: accuracy(model, torch.cat(perturbed[k]), y, correct_fn=correct_fn, batch_size=batch_size)
                for k in order}
    finally:
        model.train(was_training)

