"""``tdm``: a top-down modulation pathway over the backbone's stages (Shrivastava, Sukthankar, Malik, Gupta).

Reference: A. Shrivastava, R. Sukthankar, J. Malik, A. Gupta, "Beyond Skip Connections: Top-Down Modulation for
Object Detection", arXiv 1612.06851 (2016/2017). A top-down network runs beside the bottom-up one, connected to it
by lateral modules. Going down from the top stage, each TDM unit takes the top-down features from above and the
lateral (bottom-up) features of its stage:

.. math::

    T_{L-1} = C_{L-1}, \\qquad
    T_{i+1,i} = \\mathrm{Up}\\big(\\mathrm{ReLU}(\\mathrm{conv}_{3\\times3}(T_{i+1}))\\big), \\qquad
    L_i = \\mathrm{ReLU}(\\mathrm{conv}_{3\\times3}(C_i)), \\qquad
    T_i = \\mathrm{ReLU}\\big(\\mathrm{conv}_{1\\times1}([T_{i+1,i}, L_i])\\big)

where ``C_i`` is stage ``i``'s output (``feats[i]``) and ``Up`` resizes to ``C_i``'s resolution (none where they
already match). The concatenation followed by a learned 1x1 convolution lets top-down context *select* low-level
features (the "modulation") instead of adding them as a skip connection would; ``T_i`` feeds the next lower unit.
In the paper the detector (Faster R-CNN) reads the finest ``T``, and training adds one (lateral, top-down) pair at a
time, from the top, fine-tuning after each.

**In the feedback loop** (classification now): ``T_i`` has the resolution of stage ``i``'s output, which is stage
``i + 1``'s input; a 1x1 projection ``M_i`` (zero at initialisation with ``zero_init=True``, so the untrained net
is its backbone) turns it into the top-down signal of that input at the next step,

.. math::

    \\text{add:}\\; x_{i+1} \\leftarrow x_{i+1} + M_i T_i^{(t)}, \\qquad
    \\text{gain:}\\; x_{i+1} \\leftarrow x_{i+1} \\odot \\big(1 + \\tanh M_i T_i^{(t)}\\big).

So the top stage's input receives context computed from the top stage itself and everything below, and stage 0 (whose
input, the stem output, is not among the stage outputs a kind sees) receives none. ``levels=k`` keeps only the top
``k`` TDM units (stages ``L-2 .. L-1-k`` get lateral modules; the inputs of stages ``L-1 .. L-k`` are modulated):
the paper's stage-by-stage addition schedule is ``levels=1``, then :meth:`TDMFeedback.grow` (one more pair below;
with ``zero_init`` the grown net computes exactly what it did before), fine-tuning after each.

**Dense tasks later**: :meth:`TDMFeedback.pathway` returns every ``T_i``; a segmentation or detection head reads the
finest one (``pathway(feats)[fb.lowest]``, at stage ``lowest``'s stride), as the paper's detector reads the finest
``T`` output, while the loop's modulation refines the bottom-up features over steps.

Choices where the paper is silent (documented): the width of every ``L_i``, ``T_{i+1,i}`` and ``T_i`` is ``width``
(default: stage ``i``'s channel count; the paper picks widths per backbone); ``Up`` is nearest-neighbour to the exact
lateral size (the paper up-samples x2 where resolutions differ; LeNet-5's 28/14/10/5/1 sizes are not powers of two); vector stage outputs
(B, C) are treated as (B, C, 1, 1) maps; the top unit reads ``C_{L-1}`` directly.

Shapes: ``feats[i]`` (B, C_i, H_i, W_i) or (B, C_i) -> ``topdown[i + 1]`` with stage ``i + 1``'s input shape.

Example:
    >>> import torch
    >>> from feedback.core import StageShapes
    >>> shapes = StageShapes(inputs=((8, 16, 16), (8, 16, 16), (16, 8, 8)), outputs=((8, 16, 16), (16, 8, 8), (32, 4, 4)),
    ...                      num_classes=10)
    >>> fb = TDMFeedback(shapes=shapes, levels=1)
    >>> feats = [torch.rand(2, *s) for s in shapes.outputs]
    >>> td, _, _ = fb(feats, torch.randn(2, 10), None)
    >>> [None if t is None else tuple(t.shape) for t in td]
    [None, None, (2, 16, 8, 8)]
    >>> _ = fb.grow()  # the paper's schedule: one more (lateral, top-down) pair
    >>> [None if t is None else tuple(t.shape) for t in fb.pathway(feats)]
    [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .core import Feedback, StageShapes, register_feedback

__all__ = ["TDMFeedback", "TDMUnit"]

COMBINE_MODES = ("add", "gain")


def _as_map(x: Tensor) -> Tensor:
    return x[:, :, None, None] if x.dim() == 2 else x


class TDMUnit(nn.Module):
    """One TDM unit at stage ``i``: lateral ``L_i``, top-down ``T_{i+1,i}``, combination ``T_i`` and projection ``M_i``.

    Args:
        lateral_channels: channels of ``C_i`` (stage ``i``'s output).
        topdown_channels: channels of ``T_{i+1}`` (or of ``C_{L-1}`` for the top unit).
        width: channels of ``L_i``, ``T_{i+1,i}`` and ``T_i``.
        target: shape of stage ``i + 1``'s input (what ``M_i`` produces).
        zero_init: start ``M_i`` at zero.

    Shapes: ``(T_{i+1} (B, c_t, h, w), C_i (B, c_l, H, W)) -> (T_i (B, width, H, W), signal with shape target)``.
    """

    def __init__(
        self, *, lateral_channels: int, topdown_channels: int, width: int, target: tuple[int, ...], zero_init: bool
    ) -> None:
        super().__init__()
        self.target = tuple(target)
        self.lateral = nn.Conv2d(lateral_channels, width, 3, padding=1)
        self.topdown = nn.Conv2d(topdown_channels, width, 3, padding=1)
        self.out = nn.Conv2d(2 * width, width, 1)
        self.modulation = nn.Conv2d(width, target[0], 1)
        if zero_init:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, t_above: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        c = _as_map(c)
        td = F.relu(self.topdown(_as_map(t_above)))
        if td.shape[-2:] != c.shape[-2:]:
            td = F.interpolate(td, size=c.shape[-2:], mode="nearest")
        t = F.relu(self.out(torch.cat([td, F.relu(self.lateral(c))], dim=1)))
        signal = self.modulation(t)
        if len(self.target) == 1:
            signal = signal.flatten(1)
        return t, signal


@register_feedback("tdm")
class TDMFeedback(Feedback):
    """Top-down modulation: a TDM pathway over the stages whose outputs modulate the stage inputs at the next step.

    Args:
        shapes: the backbone's stage shapes (at least 2 stages).
        levels: number of TDM units from the top (1 .. L-1; ``None``: all L-1).
        width: channels of every unit (``None``: each unit uses its stage's channel count).
        combine: ``"add"`` (x + M T) or ``"gain"`` (x * (1 + tanh M T)).
        zero_init: start the modulation projections ``M_i`` at zero (the net starts as its backbone).
    """

    def __init__(
        self,
        *,
        shapes: StageShapes,
        levels: int | None = None,
        width: int | None = None,
        combine: str = "add",
        zero_init: bool = True,
    ) -> None:
        super().__init__(shapes=shapes)
        n = shapes.num_stages
        if n < 2:
            raise ValueError(f"tdm feedback needs at least 2 stages, got {n}")
        if levels is None:
            levels = n - 1
        if not isinstance(levels, int) or not 1 <= levels <= n - 1:
            raise ValueError(f"levels must be an integer in 1..{n - 1} (stages - 1), got {levels!r}")
        if combine not in COMBINE_MODES:
            raise ValueError(f"unknown combine mode '{combine}'; choose from: {', '.join(COMBINE_MODES)}")
        if width is not None and (not isinstance(width, int) or width < 1):
            raise ValueError(f"width must be a positive integer or None, got {width!r}")
        for s in shapes.inputs + shapes.outputs:
            if len(s) not in (1, 3):
                raise ValueError(f"tdm feedback supports (C,) and (C, H, W) stage shapes, got {s}")
        self.mode = combine
        self.width = width
        self.zero_init = zero_init
        self.units = nn.ModuleList()  # units[k] sits at stage n - 2 - k (top first)
        for _ in range(levels):
            self.grow()

    @property
    def levels(self) -> int:
        return len(self.units)

    @property
    def lowest(self) -> int:
        """The lowest stage with a TDM unit."""
        return self.shapes.num_stages - 1 - self.levels

    def grow(self) -> TDMUnit:
        """Add the next (lateral, top-down) pair below the current ones (the paper's progressive schedule).

        The new unit's parameters are new: build the optimizer again after growing. Returns the new unit.
        """
        n, i = self.shapes.num_stages, self.shapes.num_stages - 2 - len(self.units)
        if i < 0:
            raise ValueError(f"tdm feedback already has all {n - 1} units of a {n}-stage backbone")
        above = self.shapes.outputs[n - 1][0] if i == n - 2 else self.units[-1].out.out_channels
        c_i = self.shapes.outputs[i][0]
        p = next(self.parameters(), None)
        unit = TDMUnit(
            lateral_channels=c_i,
            topdown_channels=above,
            width=self.width or c_i,
            target=self.shapes.inputs[i + 1],
            zero_init=self.zero_init,
        )
        if p is not None:
            unit.to(device=p.device, dtype=p.dtype)
        self.units.append(unit)
        return unit

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        if self.mode == "add":
            return h + topdown
        return h * (1.0 + torch.tanh(topdown))

    def _run(self, feats: list[Tensor]) -> tuple[list[Tensor | None], list[Tensor | None]]:
        n = len(feats)
        ts: list[Tensor | None] = [None] * n
        signals: list[Tensor | None] = [None] * n
        t = ts[n - 1] = _as_map(feats[n - 1])
        for k, unit in enumerate(self.units):
            i = n - 2 - k
            t, signals[i + 1] = unit(t, feats[i])
            ts[i] = t
        return ts, signals

    def pathway(self, feats: list[Tensor]) -> list[Tensor | None]:
        """The top-down features ``T_i`` (B, width_i, H_i, W_i) for stages ``lowest .. L-1`` (``T_{L-1} = C_{L-1}``
        as a map), ``None`` below ``lowest``. Dense heads read the finest, ``pathway(feats)[self.lowest]``."""
        return self._run(feats)[0]

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        return self._run(feats)[1], state, {}

    def extra_repr(self) -> str:
        return f"levels={self.levels}, width={self.width}, combine={self.mode}, zero_init={self.zero_init}"
