r"""``deconv``: deconvolutional top-down feedback from higher stages to the inputs of lower stages.

Motivation. The project notes (``reference/notes.txt``, section "top-down feedback") describe one (untitled) entry as
"very similar to our idea - they have deconvolved feedback to earlier layers", with the criticism "feedback only goes
back a few layers". This kind is that idea in its plainest
learnable form: what a higher stage concluded at step ``t`` is mapped back, by a transposed convolution (a
"deconvolution": Zeiler et al. 2010, "Deconvolutional networks", CVPR; the learned upsampling of Long et al. 2015
and Noh et al. 2015), to where a lower stage reads its input at step ``t + 1``. ``targets="previous"`` closes the
loop over two neighbouring stages; ``targets="all"`` answers the complaint: every higher stage talks to every lower
one. The weights are free (untied), unlike the generative feedback of CNN-F (Huang et al. 2020, see
:mod:`feedback.generative`), and start at zero, so an untrained feedback net is its backbone.

Equations. Let ``y_j^{(t)}`` be the output of stage ``j`` at step ``t`` and ``x_i`` the bottom-up input of stage
``i`` (the stem output for ``i = 0``). The top-down signal for stage ``i`` at step ``t + 1`` is

.. math::

    r_i^{(t+1)} = \sum_{j \in S(i)} \mathrm{ConvT}_{j \to i}\big(y_j^{(t)}\big), \qquad
    S(i) = \{i + 1\} \;(\texttt{targets="previous"}), \quad S(i) = \{i + 1, \dots, L - 1\} \;(\texttt{"all"}),

and stage ``i`` reads :math:`\tilde x_i = c(x_i, r_i)` with the combination mode ``c``:

- ``add`` (default): :math:`\tilde x = x + r`, a driving top-down bias;
- ``gain``: :math:`\tilde x = x \odot (1 + \tanh r)`, a multiplicative gain in (0, 2): feedback amplifies or
  suppresses bottom-up activity but cannot create activity where there is none (the "modulatory, not driving" role
  of cortical feedback; 1 + tanh r = 2 sigmoid(2r), so this is also a sigmoid gate rescaled to be 1 at r = 0);
- ``gate``: :math:`\tilde x = x + a \odot r` with :math:`a = \sigma(u \odot x + v \odot r + b)`, a learned gate
  that decides per unit how much of the top-down signal enters, from *both* streams. ``u``, ``v``, ``b`` are
  per-channel parameters of stage ``i`` (shape ``(C_i,)``, initialised to 0, i.e. a = 1/2). This is the gated
  top-down connection of Chung et al. 2015 ("Gated Feedback Recurrent Neural Networks", ICML), whose gate from
  layer i+1 to layer i is :math:`\sigma(w\, h^{\mathrm{below}}_t + u\, h^{\mathrm{above}}_{t-1})`; **deviation:**
  theirs is one scalar per connection computed from all hidden states, ours is elementwise with per-channel
  weights (the elementwise form of an LSTM/GRU input gate), so the gate is a top-down attention map. Unlike a
  gate computed from ``r`` alone (which would just be another parameterisation of ``add``), it depends on the
  bottom-up input: feedback is admitted where the bottom-up evidence opens the gate.

All three modes return ``x`` exactly when ``r = 0``, so with ``zero_init=True`` (the default) the feedback net
equals its backbone at every step until training moves the transposed convolutions. The top stage gets no signal.

Geometry. ``ConvT_{j -> i}`` maps the shape of stage ``j``'s output ``(C_j, S_h, S_w)`` exactly to the shape of
stage ``i``'s input ``(C_i, D_h, D_w)`` with no padding: per spatial axis, stride ``s = D // S`` (``s = D`` when
``S = 1``) and kernel ``k = D - (S - 1) s``, so ``(S - 1) s + k = D`` and ``k >= s`` (every target position is
covered; :func:`deconv_geometry`). A vector stage output ``(C,)`` is treated as ``(C, 1, 1)``; a vector target
``(C_i,)`` gets a linear map from the flattened source; token stages ``(N, D)`` (a ViT) get the same linear map
``D_j -> D_i`` on every token (the 1x1 case), from tokens of the same count ``N`` or from a vector (sent to every
token). Parameters of one map: ``C_j C_i k_h k_w + C_i``; ``all`` has ``L (L - 1) / 2`` maps against ``L - 1``
for ``previous``; ``gate`` adds ``3 C_i`` per receiving stage.

Shapes: ``feats[j]`` (B, C_j, H_j, W_j), (B, N, D_j) or (B, C_j) -> ``topdown[i]`` with the shape of stage ``i``'s
input, for ``i < L - 1``; ``topdown[L - 1]`` is ``None``.

Example (a 3-stage toy net: with zero-initialised maps every step equals the backbone; then feedback acts):
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Toy(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.input_size = nn.Conv2d(1, 4, 3, padding=1), (1, 16, 16)
    ...         self.stages = nn.ModuleList([nn.Conv2d(4, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)])
    ...         self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 10))
    >>> net = FeedbackNet(Toy(), "deconv", steps=3, feedback_kwargs={"targets": "all", "combine": "gate"})
    >>> sorted(net.feedback.long_maps), [tuple(m.op.weight.shape) for m in net.feedback.maps]
    (['2_to_0'], [(8, 4, 4, 4), (8, 8, 4, 4)])
    >>> out = net(torch.randn(2, 1, 16, 16))
    >>> all(torch.equal(out.per_step[0], lg) for lg in out.per_step)  # zero-initialised: the backbone at every step
    True
    >>> _ = [nn.init.normal_(p, std=0.1) for p in net.feedback.parameters()]
    >>> out = net(torch.randn(2, 1, 16, 16)); torch.equal(out.per_step[0], out.per_step[2])
    False
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .core import Feedback, StageShapes, register_feedback

__all__ = ["COMBINE_MODES", "TARGETS", "DeconvFeedback", "deconv_geometry"]

COMBINE_MODES = ("add", "gain", "gate")
TARGETS = ("previous", "all")


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
        elif len(target) == 2:  # tokens (N, D): the same linear map on every token (a 1x1 "deconvolution")
            if not (len(source) == 1 or (len(source) == 2 and source[0] == target[0])):
                raise ValueError(f"deconv feedback maps tokens (N, D) only from tokens of the same count N or from "
                                 f"a vector, got source {source} for target {target}")
            self.op = nn.Linear(source[-1], target[1])
        elif len(target) == 3:
            c_s = source[0]
            h_s, w_s = (source[1], source[2]) if len(source) == 3 else (1, 1)
            (sh, kh), (sw, kw) = deconv_geometry(h_s, target[1]), deconv_geometry(w_s, target[2])
            self.op = nn.ConvTranspose2d(c_s, target[0], kernel_size=(kh, kw), stride=(sh, sw))
        else:
            raise ValueError(f"deconv feedback supports (C,), (N, D) and (C, H, W) stage inputs, got {target}")
        if zero_init:
            nn.init.zeros_(self.op.weight)
            nn.init.zeros_(self.op.bias)

    def forward(self, y: Tensor) -> Tensor:
        if len(self.target) == 1:
            return self.op(y.flatten(1))
        if len(self.target) == 2:  # a vector source reaches every token
            return self.op(y) if y.dim() == 3 else self.op(y)[:, None, :].expand(-1, self.target[0], -1)
        if y.dim() == 2:
            y = y[:, :, None, None]
        return self.op(y)


class _Gate(nn.Module):
    """The ``gate`` combination for one stage: ``x + sigmoid(u * x + v * r + b) * r``, per-channel u, v, b.

    The channel axis is the first of a stage input ``(C,)`` or ``(C, H, W)`` and the last of tokens ``(N, D)``.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        channels = shape[-1] if len(shape) == 2 else shape[0]
        self.view = (1, 1, channels) if len(shape) == 2 else (1, channels) + (1,) * (len(shape) - 1)
        self.u = nn.Parameter(torch.zeros(channels))
        self.v = nn.Parameter(torch.zeros(channels))
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, r: Tensor) -> Tensor:
        a = torch.sigmoid(self.u.view(self.view) * x + self.v.view(self.view) * r + self.b.view(self.view))
        return x + a * r


