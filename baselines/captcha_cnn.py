"""A small CNN that reads a fixed-length string: one classifier per character position.

Reference: I. Goodfellow, Y. Bulatov, J. Ibarz, S. Arnoud, V. Shet, "Multi-digit Number Recognition from Street View
Imagery using Deep Convolutional Neural Networks", ICLR 2014: a convolutional trunk shared by one softmax classifier
per position of the string. Re-implemented from the paper at a CPU scale (no code copied).

Architecture: ``depth`` blocks of (3x3 conv, batch norm, ReLU, 3x3 conv, batch norm, ReLU, 2x2 max-pool) with
``width, 2 width, 4 width, ...`` channels; adaptive average pooling to a ``(2, 2 length)`` grid (so any input size
works); a shared hidden layer (``hidden`` units, ReLU, dropout); one linear head per position.

Shapes: input ``(B, in_chans, H, W)`` (H, W >= 2 ** depth); output logits ``(B, length, num_classes)`` (the ``tokens``
task of the runner, docs/tasks.md).

Deviations from the paper: fixed length (no length classifier), a much smaller trunk (2-3 blocks instead of eight
layers of up to 192 channels), adaptive pooling instead of a fixed input size.

Example::

    >>> import torch, baselines
    >>> model = baselines.create_model("captcha_cnn", num_classes=10, in_chans=1, length=4)
    >>> model(torch.zeros(2, 1, 30, 80)).shape
    torch.Size([2, 4, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model

__all__ = ["CaptchaCNN", "captcha_cnn"]


class CaptchaCNN(nn.Module):
    """Multi-position CNN reader (see the module docstring)."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, length: int = 4, width: int = 32, depth: int = 3,
                 hidden: int = 256, drop_rate: float = 0.2) -> None:
        super().__init__()
        if length < 1 or depth < 1 or width < 1 or hidden < 1:
            raise ValueError(f"length, depth, width and hidden must be >= 1, got {length}, {depth}, {width}, {hidden}")
        self.num_classes, self.length = int(num_classes), int(length)
        self.input_size = (int(in_chans), 30, 80)
        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(depth):
            c = width * 2**i
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = c
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((2, 2 * self.length)), nn.Flatten())
        self.shared = nn.Sequential(nn.Linear(c_in * 4 * self.length, hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(drop_rate))
        self.heads = nn.ModuleList(nn.Linear(hidden, num_classes) for _ in range(self.length))

    def forward(self, x: Tensor) -> Tensor:
        h = self.shared(self.trunk(x))
        return torch.stack([head(h) for head in self.heads], 1)  # (B, L, K)


@register_model(family="CaptchaCNN", source="hand-written (paper)", paper="Goodfellow et al. 2014", staged=False)
def captcha_cnn(*, num_classes: int = 10, in_chans: int = 1, length: int = 4, width: int = 32, depth: int = 3,
                hidden: int = 256, drop_rate: float = 0.2) -> CaptchaCNN:
    """Multi-position CNN string reader (one head per character), for the ``tokens`` task on ``captcha`` data."""
    return CaptchaCNN(num_classes=num_classes, in_chans=in_chans, length=length, width=width, depth=depth,
                      hidden=hidden, drop_rate=drop_rate)
