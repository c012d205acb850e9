"""CoordConv (Liu et al. 2018): a convolution that also sees where it is, and the ``coordconv=True`` model option.

Reference: R. Liu, J. Lehman, P. Molino, F. P. Such, E. Frank, A. Sergeev, J. Yosinski, "An intriguing failing of
convolutional neural networks and the CoordConv solution", NeurIPS 2018, section 3 and Fig. 3. Written from the
paper (no library has it; reference/architectures.md sections 9 and 10).

CoordConv concatenates two coordinate channels to the input of a convolution, the row index ``i`` and the column
index ``j`` of every position, each scaled linearly to ``[-1, 1]`` (and optionally a third channel with the distance
from the centre, ``r = sqrt(i^2 + j^2)`` in those units), then convolves as usual:

.. math::

    \\mathrm{CoordConv}(x) = W * [\\,x;\\; i;\\; j\\,(;\\; r)\\,] + b, \\qquad
    i_{h,w} = \\frac{2h}{H - 1} - 1, \\quad j_{h,w} = \\frac{2w}{W - 1} - 1

(a side of length 1 gets the coordinate 0). A 3 -> 64 channel 3x3 CoordConv has ``(3 + 2) * 64 * 9 + 64 = 2,944``
parameters, against 1,792 for the plain convolution.

:func:`coordconv_` turns a built model into its CoordConv version: it replaces the first ``nn.Conv2d`` of the
``stem`` (or of ``stages[0]`` if the stem has no convolution) by a :class:`CoordConv2d` with the same geometry. The
paper adds coordinates to the first layer in its ImageNet and detection experiments. ``baselines.create_model(name,
coordconv=True)`` does this for every registered convolutional backbone. The new layer keeps the original weights
for the image channels and starts the coordinate weights at zero, so a freshly converted model computes exactly what
the plain model computes and learns how to use the coordinates (a deviation: the paper trains CoordConv nets from a
fresh initialisation of the whole layer; pass ``coord_init="default"`` for PyTorch's initialisation of all inputs).

Shapes: ``CoordConv2d(C, C_out, k)``: ``(B, C, H, W) -> (B, C_out, H', W')`` (the coordinate channels are added
inside, so the layer takes the same input as the convolution it replaces).

Example:
    >>> import torch
    >>> layer = CoordConv2d(3, 64, 3, padding=1)
    >>> sum(p.numel() for p in layer.parameters())
    2944
    >>> layer(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 64, 32, 32])
    >>> add_coords(torch.zeros(1, 1, 3, 2))[0, 1:]  # the i (row) and j (column) channels
    tensor([[[-1., -1.],
             [ 0.,  0.],
             [ 1.,  1.]],
    <BLANKLINE>
            [[-1.,  1.],
             [-1.,  1.],
             [-1.,  1.]]])
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["CoordConv2d", "add_coords", "coordconv_", "first_conv"]


def _axis(n: int, like: Tensor) -> Tensor:
    if n == 1:
        return torch.zeros(1, device=like.device, dtype=like.dtype)
    return torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype)


def add_coords(x: Tensor, with_r: bool = False) -> Tensor:
    """``[x; i; j]`` (and ``r`` if ``with_r``): ``(B, C, H, W) -> (B, C + 2 (+ 1), H, W)``, coordinates in [-1, 1]."""
    if x.dim() != 4:
        raise ValueError(f"add_coords expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    i = _axis(h, x).view(1, 1, h, 1).expand(b, 1, h, w)
    j = _axis(w, x).view(1, 1, 1, w).expand(b, 1, h, w)
    parts = [x, i, j]
    if with_r:
        parts.append(torch.sqrt(i * i + j * j))
    return torch.cat(parts, dim=1)


class CoordConv2d(nn.Conv2d):
    """``nn.Conv2d`` over the input plus its coordinate channels (Liu et al. 2018); see the module docstring.

    Args:
        in_channels: channels of the input *without* the coordinates (what the layer receives).
        out_channels, kernel_size, stride, padding, dilation, bias, padding_mode: as ``nn.Conv2d``.
        groups: must be 1 (the coordinate channels feed every output).
        with_r: add the radius channel as well (3 coordinate channels instead of 2).

    The weight has shape ``(out_channels, in_channels + coord_channels, kH, kW)``; the coordinate inputs are the
    last ``coord_channels`` of dimension 1. ``in_channels`` is the total, as in ``nn.Conv2d``, and
    ``image_channels`` the input's own.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        with_r: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if groups != 1:
            raise ValueError(f"CoordConv2d needs groups=1 (coordinates feed every output channel), got groups={groups}")
        self.with_r = bool(with_r)
        self.coord_channels = 3 if with_r else 2
        self.image_channels = int(in_channels)
        super().__init__(
            in_channels + self.coord_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=1, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.image_channels:
            raise ValueError(
                f"CoordConv2d expects (B, {self.image_channels}, H, W) (coordinates are added inside), "
                f"got shape {tuple(x.shape)}"
            )
        return super().forward(add_coords(x, self.with_r))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, with_r: bool = False, coord_init: str = "zero") -> CoordConv2d:
        """A CoordConv2d with ``conv``'s geometry, weights and bias; the coordinate weights start as ``coord_init``.

        ``coord_init="zero"``: zero coordinate weights (the new layer computes exactly what ``conv`` computes);
        ``"default"``: PyTorch's initialisation of the whole new layer (``conv``'s weights are not kept).
        """
        if type(conv).forward is not nn.Conv2d.forward:
            raise TypeError(f"can only convert a plain nn.Conv2d, got {type(conv).__name__} (its own forward)")
        if coord_init not in ("zero", "default"):
            raise ValueError(f"coord_init must be 'zero' or 'default', got {coord_init!r}")
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
            with_r=with_r, device=conv.weight.device, dtype=conv.weight.dtype,
        )  # fmt: skip
        if coord_init == "zero":
            with torch.no_grad():
                new.weight.zero_()
                new.weight[:, : conv.in_channels].copy_(conv.weight)
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
        new.train(conv.training)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", image_channels={self.image_channels}, with_r={self.with_r}"


