"""DCGAN generator (Radford, Metz and Chintala 2016) and its transposed-convolution up-sampling block.

Reference: A. Radford, L. Metz, S. Chintala, "Unsupervised representation learning with deep convolutional
generative adversarial networks", ICLR 2016 (arXiv:1511.06434), section 3 ("architecture guidelines") and Fig. 1.
Written from the paper (reference/architectures.md, the transposed-convolution row: 3,576,704 parameters at
``nz=100, ngf=64``, 64x64 RGB).

Algorithm: a latent vector ``z`` (``(B, nz)`` or ``(B, nz, 1, 1)``) is projected to a ``4 x 4`` map of ``8 ngf``
channels by a 4x4 transposed convolution, then each :class:`UpBlock` doubles the resolution and halves the
channels (``ConvTranspose2d(k=4, s=2, p=1, no bias) -> BatchNorm -> ReLU``: a "fractionally-strided convolution"
in the paper's words), and a last 4x4 stride-2 transposed convolution maps to ``out_chans`` with ``tanh``. With
``num_ups`` blocks the output side is ``4 * 2^(num_ups + 1)``: 64 at the paper's ``num_ups=3``. No pooling and no
fully-connected hidden layers, batch norm everywhere but the output (the paper's guidelines).

:class:`UpBlock` and :class:`TransposedConvDecoder` are the reusable pieces: a decoder from any ``(B, C, h, w)``
feature map to ``(B, out_chans, h 2^n, w 2^n)`` (e.g. a segmentation or reconstruction head on an encoder's
deepest stage); :func:`dcgan_generator` is the DCGAN generator built from them.

Deviations: none in the layers; initialisation follows the paper's N(0, 0.02) for convolutions and N(1, 0.02) for
batch-norm scales. The discriminator is not provided.

Example:
    >>> import torch
    >>> g = dcgan_generator(num_classes=3, in_chans=16, ngf=8)
    >>> g(torch.zeros(2, 16)).shape
    torch.Size([2, 3, 64, 64])
    >>> TransposedConvDecoder(32, 5, widths=(16, 8))(torch.zeros(1, 32, 4, 4)).shape  # two blocks + output layer
    torch.Size([1, 5, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from torch import Tensor

from ._registry import register_model

__all__ = ["DCGANGenerator", "TransposedConvDecoder", "UpBlock", "dcgan_generator"]


class UpBlock(nn.Sequential):
    """``ConvTranspose2d(cin, cout, 4, stride 2, padding 1, bias=False) -> BatchNorm2d -> ReLU``: ``(B, cin, h, w)
    -> (B, cout, 2h, 2w)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class TransposedConvDecoder(nn.Sequential):
    """``UpBlock``s through ``widths`` then a 4x4 stride-2 transposed convolution to ``out_chans`` (no norm), with
    an optional output activation: ``(B, in_chans, h, w) -> (B, out_chans, h 2^(n+1), w 2^(n+1))``,
    ``n = len(widths)``."""

    def __init__(self, in_chans: int, out_chans: int, *, widths: Sequence[int], out_act: nn.Module | None = None,
                 out_bias: bool = True) -> None:
        layers: list[nn.Module] = []
        c = in_chans
        for w in widths:
            layers.append(UpBlock(c, int(w)))
            c = int(w)
        layers.append(nn.ConvTranspose2d(c, out_chans, 4, 2, 1, bias=out_bias))
        if out_act is not None:
            layers.append(out_act)
        super().__init__(*layers)


class DCGANGenerator(nn.Module):
    """DCGAN's generator: ``project`` (z -> 4x4), ``decoder`` (:class:`TransposedConvDecoder`, tanh output).

    Shapes: ``(B, nz)`` or ``(B, nz, 1, 1)`` -> ``(B, out_chans, S, S)``, ``S = 2^(num_ups + 3)``.
    """

    def __init__(self, *, nz: int, out_chans: int, ngf: int, num_ups: int) -> None:
        super().__init__()
        widths = [ngf * 2 ** (num_ups - i) for i in range(num_ups + 1)]  # 8 ngf, 4 ngf, 2 ngf, ngf at num_ups=3
        self.project = nn.Sequential(nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
                                     nn.BatchNorm2d(widths[0]), nn.ReLU(True))
        self.decoder = TransposedConvDecoder(widths[0], out_chans, widths=widths[1:], out_act=nn.Tanh(),
                                             out_bias=False)
        self.nz, self.num_classes, self.in_chans = nz, out_chans, nz
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.decoder(self.project(z))


@register_model(family="DCGAN", source="hand-written (paper)", paper="Radford et al. 2016",
                small={"ngf": 8, "in_chans": 16}, staged=False)
def dcgan_generator(*, num_classes: int = 3, in_chans: int = 100, ngf: int = 64, num_ups: int = 3) -> DCGANGenerator:
    """DCGAN generator: ``in_chans`` latent features (nz) -> ``num_classes`` output channels at 64x64 (the runner's
    names for input and output widths); 3,576,704 parameters at nz=100, ngf=64, 3 channels.

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     sum(p.numel() for p in dcgan_generator().parameters())
        3576704
    """
    return DCGANGenerator(nz=int(in_chans), out_chans=int(num_classes), ngf=int(ngf), num_ups=int(num_ups))
