"""What a feedback kind costs: extra parameters and extra compute per step.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one eval-mode forward pass of a single
input (multiply-adds count as 2 FLOPs; ops the counter does not know, such as element-wise additions, count 0).

Example:
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Tiny(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.head = nn.Identity(), nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    ...         self.stages = nn.ModuleList([nn.Conv2d(1, 4, 3, 2, 1), nn.Conv2d(4, 8, 3, 2, 1)])
    ...         self.input_size = (1, 16, 16)
    >>> c = feedback_cost(FeedbackNet(Tiny(), "deconv", steps=2), (1, 16, 16))
    >>> c["feedback_params"] > 0 and c["flops"] > 2 * c["backbone_flops"] - 1
    True
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from .core import FeedbackNet, staged_forward

__all__ = ["feedback_cost", "plain_cost"]


def _count(params) -> int:
    return sum(p.numel() for p in params)


@torch.no_grad()
def _flops(fn, *args) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return int(counter.get_total_flops())


def feedback_cost(net: FeedbackNet, input_size: Sequence[int]) -> dict[str, int]:
    """Parameters and FLOPs of ``net`` against its backbone, for one input of size (C, H, W).

    Returns:
        dict with ``backbone_params``, ``feedback_params`` (added by the kind), ``backbone_flops`` (one plain
        forward), ``flops`` (the whole T-step forward) and ``steps``.
    """
    was_training = net.training
    net.eval()
    try:
        p = next(net.parameters(), None)
        x = torch.zeros(1, *input_size, device=p.device if p is not None else None)
        return {
            "backbone_params": _count(net.backbone.parameters()),
            "feedback_params": _count(net.feedback.parameters()),
            "backbone_flops": _flops(staged_forward, net.backbone, x),
            "flops": _flops(net, x),
            "steps": net.steps,
        }
    finally:
        net.train(was_training)


def plain_cost(net: torch.nn.Module, example: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, int]:
    """:func:`feedback_cost`'s fields for a :class:`~feedback.plain.PlainNet`, on one example input (no batch dim
    removed: pass a batch of one). Without feedback, ``flops == backbone_flops`` and ``feedback_params == 0``."""
    was_training = net.training
    net.eval()
    try:
        flops = _flops(net, example)
        return {"backbone_params": _count(net.parameters()), "feedback_params": 0, "backbone_flops": flops,
                "flops": flops, "steps": 1}
    finally:
        net.train(was_training)
