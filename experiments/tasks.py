"""Tasks: each output kind owns its loss and its metrics.

``classify`` covers single-label data (int64 labels (B,): cross-entropy, top-1 accuracy) and multi-label data
(multi-hot float labels (B, K)). The multi-label loss is either ``softmax``, the cross-entropy between the softmax
and the multi-hot target normalised to sum to one (Mahajan et al. 2018, "Exploring the limits of weakly
supervised pretraining", which found it better than per-class sigmoids; it pairs naturally with reading the
top-n classes), or ``bce``, binary cross-entropy per class. Two scene-level accuracies:

- ``acc``: the scene is read correctly, i.e. the top-n predicted classes are exactly the n classes present
  (n = number of digits in the scene; "set accuracy");
- ``hit``: the top-1 predicted class is one of the classes present.

For single-label data ``acc`` is top-1 accuracy and ``hit`` equals it.

``tokens`` scores per-position predictions (logits ``(B, T, K)``, targets ``(B, T)``): cross-entropy over the
positions whose target is not ``-100`` (the copying task's recall positions, every node of a graph, every sample
of a waveform). Per sample: ``acc`` (the share of its scored positions predicted right), ``seq_acc`` (all of them
right) and ``nll`` (mean negative log-likelihood in nats per scored position).

``regress`` scores real-valued outputs against targets of the same shape: mean squared error; ``mse`` per sample
(mean over its elements) and ``psnr = -10 log10(mean mse)`` over the test set, for signals in [0, 1] (the
standard image-fitting and novel-view measure of SIREN and NeRF).

Every task has a ``primary`` metric (the one tables show) and a ``step_metric`` reported after every step as
``<step_metric>_step<t>``; :meth:`finalize` derives set-level metrics (PSNR) from the averaged per-sample ones.
The contract for datasets and models is in docs/tasks.md.

Example:
    >>> import torch
    >>> task = create_task("tokens")
    >>> logits = torch.zeros(2, 3, 4); logits[..., 1] = 1.0
    >>> target = torch.tensor([[1, -100, 1], [1, 2, -100]])
    >>> {k: v.tolist() for k, v in task.correct(logits, target).items() if k != "nll"}
    {'acc': [1.0, 0.5], 'seq_acc': [1.0, 0.0]}
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ClassifyTask", "RegressTask", "TASKS", "TokensTask", "create_task"]

IGNORE = -100  # a target position that is not scored (tokens)


class ClassifyTask:
    """Loss and metrics for single- or multi-label classification."""

    metric_names = ("acc", "hit")
    primary = "acc"
    step_metric = "acc"

    def __init__(self, *, multilabel: bool, multilabel_loss: str = "softmax") -> None:
        if multilabel_loss not in ("softmax", "bce"):
            raise ValueError(f"unknown multilabel_loss '{multilabel_loss}'; choose from: softmax, bce")
        self.multilabel = multilabel
        self.multilabel_loss = multilabel_loss

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if not self.multilabel:
            return F.cross_entropy(logits, target)
        target = target.float()
        if self.multilabel_loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target / target.sum(-1, keepdim=True).clamp_min(1.0))

    @torch.no_grad()
    def correct(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-sample 0/1 scores (B,) for each metric."""
        logits = logits.float()
        if not self.multilabel:
            ok = (logits.argmax(-1) == target).float()
            return {"acc": ok, "hit": ok}
        n = target.sum(-1).long()  # digits per scene
        order = logits.argsort(-1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
        predicted = (ranks < n[:, None]).float()  # the top-n classes
        acc = (predicted == target).all(-1).float()
        hit = target.gather(-1, order[:, :1]).squeeze(-1).float()
        return {"acc": acc, "hit": hit}

    def finalize(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics


class TokensTask:
    """Cross-entropy and accuracy over the scored positions of per-position logits ``(B, T, K)``."""

    metric_names = ("acc", "seq_acc", "nll")
    primary = "acc"
    step_metric = "acc"

    def _check(self, logits: Tensor, target: Tensor) -> None:
        if logits.dim() != target.dim() + 1 or logits.shape[:-1] != target.shape:
            raise ValueError(f"tokens task: logits {tuple(logits.shape)} must be the targets' shape "
                             f"{tuple(target.shape)} plus a class dimension")

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        self._check(logits, target)
        return F.cross_entropy(logits.float().flatten(0, -2), target.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def correct(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        self._check(logits, target)
        logits, b = logits.float(), target.shape[0]
        scored = (target != IGNORE).reshape(b, -1).float()
        n = scored.sum(-1).clamp_min(1.0)
        right = (logits.argmax(-1) == target).reshape(b, -1).float() * scored
        nll = F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE, reduction="none")
        return {"acc": right.sum(-1) / n, "seq_acc": (right.sum(-1) == scored.sum(-1)).float(),
                "nll": nll.reshape(b, -1).sum(-1) / n}

    def finalize(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics


class RegressTask:
    """Mean squared error; PSNR over the set for signals in [0, 1]."""

    metric_names = ("mse",)
    primary = "psnr"
    step_metric = "mse"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if output.shape != target.shape:
            raise ValueError(f"regress task: output {tuple(output.shape)} and target {tuple(target.shape)} differ")
        return F.mse_loss(output.float(), target.float())

    @torch.no_grad()
    def correct(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        err = (output.float() - target.float()).pow(2).reshape(target.shape[0], -1).mean(-1)
        return {"mse": err}

    def finalize(self, metrics: dict[str, float]) -> dict[str, float]:
        out = dict(metrics)
        for k, v in metrics.items():
            if k == "mse" or k.startswith("mse_step"):
                out["psnr" + k[3:]] = float(-10.0 * math.log10(max(v, 1e-12)))
        return out


# name -> task class, or "module:Class" for tasks in their own files (imported when first used)
TASKS: dict[str, Any] = {
    "classify": ClassifyTask,
    "tokens": TokensTask,
    "regress": RegressTask,
    "detect": "experiments.tasks_detect:DetectTask",
    "segment": "experiments.tasks_segment:SegmentTask",
    "caption": "experiments.tasks_caption:CaptionTask",
}


def create_task(name: str, *, multilabel: bool = False, multilabel_loss: str = "softmax") -> Any:
    """The task ``name`` (one of :data:`TASKS`: ``classify``, ``tokens``, ``regress``, ``detect``, ``segment``,
    ``caption``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    if name == "classify":
        return ClassifyTask(multilabel=multilabel, multilabel_loss=multilabel_loss)
    if multilabel:
        raise ValueError(f"task {name!r} does not take multi-label data")
    cls = TASKS[name]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls()
