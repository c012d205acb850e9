"""Receptive-field geometry of a layer, and resizing maps to the input so that each unit lands on its field's centre.

A readout map lives on the grid of its layer: unit ``i`` of an ``h``-row map is centred on input row
``a * i + b`` (per axis), where ``a`` is the layer's cumulative stride and ``b`` its offset. Plain bilinear
resizing (``F.interpolate``, ``align_corners=False``) assumes ``b = (a - 1) / 2``, true for padded
"same" convolutions only in special cases. It is not true for

* unpadded networks: LeNet-5's C3 unit ``i`` is centred on input pixel ``2 i + 6.5`` (5x5 valid conv, 2x2 pool,
  5x5 valid conv), while stretching its 10 rows over 32 pixels puts it at ``3.2 i + 1.1``, up to 5 px away;
* strided "same" convolutions: ResNet's stride-2 3x3 convolutions (padding 1) centre unit ``i`` on ``2 i``; at
  ``layer3`` of ``resnet18_small`` (stride 4) stretching is off by 1.5 px, comparable to the pointing game's
  tolerance at 32 px (2.1 px).

:func:`layer_geometry` runs one forward pass (no gradients) under :class:`GeometryMode`, a ``TorchFunctionMode``
that carries ``(a, b)`` per spatial axis from the input through convolutions, pooling (max, average, adaptive),
``F.pad`` and ``F.interpolate`` (Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep learning"):

.. math::

    \\text{conv/pool (kernel } k\\text{, stride } s\\text{, padding } p\\text{, dilation } d):\\quad
    a' = a s, \\quad b' = b + a\\,(d (k - 1)/2 - p)

Any other op whose output keeps the spatial size of an input with known geometry inherits it (activations,
normalisation, residual sums, concatenation along channels). :func:`resize_maps` then samples the map at the
fractional map coordinate ``(y - b) / a`` of every input pixel (bilinear, fading to zero beyond the outermost unit
centres).

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 5), nn.MaxPool2d(2), nn.Conv2d(2, 2, 5))
    >>> g = layer_geometry(net, torch.zeros(1, 1, 32, 32), "2")
    >>> g.axes
    ((2.0, 6.5), (2.0, 6.5))
    >>> resize_maps(torch.zeros(1, 1, 10, 10), (32, 32), geometry=g).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ._rules import CONV_FNS, logits_of, readout_state, resolve_layer

__all__ = ["Geometry", "GeometryMode", "layer_geometry", "resize_maps"]

_ATTR = "_feedback_geometry"
_MAX_POOL = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}
_AVG_POOL = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
_ADAPTIVE = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
             F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}


@dataclass(frozen=True)
class Geometry:
    """Per spatial axis ``(a, b)``: unit ``i`` of the layer is centred on input pixel index ``a * i + b``."""

    axes: tuple[tuple[float, float], ...]

    @staticmethod
    def identity(n: int) -> Geometry:
        return Geometry(((1.0, 0.0),) * n)

    @staticmethod
    def stretch(src: Sequence[int], dst: Sequence[int]) -> Geometry:
        """The geometry that plain bilinear resizing (``align_corners=False``) assumes."""
        return Geometry(tuple((d / s, 0.5 * d / s - 0.5) for s, d in zip(src, dst)))


def _tup(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _get(t: Any) -> Geometry | None:
    return getattr(t, _ATTR, None) if isinstance(t, Tensor) else None


def _window(g: Geometry, k, s, p, d) -> Geometry:
    n = len(g.axes)
    k, s, p, d = _tup(k, n), _tup(s, n), _tup(p, n), _tup(d, n)
    return Geometry(tuple((a * si, b + a * (di * (ki - 1) / 2 - pi)) for (a, b), ki, si, pi, di in
                          zip(g.axes, k, s, p, d)))


def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class GeometryMode(TorchFunctionMode):
    """Attach the :class:`Geometry` of every spatial output of the forward pass to the tensor."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        first = out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor) else out
        if not isinstance(first, Tensor) or _get(first) is not None:
            return out
        try:
            g = self._geometry(func, args, kwargs, first)
        except Exception:  # geometry is best effort: an op it cannot follow leaves the output without one
            g = None
        if g is not None:
            setattr(first, _ATTR, g)
        return out

    def _geometry(self, func, args, kwargs, out: Tensor) -> Geometry | None:
        x = args[0] if args else kwargs.get("input")
        gx = _get(x)
        if func in CONV_FNS and gx is not None:
            n = CONV_FNS[func]
            w = _arg(args, kwargs, 1, "weight")
            k = tuple(w.shape[2:])
            d = _tup(_arg(args, kwargs, 5, "dilation", 1), n)
            pad = _arg(args, kwargs, 4, "padding", 0)
            if isinstance(pad, str):
                pad = (0,) * n if pad == "valid" else tuple(di * (ki - 1) / 2 for di, ki in zip(d, k))
            return _window(gx, k, _arg(args, kwargs, 3, "stride", 1), pad, d)
        if func in _MAX_POOL and gx is not None:
            k = _arg(args, kwargs, 1, "kernel_size")
            s = _arg(args, kwargs, 2, "stride") or k
            return _window(gx, k, s, _arg(args, kwargs, 3, "padding", 0), _arg(args, kwargs, 4, "dilation", 1))
        if func in _AVG_POOL and gx is not None:
            k = _arg(args, kwargs, 1, "kernel_size")
            s = _arg(args, kwargs, 2, "stride") or k
            return _window(gx, k, s, _arg(args, kwargs, 3, "padding", 0), 1)
        if func in _ADAPTIVE and gx is not None:
            n = _ADAPTIVE[func]
            src, dst = x.shape[-n:], out.shape[-n:]
            return Geometry(tuple((a * si / di, b + a * (0.5 * si / di - 0.5)) for (a, b), si, di in
                                  zip(gx.axes, src, dst)))
        if func is F.interpolate and gx is not None:
            n = len(gx.axes)
            src, dst = x.shape[-n:], out.shape[-n:]
            if kwargs.get("align_corners", _arg(args, kwargs, 4, "align_corners")):
                return Geometry(tuple((a * (si - 1) / max(di - 1, 1), b) for (a, b), si, di in
                                      zip(gx.axes, src, dst)))
            return Geometry(tuple((a * si / di, b + a * (0.5 * si / di - 0.5)) for (a, b), si, di in
                                  zip(gx.axes, src, dst)))
        if func is F.pad and gx is not None:
            pad = list(_arg(args, kwargs, 1, "pad"))
            n = len(gx.axes)
            before = [0] * n
            for j in range(min(n, len(pad) // 2)):  # pad lists (left, right) pairs from the last dimension
                before[n - 1 - j] = pad[2 * j]
            return Geometry(tuple((a, b - a * pb) for (a, b), pb in zip(gx.axes, before)))
        # anything else: inherit from an input of the same rank and spatial size
        for t in list(args) + list(kwargs.values()):
            cands = t if isinstance(t, (tuple, list)) else (t,)
            for c in cands:
                g = _get(c)
                if g is not None and c.dim() == out.dim() and c.shape[-len(g.axes):] == out.shape[-len(g.axes):]:
                    return g
        return None


@torch.no_grad()
def layer_geometry(model: nn.Module, x: Tensor, layer: str | int, *, spatial_dims: int = 2) -> Geometry | None:
    """The receptive-field geometry of ``layer``'s output for inputs like ``x`` (one forward pass, eval mode).

    Returns ``None`` when the geometry cannot be followed to that layer (an op that moves pixels in a way
    :class:`GeometryMode` does not know) or the output is not spatial.
    """
    name, module = resolve_layer(model, layer)
    if module is None:
        return Geometry.identity(spatial_dims)
    found: list[Geometry | None] = []
    xin = x[:1].detach().clone()
    setattr(xin, _ATTR, Geometry.identity(spatial_dims))
    handle = module.register_forward_hook(lambda m, i, o: found.append(_get(o)))
    try:
        with readout_state(model), GeometryMode():
            logits_of(model(xin))
    finally:
        handle.remove()
    return found[0] if found else None


def resize_maps(maps: Tensor, size: Sequence[int], *, geometry: Geometry | None = None) -> Tensor:
    """Resize (B, 1, h, w) maps to ``size`` = (H, W) of the input.

    With ``geometry`` (from :func:`layer_geometry`) each input pixel ``y`` reads the map at ``(y - b) / a``
    (bilinear). Beyond the outermost unit centres the map fades to 0 within one unit spacing (zero padding): no unit
    is centred there, and replicating the border units would create plateaus whose arg-max drifts away from the
    units' centres (LeNet's C3 centres span input pixels 6.5-24.5 only). Without ``geometry``: plain bilinear
    stretching (``F.interpolate``, ``align_corners=False``).
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must be (B, 1, h, w), got {tuple(maps.shape)}")
    H, W = int(size[0]), int(size[1])
    h, w = maps.shape[-2:]
    if geometry is None:
        if (h, w) == (H, W):
            return maps
        return F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
    (ay, by), (ax, bx) = geometry.axes[-2], geometry.axes[-1]
    ys = (torch.arange(H, dtype=maps.dtype, device=maps.device) - by) / ay
    xs = (torch.arange(W, dtype=maps.dtype, device=maps.device) - bx) / ax
    ny = 2 * ys / (h - 1) - 1 if h > 1 else torch.zeros_like(ys)
    nx = 2 * xs / (w - 1) - 1 if w > 1 else torch.zeros_like(xs)
    grid = torch.stack(torch.meshgrid(nx, ny, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = grid.unsqueeze(0).expand(maps.shape[0], H, W, 2)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
