"""The centre baseline of the pointing game: a map that always points at the image centre.

Zhang et al., "Top-down neural attention by excitation backprop" (ECCV 2016 / IJCV 2018), section 5.1: the
"center" baseline points at the centre of every image, whatever the class; it measures how much of a pointing-game
score comes from the dataset's centre bias (69.6% on VOC07, 27.8% on COCO in TorchRay's benchmark). The map is

.. math::

    M(u, v) = 1 - \\frac{(u - c_u)^2 + (v - c_v)^2}{c_u^2 + c_v^2}, \\qquad c = ((W - 1)/2, (H - 1)/2)

whose maximum is at the centre pixel(s). The model is not run; ``model`` and ``target`` are accepted for the
uniform readout signature.

Shapes: ``x`` (B, C, H, W) -> maps (B, 1, H, W).

Example:
    >>> import torch
    >>> m = centre(None, torch.zeros(2, 3, 5, 7))
    >>> m.shape, m[0, 0].argmax().item() == 2 * 7 + 3
    (torch.Size([2, 1, 5, 7]), True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["centre"]


def centre(model: nn.Module | None, x: Tensor, target: Any = None, *, layer: str | int | None = None,
           resize: bool = False) -> Tensor:
    """(B, 1, H, W) map peaked at the image centre (``layer`` must be ``None`` or ``""``)."""
    if layer not in (None, "", "input"):
        raise ValueError(f"the centre baseline lives on the input; layer must be None or '', got {layer!r}")
    H, W = x.shape[-2:]
    cy, cx = (H - 1) / 2, (W - 1) / 2
    yy = torch.arange(H, dtype=torch.float32, device=x.device)[:, None]
    xx = torch.arange(W, dtype=torch.float32, device=x.device)[None, :]
    m = 1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / max(cy**2 + cx**2, 1e-12)
    return m.expand(x.shape[0], 1, H, W).clone()
