"""Gradient diagnostics a training loop can log: per-layer gradient norms and the fraction of dead ReLUs.

Vanishing and exploding gradients (Hochreiter 1991; Bengio, Simard, Frasconi 1994, "Learning long-term dependencies
with gradient descent is difficult"; Glorot & Bengio 2010; Pascanu, Mikolov, Bengio 2013, "On the difficulty of
training recurrent neural networks"): back-propagation multiplies one Jacobian per layer (or time step),
``dL/dh_1 = (prod_{l} J_l)^T dL/dh_L``, ``J_l = diag(f'(a_l)) W_l``, so the gradient norm of early layers shrinks or
grows geometrically with depth when ``||J_l||`` stays below or above 1 (sigmoid: ``f' <= 1/4``). Residual
connections (He et al. 2016) make ``J_l = I + ...`` and keep it near 1.

- :func:`grad_norms`: ``{prefix + module name: ||dL/dtheta_module||_2}`` for every module that owns parameters,
  read from ``.grad`` after ``backward()`` (the runner's ``TrainStep`` leaves them there until the next step);
- :class:`ReLUMonitor`: forward hooks on every ``nn.ReLU`` (or other given activation modules) accumulating, per
  module, the share of zero outputs and the share of *dead* units: units (a feature, or a channel at a position)
  that were zero for every sample seen since the last :meth:`~ReLUMonitor.reset`. Functional ``F.relu`` calls are
  not seen.

How the runner logs them (``experiments/train.py``, not wired here): build ``mon = ReLUMonitor(model)`` once; on
logging steps call ``metrics.update(grad_norms(model))`` right after ``TrainStep`` returns (gradients are still in
``.grad``) and ``metrics.update(mon.summary()); mon.reset()``; call ``mon.remove()`` at the end. Hooks cost a
comparison per activation; switch them on with a config flag.

Shapes: any activation ``(B, ...)``; units are the non-batch positions.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> with torch.no_grad():
    ...     _ = net[0].bias.copy_(torch.tensor([-100.0, -100.0, 100.0, 100.0]))
    >>> mon = ReLUMonitor(net)
    >>> net(torch.randn(8, 3)).sum().backward()
    >>> mon.summary()
    {'dead_relu/1': 0.5, 'zero_relu/1': 0.5}
    >>> sorted(grad_norms(net))
    ['grad_norm/0', 'grad_norm/2']
    >>> mon.remove()
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["ReLUMonitor", "grad_norms"]


@torch.no_grad()
def grad_norms(model: nn.Module, *, prefix: str = "grad_norm/") -> dict[str, float]:
    """L2 norm of the gradient of each module's own parameters (those with a ``.grad``), keyed by module name."""
    out: dict[str, float] = {}
    for name, mod in model.named_modules():
        grads = [p.grad for p in mod.parameters(recurse=False) if p.grad is not None]
        if grads:
            out[prefix + (name or "<root>")] = float(torch.sqrt(sum(g.float().pow(2).sum() for g in grads)))
    return out


class ReLUMonitor:
    """Forward hooks counting zero outputs and never-active units of each activation module.

    Args:
        model: the network.
        kinds: activation module types to watch (default ``nn.ReLU``).
    """

    def __init__(self, model: nn.Module, kinds: Sequence[type[nn.Module]] = (nn.ReLU,)) -> None:
        self.names: dict[nn.Module, str] = {m: n for n, m in model.named_modules() if isinstance(m, tuple(kinds))}
        self.handles = [m.register_forward_hook(self._hook) for m in self.names]
        self.reset()

    def reset(self) -> None:
        """Forget what was seen."""
        self.zeros: dict[str, float] = {}
        self.count: dict[str, float] = {}
        self.ever_active: dict[str, Tensor] = {}

    def _hook(self, mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        name = self.names[mod]
        with torch.no_grad():
            active = out.detach() > 0
            self.zeros[name] = self.zeros.get(name, 0.0) + float((~active).sum())
            self.count[name] = self.count.get(name, 0.0) + active.numel()
            any_active = active.reshape(active.shape[0], -1).any(0)
            prev = self.ever_active.get(name)
            self.ever_active[name] = any_active if prev is None or prev.shape != any_active.shape else prev | any_active

    def summary(self, *, prefix: str = "") -> dict[str, float]:
        """``{prefix + 'dead_relu/<name>': share of units never active, prefix + 'zero_relu/<name>': share of zeros}``."""
        out: dict[str, float] = {}
        for name, ever in self.ever_active.items():
            out[f"{prefix}dead_relu/{name}"] = 1.0 - float(ever.float().mean())
            out[f"{prefix}zero_relu/{name}"] = self.zeros[name] / max(self.count[name], 1.0)
        return out

    def remove(self) -> None:
        """Remove the hooks."""
        for h in self.handles:
            h.remove()
        self.handles = []
