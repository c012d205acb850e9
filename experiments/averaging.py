"""Weight averaging for the runner: EMA and SWA (``train.average``), with SWA's batch-norm recalibration.

Example:
    >>> import torch.nn as nn
    >>> net = nn.Linear(2, 1)
    >>> ema = WeightAverage(net, kind="ema", decay=0.5); ema.update(net); int(ema.n_averaged)
    1
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn as nn

from experiments.data import index_inputs, num_samples
from experiments.data import to_device as _to

__all__ = ["WeightAverage"]


class WeightAverage(nn.Module):
    """A running average of a model's weights: exponential (EMA) or equal-weight from a start epoch (SWA).

    EMA (Polyak & Juditsky 1992; as timm's ``ModelEmaV3`` without warm-up): ``w_avg <- d * w_avg + (1 - d) * w``
    after every optimizer step, buffers copied. SWA (Izmailov et al. 2018, "Averaging weights leads to wider optima
    and better generalization", UAI): ``w_avg <- w_avg + (w - w_avg) / (n + 1)`` at the end of every epoch after
    ``swa_start`` of training; batch-norm statistics are recomputed for the averaged weights before it is evaluated
    (:meth:`recalibrate`), covering the per-step statistics of :class:`~feedback.FeedbackNet` too.
    """

    def __init__(self, model: nn.Module, *, kind: str, decay: float = 0.999) -> None:
        super().__init__()
        self.kind, self.decay = kind, decay
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.n_averaged)
        for pa, p in zip(self.module.parameters(), model.parameters()):
            if n == 0:
                pa.copy_(p)
            elif self.kind == "ema":
                pa.lerp_(p.to(pa.dtype), 1.0 - self.decay)
            else:
                pa.add_((p - pa) / (n + 1))
        if self.kind == "ema":
            for ba, b in zip(self.module.buffers(), model.buffers()):
                ba.copy_(b)
        self.n_averaged += 1

    @torch.no_grad()
    def recalibrate(self, images: torch.Tensor | dict[str, torch.Tensor], batch_size: int, device: torch.device,
                    memory_format: torch.memory_format, amp: Callable[[], Any]) -> None:
        """Recompute every running batch-norm statistic of the averaged model on ``images`` (the training inputs: a
        tensor or a dict of tensors) as a cumulative average."""
        holders = [m for m in self.module.modules() if all(hasattr(m, n) for n in ("running_mean", "running_var"))]
        norms = [m for m in holders if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        for m in holders:
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            if getattr(m, "num_batches_tracked", None) is not None:
                m.num_batches_tracked.zero_()
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = None  # cumulative moving average over the pass
        was_training = self.module.training
        self.module.train()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                n = num_samples(images)
                for i in range(0, n, batch_size):
                    x = _to(index_inputs(images, torch.arange(i, min(i + batch_size, n))), device, memory_format)
                    with amp():
                        self.module(x)
        finally:
            for m, mom in zip(norms, momenta):
                m.momentum = mom
            self.module.train(was_training)
