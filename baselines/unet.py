"""U-Net (Ronneberger, Fischer and Brox 2015): a contracting path, an expanding path and skip connections.

Reference: O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional networks for biomedical image
segmentation", MICCAI 2015 (arXiv:1505.04597), section 2 and Fig. 1. Written from the paper; no library in this
environment has it (reference/architectures.md, the U-Net row).

Algorithm (``w`` = base width, 64 in the paper; ``DC(c)`` = two ``conv 3x3 - ReLU``, each with batch norm before
the ReLU when ``batch_norm``; the convolutions keep their biases either way):

* contracting path: ``DC(w)`` then four times ``max-pool 2x2 -> DC(2^i w)``: widths ``w, 2w, 4w, 8w, 16w``;
* expanding path: four times ``up-conv 2x2`` (a stride-2 transposed convolution halving the channels), then
  **concatenation** with the contracting path's map of the same level (centre-*cropped* to the up-sampled size
  when the convolutions are unpadded), then ``DC`` at the halved width;
* a final ``1x1`` convolution to ``num_classes`` logits.

Two variants, one class:

* ``unet``: the paper's network: unpadded ("valid") convolutions, no batch norm, 1 input channel and 2 classes:
  a ``572 x 572`` input gives a ``388 x 388`` output map (each valid 3x3 convolution trims 2 px); 31,030,658
  parameters. A valid U-Net needs ``H = 16 s + 60`` with ``s >= 8`` (188, 204, ..., 572) so that every pooled map
  is even and the output (``16 s - 124``) is not empty.
* ``unet_bn``: "same" padding (``padding=1``) and batch norm, the practical variant for small images: output
  ``(B, K, H, W)`` at the input size, for ``H, W`` divisible by 16; 31,043,586 parameters at 3 -> 2 channels.

``model.encoder`` is the **Staged view** of the contracting path (DESIGN.md section 3.1): a
:class:`~baselines.resnet.StagedModel` with an identity ``stem``, ``stages`` = ``[DC(w), pool+DC(2w), ...,
pool+DC(16w)]`` (strides 1, 2, 4, 8, 16; channels ``w ... 16w``) and a parameter-free ``head`` (global average
pool; ``num_classes`` = ``16 w``). :meth:`UNet.forward` runs exactly these stages and keeps every stage output but
the last as a skip, so feedback attached to ``model.encoder`` later changes what the decoder sees.

Deviations from the paper: the weight map (border weighting) of the paper's loss and its elastic-deformation
augmentation belong to training, not to the network, and are not provided; initialisation is PyTorch's default
(the paper: Gaussian with std ``sqrt(2 / N)``); the ``unet_bn`` variant's batch norm and padding are not in the
paper (they are the common modern form).

Example:
    >>> import torch
    >>> net = unet_bn(num_classes=3, in_chans=3, width=8, img_size=32)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    >>> net.encoder.channels, net.encoder.strides
    ([8, 16, 32, 64, 128], [1, 2, 4, 8, 16])
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .resnet import StagedModel

__all__ = ["UNet", "unet", "unet_bn", "unet_output_size"]


def _double_conv(cin: int, cout: int, padding: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers.append(nn.Conv2d(c, cout, 3, padding=padding))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def unet_output_size(size: int, *, padding: int = 0, depth: int = 4) -> int:
    """Output side of a U-Net for input side ``size`` (valid: 2 px lost per convolution; same: unchanged).

    Example:
        >>> unet_output_size(572)
        388
    """
    if padding:
        return size
    for _ in range(depth):
        size = (size - 4) // 2
    size -= 4
    for _ in range(depth):
        size = size * 2 - 4
    return size


def _center_crop(x: Tensor, h: int, w: int) -> Tensor:
    dy, dx = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., dy:dy + h, dx:dx + w]


class UNet(nn.Module):
    """U-Net: Staged ``encoder`` (contracting path), ``ups`` / ``decoder`` (expanding path), ``classifier`` (1x1).

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes, H', W')``; ``H' = H`` with padding, else
    :func:`unet_output_size`.
    """

    def __init__(self, *, num_classes: int, in_chans: int, width: int, padding: int, batch_norm: bool,
                 img_size: int) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(5)]
        stages: list[nn.Module] = [_double_conv(in_chans, widths[0], padding, batch_norm)]
        for i in range(1, 5):
            stages.append(nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i - 1], widths[i], padding, batch_norm)))
        self.encoder = StagedModel(nn.Identity(), stages, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
                                   channels=widths, strides=[1, 2, 4, 8, 16],
                                   input_size=(in_chans, img_size, img_size), num_classes=widths[-1],
                                   num_features=widths[-1])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(4, 0, -1))
        self.decoder = nn.ModuleList(_double_conv(2 * widths[i - 1], widths[i - 1], padding, batch_norm)
                                     for i in range(4, 0, -1))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        self.num_classes, self.in_chans, self.padding = num_classes, in_chans, padding
        self.input_size = (in_chans, img_size, img_size)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder.stem(x)
        skips = []
        for stage in self.encoder.stages:
            h = stage(h)
            skips.append(h)
        skips.pop()
        for up, block in zip(self.ups, self.decoder):
            h = up(h)
            skip = skips.pop()
            if skip.shape[-2:] != h.shape[-2:]:
                if self.padding:
                    raise ValueError(f"U-Net (same padding) needs H and W divisible by 16, got {tuple(x.shape[-2:])}")
                skip = _center_crop(skip, int(h.shape[-2]), int(h.shape[-1]))
            h = block(torch.cat([skip, h], dim=1))
        return self.classifier(h)


_PAPER = "Ronneberger et al. 2015"


@register_model(family="U-Net", source="hand-written (paper)", paper=_PAPER, min_input_size=188,
                small={"width": 8, "img_size": 188}, small_input_size=188, staged=False)
def unet(*, num_classes: int = 2, in_chans: int = 1, width: int = 64, img_size: int = 572) -> UNet:
    """The paper's U-Net (valid convolutions, no batch norm): 572 -> 388 px, 31,030,658 parameters (1 -> 2).

    Example:
        >>> with torch.device("meta"):
        ...     sum(p.numel() for p in unet().parameters())
        31030658
    """
    return UNet(num_classes=num_classes, in_chans=in_chans, width=int(width), padding=0, batch_norm=False,
                img_size=int(img_size))


@register_model(family="U-Net", source="hand-written (paper, same padding + batch norm)", paper=_PAPER,
                min_input_size=16, small={"width": 8, "img_size": 32}, small_input_size=32, staged=False)
def unet_bn(*, num_classes: int = 2, in_chans: int = 3, width: int = 64, img_size: int = 256) -> UNet:
    """U-Net with same-padding convolutions and batch norm (output at the input size, H and W divisible by 16);
    31,043,586 parameters at 3 -> 2 channels.

    Example:
        >>> with torch.device("meta"):
        ...     sum(p.numel() for p in unet_bn().parameters())
        31043586
    """
    return UNet(num_classes=num_classes, in_chans=in_chans, width=int(width), padding=1, batch_norm=True,
                img_size=int(img_size))
