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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ClassifyTask", "TASKS", "create_task"]


class ClassifyTask:
    """Loss and metrics for single- or multi-label classification."""

    metric_names = ("acc", "hit")

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


TASKS = {"classify": ClassifyTask}


def create_task(name: str, *, multilabel: bool, multilabel_loss: str = "softmax") -> ClassifyTask:
    return TASKS[name](multilabel=multilabel, multilabel_loss=multilabel_loss)