@register_feedback("deconv")
class DeconvFeedback(Feedback):
    """Transposed-convolution feedback from higher stages' outputs to lower stages' inputs.

    Args:
        shapes: the backbone's stage shapes.
        combine: ``"add"`` (x + r), ``"gain"`` (x * (1 + tanh r)) or ``"gate"`` (x + sigmoid(u x + v r + b) * r).
        targets: ``"previous"`` (stage i + 1 -> stage i, the default) or ``"all"`` (every stage j > i -> stage i,
            summed).
        zero_init: start the transposed convolutions at zero (the feedback net starts as its backbone).

    Attributes:
        maps: ``maps[i]`` is the map from stage ``i + 1``'s output to stage ``i``'s input.
        long_maps: with ``targets="all"``, ``long_maps["j_to_i"]`` for ``j > i + 1`` (empty otherwise).
        gates: with ``combine="gate"``, ``gates[i]`` holds stage ``i``'s ``u``, ``v``, ``b`` (empty otherwise).
    """

    def __init__(
        self, *, shapes: StageShapes, combine: str = "add", targets: str = "previous", zero_init: bool = True
    ) -> None:
        super().__init__(shapes=shapes)
        if combine not in COMBINE_MODES:
            raise ValueError(f"unknown combine mode '{combine}'; choose from: {', '.join(COMBINE_MODES)}")
        if targets not in TARGETS:
            raise ValueError(f"unknown deconv targets '{targets}'; choose from: {', '.join(TARGETS)}")
        self.mode = combine
        self.targets = targets
        n = shapes.num_stages
        self.maps = nn.ModuleList(_TopDown(shapes.outputs[i + 1], shapes.inputs[i], zero_init) for i in range(n - 1))
        self.long_maps = nn.ModuleDict(
            {
                f"{j}_to_{i}": _TopDown(shapes.outputs[j], shapes.inputs[i], zero_init)
                for i in range(n - 1)
                for j in range(i + 2, n)
                if targets == "all"
            }
        )
        self.gates = nn.ModuleList(_Gate(shapes.inputs[i]) for i in range(n - 1) if combine == "gate")

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        if self.mode == "add":
            return h + topdown
        if self.mode == "gain":
            return h * (1.0 + torch.tanh(topdown))
        return self.gates[i](h, topdown)

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        topdown: list[Tensor | None] = []
        for i, m in enumerate(self.maps):
            r = m(feats[i + 1])
            for j in range(i + 2, len(feats)) if self.targets == "all" else ():
                r = r + self.long_maps[f"{j}_to_{i}"](feats[j])
            topdown.append(r)
        return topdown + [None], state, {}
