"""``PlainNet``: a model without the Staged view, run once, with :class:`FeedbackNet`'s output type.

Sequence, set, graph and implicit models (docs/tasks.md) have no ``stem``/``stages``/``head`` for a feedback kind
to attach to, so the runner trains them through this wrapper: one forward pass, ``steps = 1``, no feedback. A
model may return one tensor or a list of tensors (its outputs after each internal step, e.g. NeRF's coarse and
fine renderings): the last is the prediction (``logits``), all of them are ``per_step`` (the runner averages the
loss over them when ``train.supervise`` is ``all``). A dict input is passed as keyword arguments.

A model that computes its own training loss (a detector whose loss needs the boxes, as torchvision's do) takes a
``target`` keyword argument; the runner then passes the batch's targets while training, and the model returns
``{"losses": {name: scalar}, "out": prediction or None}``: the named losses become ``aux_losses`` (the runner
adds them up as the loss) and ``per_step`` is empty when there is no prediction. In eval mode such a model is
called without ``target`` and returns its predictions.

Example:
    >>> import torch, torch.nn as nn
    >>> net = PlainNet(nn.Linear(3, 2))
    >>> out = net(torch.zeros(4, 3))
    >>> out.logits.shape, len(out.per_step), net.steps
    (torch.Size([4, 2]), 1, 1)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn
from torch import Tensor

from .core import FeedbackOutput

__all__ = ["PlainNet"]


class PlainNet(nn.Module):
    """Wrap ``model`` so that ``forward`` returns a :class:`FeedbackOutput` (one step, no feedback).

    Attributes:
        backbone: the wrapped model (its state-dict keys are prefixed ``backbone.``, as in :class:`FeedbackNet`).
        steps: always 1.
    """

    steps = 1

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model
        #: the model computes its own training loss from ``target`` (see the module docstring)
        self.takes_target = "target" in inspect.signature(model.forward).parameters

    def forward(self, x: Tensor | dict[str, Tensor], target: Tensor | None = None) -> FeedbackOutput:
        kw = {"target": target} if self.takes_target and target is not None else {}
        out: Any = self.backbone(**x, **kw) if isinstance(x, dict) else self.backbone(x, **kw)
        losses: dict[str, Tensor] = {}
        if isinstance(out, dict):
            losses, out = dict(out.get("losses", {})), out.get("out")
            if out is None:
                if not losses:
                    raise TypeError(f"{type(self.backbone).__name__} returned a dict with neither losses nor out")
                return FeedbackOutput(logits=None, per_step=[], aux_losses=losses)  # type: ignore[arg-type]
        per_step = list(out) if isinstance(out, (list, tuple)) else [out]
        if not per_step or not all(isinstance(o, Tensor) for o in per_step):
            raise TypeError(f"{type(self.backbone).__name__} must return a tensor or a list of tensors")
        return FeedbackOutput(logits=per_step[-1], per_step=per_step, aux_losses=losses)
