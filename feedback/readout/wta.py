"""Selective tuning: a hierarchical winner-take-all from the target unit down, giving a binary attentional beam.

Tsotsos, Culhane, Wai, Lai, Davis, Nuflo, "Modeling visual attention via selective tuning", Artificial Intelligence
78:507-545 (1995); the winner rule of STNet as an option (Biparva & Tsotsos, "STNet: selective tuning of
convolutional networks for object localization", ICCV workshops 2017). Re-implemented from the descriptions in
reference/methods.md section 3 (no reference code: STNet is GPL-3 and CUDA-only).

After the bottom-up pass, the target class's output unit wins at the top. Going down, every *gated* (winning) unit
``i`` runs a WTA among the units of its receptive field, scored by their contributions ``c_ij = w_ij a_j``; the
winners are gated at the layer below and the losers (and everything outside the union of the gated fields, the
suppressive surround) are inhibited:

.. math::

    g_j = \\bigvee_{i:\\, g_i = 1} [\\, j \\in \\mathrm{WTA}_\\theta(\\{c_{ij}\\}_j) \\,], \\qquad
    \\mathrm{WTA}_\\theta(c) = \\{ j : c_j > 0,\\; c_j \\ge (1 - \\theta) \\max_{j'} c_{j'} \\}

The theta-WTA (Tsotsos et al. 1995, section 4) lets every unit that is within theta of the strongest survive, so a
region rather than a pixel can win; here theta is *relative* to the row's strongest contribution (a deviation that
makes one theta fit every layer's scale), and ``theta = 0`` is the strict WTA: exactly one winner per gated unit,
so the beam is a single path and the map has exactly one active unit (tested). The default, ``theta = 0.2``, keeps
the beam narrow: every level of the descent widens it (each gated unit passes on all its near-winners), and with
``theta = 0.5`` the beam of a trained ``resnet18_small`` covers most of the image by ``layer3``. Other winner rules:
``mode="mass"``
(the fewest strongest children carrying ``mass`` of the positive contribution) and ``mode="stnet"`` (STNet's
prefix-sum threshold); see :func:`feedback.readout.select_winners`.

Per op: convolutions, linear layers and average pooling (adaptive and global included) select as above, with
contributions ``w a`` (average pooling: ``a``); a residual sum selects among its operands ``x_k``; max pooling
routes to the arg-max (its ordinary gradient); ReLU passes the gate where its input is positive; batch norm passes
it unchanged. The output is binary.

Maps: the gate at ``layer``'s output collapsed over channels: ``collapse="max"`` (a unit is in the beam in some
channel; binary, the default) or ``"sum"`` (how many channels of the unit are in the beam).

Shapes: ``x`` (B, C, H, W), ``target`` int or (B,) -> maps (B, 1, h, w) in {0, 1} (``layer``'s spatial size;
``resize=True``: (H, W), no longer binary). Default ``layer``: :func:`feedback.readout.default_layer`
``("excitation")``.

Example:
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    ...                     nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(8, 3))
    >>> m = selective_tuning(net, torch.rand(2, 1, 16, 16), 2, layer="2", theta=0.0)
    >>> m.shape, m.unique().tolist(), m.flatten(1).sum(1).tolist()  # strict WTA: a single winner per image
    (torch.Size([2, 1, 8, 8]), [0.0, 1.0], [1.0, 1.0])
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from ._common import finish, spatial
from ._rules import Rules, default_layer, run_topdown

__all__ = ["COLLAPSE", "selective_tuning"]

COLLAPSE = ("max", "sum")


def selective_tuning(
    model: nn.Module,
    x: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    mode: str = "theta",
    theta: float = 0.2,
    mass: float = 0.5,
    collapse: str = "max",
    resize: bool = False,
) -> Tensor:
    """Binary selective-tuning beam of ``target`` at ``layer``: (B, 1, h, w).

    Args:
        model: any module returning logits (B, K).
        x: input batch (B, C, H, W).
        target: class per sample (int or (B,)); ``None``: the predicted class.
        layer: module name, ``""`` or stage index; default :func:`default_layer` ``("excitation")``.
        mode: winner rule: ``"theta"`` (default), ``"mass"`` or ``"stnet"`` (see :func:`select_winners`).
        theta: relative theta of the theta-WTA, in [0, 1]; 0 is the strict single-winner WTA.
        mass: positive-contribution fraction kept by ``mode="mass"``.
        collapse: ``"max"`` (binary map) or ``"sum"`` (number of gated channels per position).
        resize: return maps at the input size, aligned on the layer's receptive fields.
    """
    if collapse not in COLLAPSE:
        raise ValueError(f"unknown collapse '{collapse}'; choose from: {', '.join(COLLAPSE)}")
    if layer is None:
        layer = default_layer(model, x, "excitation")
    rules = Rules("wta", wta_mode=mode, theta=theta, mass=mass)
    probes, _, _ = run_topdown(model, x, target, rules=rules, layers=[layer])
    gate = (spatial(probes[0].signal, layer) > 0).to(x.dtype)
    maps = gate.amax(1, keepdim=True) if collapse == "max" else gate.sum(1, keepdim=True)
    return finish(maps, model, x, layer, resize)
