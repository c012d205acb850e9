"""``excitation``: the excitation-backprop map of the predicted class at step t gates the stage inputs at step t+1.

Attention as feedback (DESIGN.md section 3.2, "readout-driven attention"): after step ``t`` the predicted class
``k = argmax logits`` is traced back through the network by excitation backprop (Zhang, Lin, Brandt, Shen,
Sclaroff, "Top-down neural attention by excitation backprop", ECCV 2016 / IJCV 2018; the marginal winning
probability, :mod:`feedback.readout.excitation`), down to the input of every stage. The channel sum of the winning
probability at stage ``i``'s input, ``P_i`` (B, 1, H_i, W_i), normalised per image to a maximum of 1, becomes a
multiplicative gain on that input at step ``t + 1``:

.. math::

    \\hat P_i = \\frac{\\max(P_i, 0)}{\\max_{u,v} P_i(u, v)}, \\qquad
    x_i^{(t+1)} \\leftarrow x_i^{(t+1)} \\odot \\big(1 - \\alpha + \\alpha \\hat P_i\\big)

so the evidence for the current hypothesis keeps its full strength and everything else is attenuated by up to
``alpha`` (``strength``). A stage whose input is a vector (B, C) gets a gain per unit. The gain is a routing signal
and is detached (no gradient flows through the map). This kind adds **no parameters**.

How the map is computed inside the forward pass: a feedback kind never sees the backbone's modules, so it records
the step it watches: ``combine(0, ...)`` starts a record (:mod:`feedback.readout._trace`), the stage input becomes a
traced tensor whose ops are logged as they run (values and autograd graph unchanged), and ``forward`` replays the
logged ops from the logits down to the stage inputs under the excitation-backprop rules. No global state (the
record lives on the step's tensors), no hooks, no module state, train mode included (batch norm is replayed with
the statistics the step used and never updates a buffer). Cost per step: one extra forward and backward pass of the
stages and the head. At ``steps=1`` the kind is never called; the record of the single step is dropped unread (the
outputs are then :class:`~feedback.readout._trace.TracedTensor` instances with the backbone's exact values).
Limitation: rule-based readouts (:mod:`feedback.readout`: EB, c-MWP, WTA, guided backprop, deconvnet) of a
``FeedbackNet`` running this kind raise ``RuntimeError`` (the two rule passes would nest); gradient, gradient x input,
Grad-CAM and occlusion work, and any readout works on ``net.backbone``.

Shapes: ``feats[i]`` (B, C_i, H_i, W_i) -> ``topdown[i]`` (B, 1, H_i, W_i) gains on stage ``i``'s input
(the stage-input shapes of ``shapes``).

Example:
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Tiny(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem = nn.Conv2d(1, 4, 3, padding=1)
    ...         self.stages = nn.ModuleList([nn.Sequential(nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU())])
    ...         self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    ...         self.input_size = (1, 8, 8)
    >>> out = FeedbackNet(Tiny(), "excitation", steps=2)(torch.rand(2, 1, 8, 8))
    >>> len(out.per_step), out.logits.shape
    (2, torch.Size([2, 3]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .core import Feedback, StageShapes, register_feedback
from .readout._rules import Rules, rule_mode_active
from .readout._trace import Trace, replay, trace_of

__all__ = ["ExcitationFeedback", "attention_gain", "traced_combine"]


def traced_combine(i: int, h: Tensor, gain: Tensor | None) -> Tensor:
    """Apply the gain to stage ``i``'s input and record it as a tap (``i = 0`` starts a new record)."""
    if rule_mode_active():
        raise RuntimeError("a rule-based readout (excitation, contrastive, wta, guided_backprop, deconvnet) cannot run "
                           "through the 'excitation'/'wta' feedback kinds, which replay each step under rules of "
                           "their own; read out net.backbone, or use gradient, gradient_x_input, gradcam or occlusion")
    if gain is not None:
        h = h * gain.to(h.dtype)
    if i == 0:
        return Trace().input(h, tap=0)
    tr = trace_of(h)
    return tr.tap(h, tap=i) if tr is not None else h


def attention_gain(signal: Tensor | None, strength: float, *, binary: bool = False) -> Tensor | None:
    """``1 - strength + strength * m`` with ``m`` the per-image normalised map of ``signal`` (a stage input's shape).

    (B, C, H, W) signals give (B, 1, H, W) gains (channel sum; ``binary``: any channel gated); (B, C) signals a
    gain per unit.
    """
    if signal is None:
        return None
    if binary:
        m = (signal > 0).float()
        m = m.amax(1, keepdim=True) if signal.dim() > 2 else m
    else:
        m = signal.sum(1, keepdim=True) if signal.dim() > 2 else signal
        m = m.clamp(min=0)
        top = m.flatten(1).amax(1).view(-1, *([1] * (m.dim() - 1)))
        m = torch.where(top > 0, m / top.clamp(min=1e-30), torch.zeros_like(m))
    return (1.0 - strength) + strength * m


@register_feedback("excitation")
class ExcitationFeedback(Feedback):
    """Excitation-backprop attention of the predicted class, as a gain on every stage input.

    Args:
        shapes: the backbone's stage shapes.
        strength: ``alpha`` in [0, 1]: how much of a stage input outside the attended evidence is suppressed.
    """

    def __init__(self, *, shapes: StageShapes, strength: float = 0.5) -> None:
        super().__init__(shapes=shapes)
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = float(strength)

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        return traced_combine(i, h, topdown)

    def rules(self) -> Rules:
        return Rules("excitation")

    def _gain(self, signal: Tensor | None) -> Tensor | None:
        return attention_gain(signal, self.strength)

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        if trace_of(logits) is None:
            raise RuntimeError(f"the '{self.kind}' feedback reads the step recorded by its combine(); run it through "
                               "FeedbackNet (the logits of this step are not traced)")
        with torch.no_grad():
            target = logits.detach().argmax(-1)
        signals = replay(logits, self.rules(), target=target)
        topdown = [self._gain(signals.get(i)) for i in range(len(feats))]
        return topdown, state, {}

    def extra_repr(self) -> str:
        return f"strength={self.strength}"
