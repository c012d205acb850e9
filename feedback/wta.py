"""``wta``: the selective-tuning beam of the predicted class at step t suppresses the losers at step t+1.

Attention as feedback with the hierarchical winner-take-all of selective tuning (Tsotsos, Culhane, Wai, Lai,
Davis, Nuflo, "Modeling visual attention via selective tuning", Artificial Intelligence 78, 1995;
:mod:`feedback.readout.wta`). After step ``t`` the predicted class wins at the top; a WTA among the contributions
to every gated unit is run down to the input of every stage, giving a binary beam ``G_i`` (a position is in the beam
if any channel of it is). The next bottom-up pass is *tuned* as in the paper's second pass: the losers, everything
outside the beam (the suppressive surround), are inhibited:

.. math::

    x_i^{(t+1)} \\leftarrow x_i^{(t+1)} \\odot \\big(1 - \\alpha\\,(1 - G_i)\\big)

with ``alpha`` = ``strength`` (1: the surround is silenced). Winner rule: ``mode``/``theta``/``mass`` as in
:func:`feedback.readout.select_winners` (default: theta-WTA with relative theta 0.2). The beam is detached and the
kind adds **no parameters**. It is computed inside the forward pass exactly as the ``excitation`` kind's map (a
record of the step replayed under the selective-tuning rules; no global state, no hooks, train mode included; see
:mod:`feedback.excitation`).

Shapes: ``feats[i]`` (B, C_i, H_i, W_i) -> ``topdown[i]`` (B, 1, H_i, W_i) gains in {1 - alpha, 1}.

Example:
    >>> import torch
    >>> from feedback.core import FeedbackNet
    >>> from feedback.excitation import attention_gain
    >>> attention_gain(torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]]), 0.75, binary=True).tolist()
    [[[[0.25, 1.0]]]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import StageShapes, register_feedback
from .excitation import ExcitationFeedback, attention_gain
from .readout._rules import Rules, select_winners

__all__ = ["WTAFeedback"]


@register_feedback("wta")
class WTAFeedback(ExcitationFeedback):
    """Selective-tuning attention of the predicted class: the surround of the beam is suppressed by ``strength``.

    Args:
        shapes: the backbone's stage shapes.
        strength: ``alpha`` in [0, 1], the suppression of the losers.
        mode, theta, mass: the winner rule (see :func:`feedback.readout.select_winners`).
    """

    def __init__(self, *, shapes: StageShapes, strength: float = 0.5, mode: str = "theta", theta: float = 0.2,
                 mass: float = 0.5) -> None:
        super().__init__(shapes=shapes, strength=strength)
        select_winners(torch.ones(1, 1), mode=mode, theta=theta, mass=mass)  # validates the winner rule
        self.mode, self.theta, self.mass = mode, float(theta), float(mass)

    def rules(self) -> Rules:
        return Rules("wta", wta_mode=self.mode, theta=self.theta, mass=self.mass)

    def _gain(self, signal: Tensor | None) -> Tensor | None:
        return attention_gain(signal, self.strength, binary=True)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, mode={self.mode}, theta={self.theta}, mass={self.mass}"
