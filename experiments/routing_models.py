"""Registers the routing sequence models of :mod:`feedback.rims` as baselines: ``rims``, ``brims``, ``meta_rims``.

``baselines`` may not import ``feedback`` (DESIGN.md section 2), so the models are registered from here, with
:func:`baselines.register_model` (``family="routing"``, ``staged=False``: trained through ``PlainNet`` like the
other sequence models, docs/tasks.md). Importing this module is enough; ``experiments.train`` imports it.

``hidden_size`` is the **total** width of a layer (``num_modules`` modules of ``hidden_size / num_modules`` units),
so ``rims(hidden_size=120)`` and ``lstm(hidden_size=120)`` have the same state size. BRIMs and Meta-RIMs take one
value per layer for ``hidden_size``, ``num_modules``, ``top_k`` (or one value for all layers).

Example:
    >>> import torch, baselines
    >>> net = baselines.create_model("rims", num_classes=10, in_chans=2, hidden_size=24, num_modules=4, top_k=2)
    >>> net(torch.randint(0, 2, (3, 9))).shape
    torch.Size([3, 10])
    >>> sorted(baselines.list_models("*rims"))
    ['brims', 'meta_rims', 'rims']
"""

from __future__ import annotations

from typing import Sequence

import baselines
from feedback.rims import BRIMs, MetaRIMs, RIMs

__all__ = ["brims", "meta_rims", "rims"]

_SMALL = {"hidden_size": 16, "num_modules": 4, "top_k": 2}


@baselines.register_model(family="routing", staged=False, paper="Goyal et al. 2019 (RIMs)",
                          source="hand-written (paper equations; feedback.rims)", small=_SMALL)
def rims(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    hidden_size: int | Sequence[int] = 120,
    num_modules: int | Sequence[int] = 6,
    top_k: int | Sequence[int] = 4,
    num_layers: int = 0,
    output: str = "last",
    embed: bool = True,
    embed_dim: int = 0,
    dropout: float = 0.0,
    tbptt: int = 0,
    cell: str = "lstm",
    communication: str = "pairwise",
    input_heads: int = 1,
    input_key_size: int = 64,
    input_value_size: int = 64,
    input_dropout: float = 0.0,
    comm_heads: int = 4,
    comm_key_size: int = 16,
    comm_value_size: int = 16,
    comm_dropout: float = 0.0,
    comm_from: str = "all",
    workspace_slots: int = 2,
    workspace_slot_size: int = 0,
    workspace_topk: int = 0,
    forget_bias: float = 1.0,
) -> RIMs:
    """Recurrent Independent Mechanisms (Goyal et al. 2019): :class:`feedback.rims.RIMs`.

    Defaults: one layer of K = 6 LSTM modules of 20 units (120 in all), k = 4 active, pairwise communication
    (4 heads, d = 16), one input-attention head (d_k = d_v = 64). The options are :class:`feedback.rims.RoutingNet`'s
    and :class:`feedback.routing.RIMCell`'s.

    Example:
        >>> sum(p.numel() for p in rims(in_chans=2).parameters())
        91410
    """
    kw = dict(locals())
    return RIMs(**kw)


@baselines.register_model(family="routing", staged=False, paper="Mittal et al. 2020 (BRIMs)",
                          source="hand-written (paper equations; feedback.rims)",
                          small={"hidden_size": [16, 8], "num_modules": [4, 2], "top_k": [2, 1]})
def brims(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    hidden_size: int | Sequence[int] = (120, 60),
    num_modules: int | Sequence[int] = (6, 3),
    top_k: int | Sequence[int] = (4, 2),
    num_layers: int = 0,
    topdown: bool = True,
    output: str = "last",
    embed: bool = True,
    embed_dim: int = 0,
    dropout: float = 0.0,
    tbptt: int = 0,
    cell: str = "lstm",
    communication: str = "pairwise",
    input_heads: int = 1,
    input_key_size: int = 64,
    input_value_size: int = 64,
    input_dropout: float = 0.0,
    comm_heads: int = 4,
    comm_key_size: int = 16,
    comm_value_size: int = 16,
    comm_dropout: float = 0.0,
    comm_from: str = "all",
    workspace_slots: int = 2,
    workspace_slot_size: int = 0,
    workspace_topk: int = 0,
    forget_bias: float = 1.0,
) -> BRIMs:
    """Bidirectional RIMs (Mittal et al. 2020): :class:`feedback.rims.BRIMs`, stacked RIM layers with top-down rows.

    Defaults: 2 layers, K = [6, 3] modules of 20 units, k = [4, 2]; layer 0 reads [null, input, layer 1 at t - 1].
    ``topdown=False``: hierarchical RIMs (the ablation).

    Example:
        >>> sum(p.numel() for p in brims(in_chans=2).parameters())
        152450
    """
    kw = dict(locals())
    kw["hidden_size"], kw["num_modules"], kw["top_k"] = (
        list(v) if isinstance(v, (list, tuple)) else v for v in (hidden_size, num_modules, top_k))
    return BRIMs(**kw)


@baselines.register_model(family="routing", staged=False, paper="Madan et al. 2021 (Meta-RIMs)",
                          source="hand-written (paper equations; feedback.rims)", small=_SMALL)
def meta_rims(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    hidden_size: int | Sequence[int] = 120,
    num_modules: int | Sequence[int] = 6,
    top_k: int | Sequence[int] = 4,
    num_layers: int = 0,
    fast: str = "modules",
    fast_lr_scale: float = 1.0,
    slow_lr_scale: float = 0.1,
    output: str = "last",
    embed: bool = True,
    embed_dim: int = 0,
    dropout: float = 0.0,
    tbptt: int = 0,
    cell: str = "lstm",
    communication: str = "pairwise",
    input_heads: int = 1,
    input_key_size: int = 64,
    input_value_size: int = 64,
    input_dropout: float = 0.0,
    comm_heads: int = 4,
    comm_key_size: int = 16,
    comm_value_size: int = 16,
    comm_dropout: float = 0.0,
    comm_from: str = "all",
    workspace_slots: int = 2,
    workspace_slot_size: int = 0,
    workspace_topk: int = 0,
    forget_bias: float = 1.0,
) -> MetaRIMs:
    """Meta-RIMs (Madan et al. 2021): RIMs with fast module and slow attention learning rates
    (:class:`feedback.rims.MetaRIMs`; ``experiments.train.make_optimizer`` reads :meth:`~MetaRIMs.lr_scales`).

    Defaults: the RIMs defaults; cells at ``train.lr * fast_lr_scale`` (1.0), input and communication attention at
    ``train.lr * slow_lr_scale`` (0.1); ``fast="attention"`` swaps the roles.

    Example:
        >>> meta_rims(slow_lr_scale=0.5).lr_scales()["layers.0.input_attn"]
        0.5
    """
    kw = dict(locals())
    return MetaRIMs(**kw)