def first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """``(parent, attribute, conv)`` of the model's first convolution: in ``stem``, else in ``stages[0]``.

    "First" is the order of ``named_modules`` (registration order), which is the forward order in every Staged
    model here. Raises ``ValueError`` when neither has an ``nn.Conv2d``.
    """
    stem = getattr(model, "stem", None)
    stages = getattr(model, "stages", None)
    places: list[tuple[nn.Module, str, nn.Module | None]] = [(model, "stem", stem)]
    if stages is not None and len(stages):
        places.append((stages, "0", stages[0]))
    for owner, key, part in places:
        if part is None:
            continue
        for name, m in part.named_modules():
            if isinstance(m, nn.Conv2d):
                if not name:  # the stem or stage itself is the convolution
                    return owner, key, m
                parent_name, _, attr = name.rpartition(".")
                return part.get_submodule(parent_name) if parent_name else part, attr, m
    raise ValueError("no nn.Conv2d in the stem or in stage 0 (not a convolutional backbone)")


def coordconv_(model: nn.Module, *, with_r: bool = False, coord_init: str = "zero") -> nn.Module:
    """Replace the model's first convolution (:func:`first_conv`) by a :class:`CoordConv2d`, in place.

    Returns ``model``. A model whose first convolution is already a CoordConv2d is returned unchanged.

    Example:
        >>> import torch, baselines
        >>> net = baselines.create_model("resnet20_cifar").eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> before = net(x)
        >>> type(coordconv_(net).stem[0]).__name__
        'CoordConv2d'
        >>> torch.allclose(net(x), before, atol=1e-6)  # zero coordinate weights: the same function at first
        True
    """
    parent, attr, conv = first_conv(model)
    if isinstance(conv, CoordConv2d):
        return model
    new = CoordConv2d.from_conv(conv, with_r=with_r, coord_init=coord_init)
    if isinstance(parent, (nn.ModuleList, nn.Sequential)) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    return model
