"""Shared post-processing of the readouts: the spatial view of a tapped signal and the optional resize to the input.

Example:
    >>> import torch
    >>> spatial(torch.zeros(2, 3, 5), "conv1d").shape  # (B, C, L) maps are shown as (B, C, 1, L)
    torch.Size([2, 3, 1, 5])
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from ._geometry import layer_geometry, resize_maps

__all__ = ["finish", "spatial"]


def spatial(signal: Tensor, layer: Any) -> Tensor:
    """View a tapped tensor as (B, C, H, W): 4-D as is, 3-D (B, C, L) as (B, C, 1, L); others raise."""
    if signal.dim() == 4:
        return signal
    if signal.dim() == 3:
        return signal.unsqueeze(2)
    raise ValueError(f"layer {layer!r} outputs shape {tuple(signal.shape)}, not a spatial map (B, C, H, W); "
                     "choose a convolutional layer (see feedback.readout.default_layer)")


def finish(maps: Tensor, model: nn.Module, x: Tensor, layer: Any, resize: bool) -> Tensor:
    """Detach and, if ``resize``, resize (B, 1, h, w) maps to the input, aligned on the receptive fields."""
    maps = maps.detach()
    if not resize:
        return maps
    geom = layer_geometry(model, x, layer) if layer not in ("", "input") else None
    return resize_maps(maps, x.shape[-2:], geometry=geom)
