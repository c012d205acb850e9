"""Occlusion sensitivity: how much the target's score drops when a patch of the image is hidden.

Zeiler & Fergus, "Visualizing and understanding convolutional networks", ECCV 2014, section 4.2 (figure 7): a grey
square slides over the image and the classifier's output for the true class is recorded at every position.

For every patch position ``q`` (a ``size x size`` square, moved by ``stride``, the last row and column of positions
flush with the border so every pixel is covered) the image is occluded with ``fill`` and

.. math::

    d_q = s_k(x) - s_k(x \\text{ occluded at } q), \\qquad M(u, v) = \\operatorname{mean}_{q \\ni (u, v)} d_q

with ``s_k`` the target's logit (``score="logit"``) or soft-max probability (``score="prob"``). High values mark
pixels whose occlusion hurts the target. Deviations: the paper plots the probability itself per occluder position;
here it is the drop, spread back onto the pixels each occluder covers, so the map has the input's size.

No gradients and no rules: the model only runs forward (eval mode, restored afterwards). Cost: one forward pass per
patch position and image, ``batch_size`` occluded images at a time.

Shapes: ``x`` (B, C, H, W), ``target`` int or (B,) -> maps (B, 1, H, W). ``layer`` must be ``None`` or ``""``.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.zero_(); net[1].weight[0, 5] = 1.0  # class 0 looks at pixel (1, 1) only
    >>> m = occlusion(net, torch.ones(1, 1, 4, 4), 0, size=1, stride=1)
    >>> m.shape, m[0, 0].argmax().item(), m[0, 0, 1, 1].item()
    (torch.Size([1, 1, 4, 4]), 5, 1.0)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._rules import logits_of, readout_state, target_tensor

__all__ = ["occlusion"]

SCORES = ("logit", "prob")


def _starts(n: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] != n - size:
        starts.append(n - size)
    return starts


@torch.no_grad()
def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    size: int | None = None,
    stride: int | None = None,
    fill: float = 0.0,
    score: str = "logit",
    batch_size: int = 256,
    resize: bool = False,
) -> Tensor:
    """Occlusion-sensitivity map (B, 1, H, W) of ``target``.

    Args:
        model: any module returning logits (B, K).
        x: input batch (B, C, H, W).
        target: class per sample; ``None``: the predicted class.
        layer: must be ``None`` or ``""`` (the map is on the input).
        size: side of the occluding square; default a quarter of the shorter image side.
        stride: step between positions; default half the size.
        fill: value of the occluder (0: black, the background of the digit datasets).
        score: ``"logit"`` or ``"prob"``.
        batch_size: occluded images per forward pass.
        resize: accepted for a uniform signature; the map already has the input's size.
    """
    if layer not in (None, "", "input"):
        raise ValueError(f"occlusion maps live on the input; layer must be None or '', got {layer!r}")
    if score not in SCORES:
        raise ValueError(f"unknown score '{score}'; choose from: {', '.join(SCORES)}")
    B, _, H, W = x.shape
    size = int(size) if size is not None else max(1, min(H, W) // 4)
    stride = int(stride) if stride is not None else max(1, size // 2)
    if not 1 <= size <= min(H, W) or stride < 1:
        raise ValueError(f"need 1 <= size <= {min(H, W)} and stride >= 1, got size={size}, stride={stride}")
    with readout_state(model):
        base = logits_of(model(x))
        tgt = target_tensor(target, B, x.device, base)

        def s(logits: Tensor, t: Tensor) -> Tensor:
            v = logits.softmax(-1) if score == "prob" else logits
            return v.gather(1, t[:, None]).squeeze(1)

        s0 = s(base, tgt)
        pos = [(y, x0) for y in _starts(H, size, stride) for x0 in _starts(W, size, stride)]
        acc = torch.zeros(B, 1, H, W, dtype=x.dtype, device=x.device)
        cnt = torch.zeros(1, 1, H, W, dtype=x.dtype, device=x.device)
        per = max(1, batch_size // B)
        for i in range(0, len(pos), per):
            chunk = pos[i : i + per]
            xs = x.detach().unsqueeze(0).repeat(len(chunk), 1, 1, 1, 1)
            for j, (y, x0) in enumerate(chunk):
                xs[j, :, :, y : y + size, x0 : x0 + size] = fill
            out = logits_of(model(xs.flatten(0, 1)))
            drop = s0.repeat(len(chunk)) - s(out, tgt.repeat(len(chunk)))
            for j, (y, x0) in enumerate(chunk):
                acc[:, :, y : y + size, x0 : x0 + size] += drop[j * B : (j + 1) * B].view(B, 1, 1, 1)
                cnt[:, :, y : y + size, x0 : x0 + size] += 1
    return acc / cnt
