"""The optimizer and the learning-rate schedule of the runner: AdamW or SGD over decay / no-decay groups (plus the
groups modules ask for with ``lr_scales()``), linear warm-up then cosine or constant, a pure function of the step.

Example:
    >>> import torch.nn as nn
    >>> from experiments.config import ExperimentConfig
    >>> cfg = ExperimentConfig()
    >>> [len(g["params"]) for g in make_optimizer(nn.Linear(3, 2), cfg).param_groups]
    [1, 1]
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from experiments.config import ExperimentConfig

__all__ = ["lr_factor", "lr_scales", "make_optimizer"]


def lr_factor(step: int, total: int, cfg: ExperimentConfig) -> float:
    """The learning-rate multiplier at optimizer step ``step``: linear warm-up, then cosine to 0 or constant."""
    w = cfg.train.warmup_steps
    if w and step < w:
        return (step + 1) / w
    if cfg.train.schedule == "constant":
        return 1.0
    progress = (step - w) / max(1, total - w)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_scales(model: nn.Module) -> dict[int, float]:
    """Learning-rate multipliers that modules ask for: ``{id(parameter): scale}``.

    A module with a method ``lr_scales() -> {parameter-name prefix: multiplier}`` (names relative to that module)
    gets those parameters trained at ``train.lr * multiplier`` (e.g. Meta-RIMs' fast attention and slow modules).
    """
    out: dict[int, float] = {}
    for module in model.modules():
        fn = getattr(module, "lr_scales", None)
        if not callable(fn):
            continue
        table = dict(fn())
        for name, p in module.named_parameters():
            for prefix, scale in table.items():
                if name == prefix or name.startswith(prefix.rstrip(".") + "."):
                    out[id(p)] = float(scale)
    return out


def make_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over two parameter groups (weight decay on matrices and kernels, none on biases and norms), and
    one more group per learning-rate multiplier a module asks for (:func:`lr_scales`)."""
    t = cfg.train
    scales = lr_scales(model)
    params = [p for p in model.parameters() if p.requires_grad]
    # no weight decay on biases and norm parameters (1-D tensors), the usual timm/nanoGPT practice
    decay = [p for p in params if p.dim() >= 2 and id(p) not in scales]
    no_decay = [p for p in params if p.dim() < 2 and id(p) not in scales]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for scale in sorted(set(scales.values())):
        for wd, keep in ((t.weight_decay, lambda p: p.dim() >= 2), (0.0, lambda p: p.dim() < 2)):
            ps = [p for p in params if scales.get(id(p)) == scale and keep(p)]
            if ps:
                groups.append({"params": ps, "weight_decay": wd, "lr": t.lr * scale})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr)
