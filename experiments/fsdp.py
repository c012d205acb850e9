"""FSDP2 for the runner: how a model is sharded (``train.fsdp=true`` under torchrun), and its state dicts gathered
whole for a checkpoint and loaded back into a sharded model (docs/perf.md, "Many GPUs").

Example (one process, no sharding: plain state dicts):
    >>> import torch, torch.nn as nn
    >>> net = nn.Linear(2, 2); opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> m, o = full_states(net, opt, fsdp=False)
    >>> load_states(net, opt, m, o, fsdp=False); sorted(m)
    ['bias', 'weight']
"""

from __future__ import annotations

import torch
import torch.nn as nn

from feedback import FeedbackNet, PlainNet
from feedback.none import NoFeedback

__all__ = ["full_states", "load_states", "shard_model"]


def shard_model(model: nn.Module) -> None:
    """Shard ``model`` in place with FSDP2 (``torch.distributed.fsdp.fully_shard``) over the default process group.

    Without a feedback kind each backbone part (stem, every stage, head) is its own unit, so only one stage's full
    parameters exist at a time. With a feedback kind the whole model is one unit: kinds may read backbone weights
    outside the stage that owns them (the generative kind's tied transposed convolutions), which per-stage
    sharding would hand them as shards; gradients and optimizer state are still sharded.
    """
    from torch.distributed.fsdp import fully_shard

    units: list[nn.Module] = []
    if isinstance(model, FeedbackNet) and isinstance(model.feedback, NoFeedback):
        bb = model.backbone
        units = [bb.stem, *bb.stages, bb.head]
    elif isinstance(model, PlainNet):
        units = list(model.backbone.children())
    for unit in units:
        if any(p.requires_grad for p in unit.parameters()):
            fully_shard(unit)
    fully_shard(model)


def full_states(model: nn.Module, optimizer: torch.optim.Optimizer, *, fsdp: bool) -> tuple[dict, dict]:
    """The model's and optimizer's state dicts, gathered whole on the CPU of rank 0 under FSDP (every rank calls)."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def load_states(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optimizer_state: dict,
                *, fsdp: bool) -> None:
    """Load whole state dicts (as :func:`full_states` returns them) into a plain or an FSDP-sharded model."""
    if not fsdp:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)
