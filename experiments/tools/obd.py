"""Optimal brain damage (OBD): prune the weights whose deletion raises the loss least, by a Hessian-diagonal estimate.

LeCun, Denker, Solla, 1990, "Optimal brain damage", NIPS 2. Near a minimum (gradient ~ 0) the loss change from a
perturbation ``dw`` is ``dL ~ 1/2 dw^T H dw``; with a diagonal ``H`` (the paper's approximation) deleting weight
``w_k`` (``dw_k = -w_k``) costs the **saliency** ``s_k = h_kk w_k^2 / 2``. OBD removes the lowest-saliency weights,
retrains, and repeats. Magnitude pruning (``s_k = w_k^2``) is the special case ``h_kk = const``.

Two estimates of the Hessian diagonal ``h_kk``:

- ``hutchinson_diagonal``: ``diag(H) = E_z[z * (H z)]`` over Rademacher ``z`` (Bekas, Kokiopoulou, Saad 2007), one
  Hessian-vector product per sample; unbiased but noisy, can be negative; exact for a diagonal ``H``;
- ``fisher_diagonal`` (used by the experiment): ``h_kk ~ E_x E_{y ~ p(y|x)} (d log p(y|x) / dw_k)^2``, per-sample
  gradients with labels *sampled from the model's own predictive distribution*. For softmax cross-entropy the Fisher
  equals the Gauss-Newton matrix (Martens 2014, "New insights and perspectives on the natural gradient method"),
  whose diagonal is the positive semi-definite approximation LeCun et al. computed by back-propagating second
  derivatives (they dropped the term in ``f''``, the Levenberg-Marquardt approximation). Not the "empirical Fisher"
  with the true labels.

Shapes: every saliency and mask has its parameter's shape. Masks are float ``{0, 1}`` tensors applied by
multiplying the weights after every optimizer step (:meth:`Pruner.apply`).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.5]))   # a minimum of L = 1/2 (w - w*)^T H (w - w*)
    >>> h = torch.tensor([1.0, 100.0])
    >>> loss = lambda: 0.5 * ((w - torch.tensor([1.0, 0.5])) ** 2 * h).sum()
    >>> hd = hutchinson_diagonal(loss, [w], samples=1)[0]
    >>> obd_saliency(w, hd).tolist(), magnitude_saliency(w).tolist()
    ([0.5, 12.5], [1.0, 0.25])
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from experiments.tools import logits_of

__all__ = ["Pruner", "fisher_diagonal", "hutchinson_diagonal", "magnitude_saliency", "obd_saliency",
           "prunable_weights"]


def hutchinson_diagonal(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], *, samples: int = 8,
                        generator: torch.Generator | None = None) -> list[Tensor]:
    """Hutchinson's estimate ``mean_s z_s * (H z_s)`` of the Hessian diagonal of ``loss_fn()`` w.r.t. ``params``.

    ``loss_fn`` is called once (the graph is kept for ``samples`` Hessian-vector products).
    """
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    est = [torch.zeros_like(p) for p in params]
    for s in range(samples):
        zs = [(torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype) * 2 - 1).to(p.device)
              for p in params]
        hz = torch.autograd.grad(grads, params, grad_outputs=zs, retain_graph=s < samples - 1)
        for e, z, h in zip(est, zs, hz):
            e += z * h
    return [e / samples for e in est]


def fisher_diagonal(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], names: Sequence[str], *,
                    generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Diagonal Fisher ``mean_x E_{y~p(y|x)} (d log p(y|x)/dw)^2`` for the parameters ``names`` of ``model``.

    Per-sample gradients by ``torch.func.vmap(grad(...))`` (the model runs per sample: no batch-norm in train mode);
    one label sampled per input from the model's softmax. Labels of ``batches`` are ignored.
    """
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    wanted = {n: params[n] for n in names}
    others = {n: p for n, p in params.items() if n not in wanted}

    def nll(w: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = logits_of(functional_call(model, ({**others, **w}, buffers), (x[None],)))
        return torch.nn.functional.cross_entropy(out, y[None])

    per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in wanted.items()}
    count = 0
    was = model.training
    model.eval()
    try:
        for x, _ in batches:
            with torch.no_grad():
                probs = torch.softmax(logits_of(model(x)), dim=1)
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            g = per_sample(wanted, x, y)
            for n in total:
                total[n] += g[n].pow(2).sum(0)
            count += x.shape[0]
    finally:
        model.train(was)
    return {n: t / max(count, 1) for n, t in total.items()}


def obd_saliency(w: Tensor, hdiag: Tensor) -> Tensor:
    """``s_k = h_kk w_k^2 / 2``: the loss increase of deleting ``w_k`` under a diagonal quadratic model."""
    return hdiag.detach() * w.detach().pow(2) / 2


def magnitude_saliency(w: Tensor) -> Tensor:
    """``w_k^2`` (ranks like ``|w_k|``): magnitude pruning."""
    return w.detach().pow(2)


def prunable_weights(model: nn.Module) -> list[str]:
    """Parameter names of every ``nn.Conv2d`` and ``nn.Linear`` weight of ``model`` (biases are not pruned)."""
    return [f"{n}.weight" if n else "weight" for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


class Pruner:
    """Global unstructured pruning masks over named parameters of ``model``.

    :meth:`prune_to` removes, among the weights still alive, those with the lowest saliency until a fraction
    ``sparsity`` of all the tracked weights is zero; :meth:`apply` zeroes the pruned weights (call it after every
    optimizer step while retraining).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | None = None) -> None:
        named = dict(model.named_parameters())
        self.names = list(names) if names is not None else prunable_weights(model)
        self.params = {n: named[n] for n in self.names}
        self.masks = {n: torch.ones_like(p) for n, p in self.params.items()}

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    def sparsity(self) -> float:
        """The fraction of tracked weights pruned."""
        return 1.0 - sum(float(m.sum()) for m in self.masks.values()) / self.total

    @torch.no_grad()
    def prune_to(self, sparsity: float, saliency: dict[str, Tensor]) -> None:
        """Prune the lowest-``saliency`` alive weights until ``sparsity`` of all tracked weights are pruned."""
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        n_prune = int(round(sparsity * self.total)) - int(round(self.sparsity() * self.total))
        if n_prune <= 0:
            return
        flat = torch.cat([torch.where(self.masks[n].bool(), saliency[n].float(), torch.inf).flatten()
                          for n in self.names])
        idx = torch.topk(flat, n_prune, largest=False).indices
        new = torch.ones_like(flat)
        new[idx] = 0.0
        start = 0
        for n in self.names:
            k = self.masks[n].numel()
            self.masks[n] *= new[start : start + k].view_as(self.masks[n])
            start += k
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights."""
        for n, p in self.params.items():
            p.mul_(self.masks[n])
