"""``cognitive``: feature selection by a class hypothesis (Wang, Zhang, Song and Zhang 2014).

Reference: Q. Wang, J. Zhang, S. Song, Z. Zhang, "Attentional Neural Network: Feature Selection Using Cognitive
Feedback", NeurIPS 2014. A *cognitive bias* ``b`` (the class the network expects, "I expect a 3") produces a gating
vector on hidden units, ``g = \\sigma(U b)``, that selects or de-selects bottom-up features multiplicatively,
``\\hat h = g \\odot h``; a classifier reads the gated (re-generated) input, its decision becomes the next bias,
and the loop repeats, every iteration re-consulting the raw input.

**On a Staged backbone.** After step ``t`` the network's class hypothesis ``p^{(t)}`` (from the logits) sets one
gate per unit (or per channel) of every stage input, and step ``t + 1`` runs on the gated inputs:

.. math::

    p^{(t)} = \\mathrm{softmax}(\\ell^{(t)}) \\;\\text{or}\\; \\sigma(\\ell^{(t)}) \\;\\text{or}\\;
    \\mathrm{onehot}(\\arg\\max \\ell^{(t)}), \\qquad
    g_i^{(t+1)} = \\sigma\\big(U_i\\, p^{(t)} + c_i\\big) \\in [0, 1], \\qquad
    x_i \\leftarrow g_i^{(t+1)} \\odot x_i

where ``x_i`` is the bottom-up input of stage ``i`` and ``U_i`` a learned map (K classes -> the gate shape). With
``hypothesis="top1"`` the bias is the paper's binary class prior (``U_i`` of a one-hot is the top-1 class's
embedding: a column of ``U_i``), with ``"softmax"`` its expectation under the network's belief (differentiable, the
default), with ``"sigmoid"`` per-class beliefs for multi-label data.

Choices where the paper is silent or that the setting changes (documented, tested):

- *Where the gates act*: the paper gates the hidden layer of one denoising auto-encoder; here every stage input (or
  the top ``levels`` of them) gets gates, one per channel (``gate="channel"``, broadcast over space: class-specific
  feature-map selection, the convolutional analogue) or one per unit (``gate="unit"``, C x H x W gates: the paper's
  per-unit form, also spatial).
- *Anti-hallucination*: the paper gates its class-conditioned reconstruction with the raw input so that a wrong bias
  cannot invent content. Here gates in ``[0, 1]`` multiply bottom-up activity, so feedback can only suppress what
  the input drives, never create it, and every step re-runs the bottom-up pass from the (stem of the) raw input.
- *Training*: end to end with the backbone (the paper trains the features first, then ``U`` and the classifier).
  The gates' bias ``c_i`` starts at ``open_bias`` (default 2: ``sigma(2) = 0.88``), so an untrained gate passes most
  activity and the first feedback step starts near the backbone.
- The paper's iterative separation of overlaid digits (bias each candidate class in turn) is a use of this kind with
  a chosen ``b``; it is not part of the classification loop.

A backbone whose stages carry ``k`` copies of the batch stacked along the batch dimension (a Siamese pair stem:
rows ``[jB, (j+1)B)`` are copy ``j``) while its logits are (B, K) gets each sample's gates on every copy.

Shapes: ``logits`` (B, K) -> ``topdown[i]`` gates of shape (B, C_i, 1, 1) (channel), (B, *input_i) (unit), or
(B, C_i) for a vector input; ``None`` for stages without gates. State: the hypothesis ``p`` (B, K) of the last step.
Stage outputs are not read, so (B, C, H, W) and (B, C) stages are both served.

Example:
    >>> import torch
    >>> from feedback.core import StageShapes
    >>> shapes = StageShapes(inputs=((1, 32, 32), (6, 28, 28), (120,)), outputs=((6, 28, 28), (120,), (84,)),
    ...                      num_classes=10)
    >>> fb = CognitiveFeedback(shapes=shapes, levels=2)
    >>> td, p, _ = fb([torch.rand(2, *s) for s in shapes.outputs], torch.randn(2, 10), None)
    >>> td[0], tuple(td[1].shape), tuple(td[2].shape), p.shape
    (None, (2, 6, 1, 1), (2, 120), torch.Size([2, 10]))
    >>> bool(((td[1] >= 0) & (td[1] <= 1)).all())
    True
    >>> fb.combine(2, torch.ones(2, 120), td[2]).shape
    torch.Size([2, 120])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .core import Feedback, StageShapes, register_feedback

__all__ = ["CognitiveFeedback"]

HYPOTHESES = ("softmax", "sigmoid", "top1")
GATES = ("channel", "unit")


@register_feedback("cognitive")
class CognitiveFeedback(Feedback):
    """Cognitive feedback: gates ``sigmoid(U_i p + c_i)`` from the class hypothesis ``p`` multiply stage inputs.

    Args:
        shapes: the backbone's stage shapes.
        hypothesis: ``"softmax"`` of the logits (default), ``"sigmoid"`` (multi-label beliefs) or ``"top1"`` (the
            one-hot arg-max: a class prior, as in the paper).
        gate: ``"channel"`` (one gate per channel of a stage input) or ``"unit"`` (one per unit, C x H x W).
        levels: gate only the inputs of the top ``levels`` stages (``None``: every stage).
        open_bias: initial gate bias ``c_i`` (gates start at ``sigmoid(open_bias)``).
    """

    def __init__(
        self,
        *,
        shapes: StageShapes,
        hypothesis: str = "softmax",
        gate: str = "channel",
        levels: int | None = None,
        open_bias: float = 2.0,
    ) -> None:
        super().__init__(shapes=shapes)
        if hypothesis not in HYPOTHESES:
            raise ValueError(f"unknown hypothesis '{hypothesis}'; choose from: {', '.join(HYPOTHESES)}")
        if gate not in GATES:
            raise ValueError(f"unknown gate '{gate}'; choose from: {', '.join(GATES)}")
        n = shapes.num_stages
        if levels is None:
            levels = n
        if not isinstance(levels, int) or not 1 <= levels <= n:
            raise ValueError(f"levels must be an integer in 1..{n} (the number of stages), got {levels!r}")
        self.hypothesis = hypothesis
        self.gate = gate
        self.levels = levels
        self.first = n - levels
        self.gate_shapes: list[tuple[int, ...]] = []
        maps = []
        for shape in shapes.inputs[self.first :]:
            if len(shape) not in (1, 3):
                raise ValueError(f"cognitive feedback supports (C,) and (C, H, W) stage inputs, got {shape}")
            g = (shape[0], 1, 1) if (gate == "channel" and len(shape) == 3) else tuple(shape)
            self.gate_shapes.append(g)
            lin = nn.Linear(shapes.num_classes, math.prod(g))
            nn.init.constant_(lin.bias, open_bias)
            maps.append(lin)
        self.maps = nn.ModuleList(maps)

    def class_hypothesis(self, logits: Tensor) -> Tensor:
        """The bias ``p`` (B, K) from the logits (at least float32: half-precision logits are upcast, float64 kept)."""
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if self.hypothesis == "softmax":
            return torch.softmax(logits, dim=-1)
        if self.hypothesis == "sigmoid":
            return torch.sigmoid(logits)
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        if h.shape[0] != topdown.shape[0]:  # k copies of the batch stacked (Siamese pairs): each copy, same gates
            topdown = topdown.repeat(h.shape[0] // topdown.shape[0], *([1] * (topdown.dim() - 1)))
        return h * topdown

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        p = self.class_hypothesis(logits)
        gates = [torch.sigmoid(m(p)).view(p.shape[0], *g) for m, g in zip(self.maps, self.gate_shapes)]
        return [None] * self.first + gates, p, {}

    def extra_repr(self) -> str:
        return f"hypothesis={self.hypothesis}, gate={self.gate}, levels={self.levels}"
