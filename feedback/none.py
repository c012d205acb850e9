"""``none``: no top-down signal. With any ``steps`` the network repeats the same bottom-up pass.

It is the control condition of every ablation: ``FeedbackNet(backbone, "none", steps=T)`` costs T passes and
computes exactly the backbone (every step returns the same logits).

Example:
    >>> import torch
    >>> from feedback.core import StageShapes
    >>> fb = NoFeedback(shapes=StageShapes(inputs=((3, 8, 8),), outputs=((4, 4, 4),), num_classes=10))
    >>> fb([torch.zeros(2, 4, 4, 4)], torch.zeros(2, 10), None)[0]
    [None]
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .core import Feedback, register_feedback

__all__ = ["NoFeedback"]


@register_feedback("none")
class NoFeedback(Feedback):
    """The identity feedback kind: every top-down signal is ``None`` and no parameters are added."""

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        return [None] * len(feats), state, {}
