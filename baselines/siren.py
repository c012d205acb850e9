"""SIREN (Sitzmann et al. 2020) and a ReLU coordinate MLP with optional positional / Fourier-feature encoding.

References: V. Sitzmann, J. N. P. Martel, A. W. Bergman, D. B. Lindell, G. Wetzstein, "Implicit Neural
Representations with Periodic Activation Functions", NeurIPS 2020. B. Mildenhall et al., "NeRF", ECCV 2020
(positional encoding, eq. 4). M. Tancik, P. P. Srinivasan, B. Mildenhall et al., "Fourier Features Let Networks
Learn High Frequency Functions in Low Dimensional Domains", NeurIPS 2020 (Gaussian random Fourier features).

SIREN maps coordinates to signal values with sine layers and a linear output layer:

.. math::

    h_1 = \\sin(\\omega_0 (W_1 x + b_1)), \\qquad h_l = \\sin(\\omega_0 (W_l h_{l-1} + b_l)), \\qquad
    y = W_{L+1} h_L + b_{L+1}

with ``omega_0 = 30`` and the initialisation of section 3.2 / supplement 1: the first layer
``W_1 ~ U(-1/n, 1/n)``, every later layer ``W_l ~ U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0)`` (``n`` = fan-in). Then
``omega_0 W_l h`` has variance ``n (6/n) / 3 * E[h^2] = 2 * 1/2 = 1``: with arcsine-distributed inputs
``h = sin(.)`` each layer's pre-activation is approximately standard normal and its output again arcsine-distributed,
at every depth (the tests check it). Biases are drawn from the same range as their layer's weights (the authors' code
keeps PyTorch's default bias init, ``U(-1/sqrt(n), 1/sqrt(n))``, which adds ``omega_0^2 / (3 n)`` = 1.17 to that
variance at ``n = 256``; this deviation keeps the paper's derivation exact up to ``2/n``).

The ReLU baseline (:func:`relu_mlp_coords`) is ``depth`` ReLU layers on an encoding of the coordinates:

- ``posenc="none"``: the raw coordinates;
- ``posenc="nerf"``: ``gamma(p) = (p, sin(2^k pi p), cos(2^k pi p))_{k < L}`` per coordinate (NeRF eq. 4 with ``p``
  kept, as the NeRF code);
- ``posenc="gauss"``: ``gamma(v) = [cos(2 pi B v), sin(2 pi B v)]`` with a fixed ``B ~ N(0, sigma^2)`` of
  ``fourier_features x in_chans`` (Tancik et al.), drawn from torch's global generator when the model is built.

Shapes: coordinates ``(..., in_chans)`` (usually in ``[-1, 1]``) -> values ``(..., num_classes)``.

Parameters: SIREN 2-256x4-1 (``depth=4`` sine layers, the authors' ``hidden_layers=3``): 198,401; with 3 outputs
198,915 (reference/architectures.md).

Example:
    >>> import torch
    >>> net = siren()
    >>> sum(p.numel() for p in net.parameters()), net(torch.rand(10, 2) * 2 - 1).shape
    (198401, torch.Size([10, 1]))
    >>> relu_mlp_coords(posenc="nerf", num_freqs=10).encoding(torch.zeros(5, 2)).shape
    torch.Size([5, 42])
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model
from .nerf import PositionalEncoding

__all__ = ["CoordMLP", "GaussianFourierFeatures", "SineLayer", "Siren", "relu_mlp_coords", "siren"]


class SineLayer(nn.Module):
    """``sin(w0 (W x + b))`` with SIREN's initialisation (``first``: ``U(-1/n, 1/n)``, else ``U(+-sqrt(6/n)/w0)``).

    Attributes: ``linear`` (the ``nn.Linear``), ``w0``, ``first``. Shapes: ``(..., n)`` -> ``(..., out_features)``.

    Example:
        >>> layer = SineLayer(2, 8, first=True)
        >>> float(layer.linear.weight.detach().abs().max()) <= 0.5
        True
    """

    def __init__(self, in_features: int, out_features: int, *, w0: float = 30.0, first: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.w0 = float(w0)
        self.first = bool(first)
        bound = 1.0 / in_features if first else math.sqrt(6.0 / in_features) / self.w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            self.linear.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """``depth`` sine layers of ``width`` units and a linear output layer (see the module docstring).

    Attributes: ``layers`` (the :class:`SineLayer` s), ``head`` (the output ``nn.Linear``, initialised as a hidden
    sine layer's weights), ``num_classes``, ``in_chans``.
    """

    def __init__(self, *, in_chans: int = 2, num_classes: int = 1, width: int = 256, depth: int = 4,
                 w0: float = 30.0, w0_first: float = 30.0) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"SIREN needs depth >= 1 sine layers and width >= 1, got depth={depth}, width={width}")
        self.in_chans, self.num_classes = int(in_chans), int(num_classes)
        self.layers = nn.ModuleList(
            SineLayer(in_chans if i == 0 else width, width, w0=w0_first if i == 0 else w0, first=i == 0)
            for i in range(depth)
        )
        self.head = nn.Linear(width, num_classes)
        bound = math.sqrt(6.0 / width) / w0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)
            self.head.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class GaussianFourierFeatures(nn.Module):
    """``[cos(2 pi B v), sin(2 pi B v)]`` with a fixed buffer ``B ~ N(0, scale^2)`` ``(features, in_features)``.

    Shapes: ``(..., in_features)`` -> ``(..., 2 features)``.
    """

    def __init__(self, in_features: int, features: int = 256, *, scale: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("B", torch.randn(features, in_features) * float(scale))

    def forward(self, v: Tensor) -> Tensor:
        proj = 2.0 * math.pi * F.linear(v, self.B.to(v.dtype))
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)


POSENC = ("none", "nerf", "gauss")


class CoordMLP(nn.Module):
    """A ReLU MLP on encoded coordinates: ``encoding``, ``depth`` ReLU layers of ``width``, a linear ``head``."""

    def __init__(self, *, in_chans: int = 2, num_classes: int = 1, width: int = 256, depth: int = 4,
                 posenc: str = "none", num_freqs: int = 10, fourier_features: int = 256,
                 fourier_scale: float = 10.0) -> None:
        super().__init__()
        if posenc not in POSENC:
            raise ValueError(f"unknown posenc {posenc!r}; choose from: {', '.join(POSENC)}")
        if depth < 1 or width < 1:
            raise ValueError(f"need depth >= 1 hidden layers and width >= 1, got depth={depth}, width={width}")
        self.in_chans, self.num_classes, self.posenc = int(in_chans), int(num_classes), posenc
        if posenc == "nerf":
            pe = PositionalEncoding(num_freqs, scale=math.pi)
            self.encoding: nn.Module = pe
            d = pe.out_features(in_chans)
        elif posenc == "gauss":
            self.encoding = GaussianFourierFeatures(in_chans, fourier_features, scale=fourier_scale)
            d = 2 * fourier_features
        else:
            self.encoding = nn.Identity()
            d = in_chans
        self.layers = nn.ModuleList(nn.Linear(d if i == 0 else width, width) for i in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.encoding(x)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x)


@register_model(family="siren", source="hand-written (paper)", paper="Sitzmann et al. 2020", staged=False,
                small={"width": 32, "depth": 2})
def siren(*, num_classes: int = 1, in_chans: int = 2, width: int = 256, depth: int = 4, w0: float = 30.0,
          w0_first: float = 30.0) -> Siren:
    """SIREN: ``depth`` sine layers (``w0 = 30``) of ``width`` units, linear output; 198,401 parameters at 2-256x4-1.

    Args:
        num_classes: output values per coordinate (1 grey, 3 RGB). in_chans: coordinate dimensions.
        width, depth: sine-layer width and count (``depth`` = the authors' ``hidden_layers + 1``).
        w0, w0_first: the frequency factor of the hidden and of the first sine layers.
    """
    return Siren(in_chans=in_chans, num_classes=num_classes, width=width, depth=depth, w0=w0, w0_first=w0_first)


@register_model(family="siren", source="hand-written (paper)", paper="Mildenhall et al. 2020; Tancik et al. 2020",
                staged=False, small={"width": 32, "depth": 2})
def relu_mlp_coords(*, num_classes: int = 1, in_chans: int = 2, width: int = 256, depth: int = 4,
                    posenc: str = "none", num_freqs: int = 10, fourier_features: int = 256,
                    fourier_scale: float = 10.0) -> CoordMLP:
    """ReLU coordinate MLP (``depth`` layers of ``width``), optionally on a positional / Fourier-feature encoding.

    Args:
        num_classes: outputs. in_chans: coordinate dimensions.
        width, depth: hidden layer width and count.
        posenc: ``none``, ``nerf`` (``num_freqs`` octaves, frequencies ``2^k pi``) or ``gauss``
            (``fourier_features`` random frequencies with standard deviation ``fourier_scale``).
    """
    return CoordMLP(in_chans=in_chans, num_classes=num_classes, width=width, depth=depth, posenc=posenc,
                    num_freqs=num_freqs, fourier_features=fourier_features, fourier_scale=fourier_scale)
