"""``deconv``: deconvolutional top-down feedback from each stage to the input of the stage below it.

At step ``t + 1`` the input of stage ``i`` receives a top-down signal computed by a transposed convolution
(a "deconvolution", Zeiler et al. 2010; the learned upsampling of Long et al. 2015 and Noh et al. 2015) of
what stage ``i + 1`` produced at step ``t``:

.. math::

    \\tilde h_i^{(t+1)} = \\mathrm{ConvT}_i\\big(y_{i+1}^{(t)}\\big), \\qquad
    \\text{add:}\\; x_i \\leftarrow x_i + \\tilde h_i, \\qquad
    \\text{gain:}\\; x_i \\leftarrow x_i \\odot \\big(1 + \\tanh \\tilde h_i\\big)

where ``y_{i+1}`` is the output of stage ``i + 1`` and ``x_i`` the bottom-up input of stage ``i``. So the loop
closes over two stages: what stage ``i + 1`` concluded from stage ``i``'s output is sent back to where stage ``i``
reads its input. The top stage gets no signal. This is the notes' idea of "deconvolved feedback to earlier layers"
(reference/notes.txt), in the spirit of the top-down pathways of Shrivastava et al. (TDM, 2016) and of the
generative feedback of Huang et al. (CNN-F, 2020), but with free (untied) weights.

Combination modes:

- ``add`` (default): the signal is added to the bottom-up input, a residual top-down bias;
- ``gain``: multiplicative modulation ``1 + tanh``, bounded in (0, 2): feedback can amplify or suppress bottom-up
  activity but cannot create activity where there is none (the "modulatory, not driving" role of cortical
  feedback).

The transposed convolution for a source of spatial size ``S`` and a target of size ``D >= S`` has stride
``s = D // S`` and kernel ``k = D - (S - 1) s`` (so the output is exactly ``D``, with ``k >= s``: every target
position is covered). Vector-shaped stage outputs (B, C) are treated as (B, C, 1, 1); a vector-shaped target gets a
linear map. Weights start at zero (``zero_init=True``), so an untrained feedback net equals its backbone and learns
to depart from it.

Shapes: ``feats[i]`` (B, C_i, H_i, W_i) or (B, C_i) -> ``topdown[i]`` with the shape of stage ``i``'s input.

Example:
    >>> import torch
    >>> from feedback.core import StageShapes
    >>> shapes = StageShapes(inputs=((3, 32, 32), (16, 16, 16)), outputs=((16, 16, 16), (32, 8, 8)), num_classes=10)
    >>> fb = DeconvFeedback(shapes=shapes, combine="gain")
    >>> td, _, _ = fb([torch.randn(2, 16, 16, 16), torch.randn(2, 32, 8, 8)], torch.randn(2, 10), None)
    >>> td[0].shape, td[1]
    (torch.Size([2, 3, 32, 32]), None)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .core import Feedback, StageShapes, register_feedback

__all__ = ["DeconvFeedback", "deconv_geometry"]

COMBINE_MODES = ("add", "gain")


def deconv_geometry(source: int, target: int) -> tuple[int, int]:
    """Stride and kernel of a padding-free transposed convolution mapping size ``source`` to exactly ``target``."""
    if target < source:
        raise ValueError(f"deconv feedback upsamples: target size {target} is smaller than source size {source}")
    stride = target if source == 1 else target // source
    kernel = target - (source - 1) * stride
    return stride, kernel


class _TopDown(nn.Module):
    """One top-down map from a stage output shape to a stage input shape."""

    def __init__(self, source: tuple[int, ...], target: tuple[int, ...], zero_init: bool) -> None:
        super().__init__()
        self.source, self.target = source, target
        if len(target) == 1:  # vector target: linear map from the flattened source
            self.op: nn.Module = nn.Linear(math.prod(source), target[0])
        elif len(target) == 3:
            c_s = source[0]
            h_s, w_s = (source[1], source[2]) if len(source) == 3 else (1, 1)
            (sh, kh), (sw, kw) = deconv_geometry(h_s, target[1]), deconv_geometry(w_s, target[2])
            self.op = nn.ConvTranspose2d(c_s, target[0], kernel_size=(kh, kw), stride=(sh, sw))
        else:
            raise ValueError(f"deconv feedback supports (C,) and (C, H, W) stage inputs, got {target}")
        if zero_init:
            nn.init.zeros_(self.op.weight)
            nn.init.zeros_(self.op.bias)

    def forward(self, y: Tensor) -> Tensor:
        if len(self.target) == 1:
            return self.op(y.flatten(1))
        if y.dim() == 2:
            y = y[:, :, None, None]
        return self.op(y)


@register_feedback("deconv")
class DeconvFeedback(Feedback):
    """Transposed-convolution feedback from stage ``i + 1``'s output to stage ``i``'s input.

    Args:
        shapes: the backbone's stage shapes.
        combine: ``"add"`` (x + td) or ``"gain"`` (x * (1 + tanh td)).
        zero_init: start the transposed convolutions at zero (the feedback net starts as its backbone).
    """

    def __init__(self, *, shapes: StageShapes, combine: str = "add", zero_init: bool = True) -> None:
        super().__init__(shapes=shapes)
        if combine not in COMBINE_MODES:
            raise ValueError(f"unknown combine mode '{combine}'; choose from: {', '.join(COMBINE_MODES)}")
        self.mode = combine
        self.maps = nn.ModuleList(
            _TopDown(shapes.outputs[i + 1], shapes.inputs[i], zero_init) for i in range(shapes.num_stages - 1)
        )

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        if self.mode == "add":
            return h + topdown
        return h * (1.0 + torch.tanh(topdown))

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        topdown: list[Tensor | None] = [m(feats[i + 1]) for i, m in enumerate(self.maps)]
        return topdown + [None], state, {}
