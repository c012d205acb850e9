"""Training-time augmentation of a whole batch on its device: rotations, shifts, zooms, flips, recolouring, noise.

Every image of a batch ``x`` (B, C, H, W) in ``[0, 1]`` gets its own random draw. The geometric part is one affine
warp per image, sampled bilinearly with zero padding (background is black in the digit sets)::

    A_b = R(theta_b) * s_b,   theta_b ~ U(-rotate, rotate) degrees,  s_b ~ U(1 - scale, 1 + scale),
    t_b ~ U(-shift, shift) pixels per axis,   x'_b = warp(x_b; A_b, t_b)   (F.affine_grid + F.grid_sample)

then a horizontal flip with probability 1/2 (``hflip``), recolouring (``color`` = c: brightness offset
~ U(-c/2, c/2), contrast factor ~ U(1 - c, 1 + c) around the image mean and, for RGB, a per-channel gain
~ U(1 - c/2, 1 + c/2)), additive Gaussian noise of std ``noise``, and a clamp to ``[0, 1]``.

Random numbers come from torch's global generator of the batch's device, so they are part of the RNG state a
checkpoint saves (exact resume holds with augmentation on). With every option at zero the batch is returned
untouched and no random number is drawn.

Example:
    >>> import torch
    >>> x = torch.rand(4, 1, 16, 16)
    >>> augment_batch(x, rotate=10.0, shift=2.0, noise=0.05).shape
    torch.Size([4, 1, 16, 16])
    >>> augment_batch(x) is x
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment_batch", "is_active"]


def is_active(*, rotate: float = 0.0, shift: float = 0.0, scale: float = 0.0, hflip: bool = False,
              color: float = 0.0, noise: float = 0.0) -> bool:
    """True if any option would change a batch."""
    return bool(rotate or shift or scale or hflip or color or noise)


def _uniform(b: int, lo: float, hi: float, like: Tensor) -> Tensor:
    return torch.rand(b, device=like.device, dtype=torch.float32) * (hi - lo) + lo


def augment_batch(x: Tensor, *, rotate: float = 0.0, shift: float = 0.0, scale: float = 0.0, hflip: bool = False,
                  color: float = 0.0, noise: float = 0.0) -> Tensor:
    """A randomly augmented copy of ``x`` (B, C, H, W); ``x`` itself when every option is off."""
    if not is_active(rotate=rotate, shift=shift, scale=scale, hflip=hflip, color=color, noise=noise):
        return x
    b, c, h, w = x.shape
    out = x.float()
    if rotate or shift or scale:
        theta = _uniform(b, -rotate, rotate, x) * (math.pi / 180.0)
        s = _uniform(b, 1.0 - scale, 1.0 + scale, x) if scale else torch.ones(b, device=x.device)
        # affine_grid maps output coordinates to input coordinates in [-1, 1]: use the inverse zoom
        cos, sin = torch.cos(theta) / s, torch.sin(theta) / s
        tx = _uniform(b, -shift, shift, x) * (2.0 / w) if shift else torch.zeros(b, device=x.device)
        ty = _uniform(b, -shift, shift, x) * (2.0 / h) if shift else torch.zeros(b, device=x.device)
        mat = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(mat, [b, c, h, w], align_corners=False)
        out = F.grid_sample(out.contiguous(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if hflip:
        flip = torch.rand(b, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if color:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        contrast = _uniform(b, 1.0 - color, 1.0 + color, x)[:, None, None, None]
        bright = _uniform(b, -color / 2, color / 2, x)[:, None, None, None]
        out = (out - mean) * contrast + mean + bright
        if c == 3:
            gains = torch.rand(b, 3, 1, 1, device=x.device) * color + (1.0 - color / 2)
            out = out * gains
    if noise:
        out = out + noise * torch.randn_like(out)
    return out.clamp_(0.0, 1.0).to(x.dtype).contiguous(memory_format=_fmt(x))


def _fmt(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
