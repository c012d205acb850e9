"""ZFNet (Zeiler and Fergus 2013/2014), written from the paper, with the Staged view.

Reference: M. D. Zeiler, R. Fergus, "Visualizing and understanding convolutional networks", ECCV 2014
(arXiv:1311.2901, 2013): Figure 3 (the architecture) and section 3 (training details). No library has it
(reference/architectures.md sections 2.1 and 9).

AlexNet's layout with the changes the paper's visualisations motivated: a 7x7 stride-2 first layer (AlexNet:
11x11 stride 4) and a dense (ungrouped) stride-2 second layer, so the maps at 224 px are 110 -> 55 -> 26 -> 13 ->
13 -> 13 -> 6 as in Figure 3. Per sample at 224 px:

=====  =========================================  =============  =======
stage  layers                                     output         stride
=====  =========================================  =============  =======
conv1  conv 7x7/2 (96), ReLU, pool 3/2, norm      (96, 55, 55)   4
conv2  conv 5x5/2 (256), ReLU, pool 3/2, norm     (256, 13, 13)  16
conv3  conv 3x3 (384), ReLU                       (384, 13, 13)  16
conv4  conv 3x3 (384), ReLU                       (384, 13, 13)  16
conv5  conv 3x3 (256), ReLU, pool 3/2             (256, 6, 6)    32
=====  =========================================  =============  =======

head: fc6 (4096), ReLU, dropout 0.5, fc7 (4096), ReLU, dropout 0.5, fc8 (``num_classes``); 62,357,608 parameters
at 1000 classes. "norm" is the paper's contrast normalisation across feature maps, here AlexNet's local response
normalisation (:func:`baselines.alexnet.local_response_norm`). Initialisation (section 3): weights N(0, 0.01^2)
(the paper: "initialized to 10^-2"), biases 0. :meth:`ZFNet.renormalize_filters_` is the paper's training-time
filter renormalisation (every convolutional filter whose RMS exceeds 0.1 is rescaled to RMS 0.1), for the training
loop to call after each update.

Choices where the paper is silent, and deviations:

- conv1 has padding 1 (the paper gives no padding; 1 reproduces its 110x110 map at 224 px), conv2 none, conv3-5
  padding 1; the max-pools use ``ceil_mode=True`` (reproduces 110 -> 55 and 26 -> 13);
- the normalisation's constants are not in the paper: AlexNet's (n 5, k 2, alpha 1e-4, beta 0.75);
- an ``AdaptiveAvgPool2d(6)`` precedes fc6: the identity at 224 px (conv5's pooled map is 6x6), it lets inputs
  down to 47 px through (not in the paper).

``width`` scales the filter counts and the fully-connected width (``width=1`` is the paper's network).

Example:
    >>> import torch
    >>> net = zfnet(num_classes=10, width=0.125, img_size=64)
    >>> net.channels, net.strides
    ([12, 32, 48, 48, 32], [4, 16, 16, 16, 32])
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .alexnet import MinInputSize, check_img_size, local_response_norm, scaled
from .resnet import StagedModel

__all__ = ["ZFNet", "zfnet"]

ZFNET_MIN_SIZE = 47
ZFNET_STRIDES = (4, 16, 16, 16, 32)


class ZFNet(StagedModel):
    """ZFNet as a :class:`~baselines.resnet.StagedModel`, plus the paper's filter renormalisation.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)`` with ``H, W >= 47``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_rate: float = 0.5,
        img_size: int = 224,
    ) -> None:
        img_size = check_img_size(img_size, ZFNET_MIN_SIZE, "zfnet")
        c = [scaled(n, width) for n in (96, 256, 384, 384, 256)]
        hidden = scaled(4096, width)

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

        stages = [
            nn.Sequential(
                nn.Conv2d(in_chans, c[0], 7, stride=2, padding=1), nn.ReLU(inplace=True), pool(), local_response_norm()
            ),
            nn.Sequential(nn.Conv2d(c[0], c[1], 5, stride=2), nn.ReLU(inplace=True), pool(), local_response_norm()),
            nn.Sequential(nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), pool()),
        ]
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(6),
            nn.Flatten(1),
            nn.Linear(c[4] * 6 * 6, hidden),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),  # fc8
        )
        super().__init__(
            MinInputSize(ZFNET_MIN_SIZE, "zfnet"),
            stages,
            head,
            channels=c,
            strides=ZFNET_STRIDES,
            input_size=(in_chans, img_size, img_size),
            num_classes=num_classes,
            num_features=c[4],
        )
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.normal_(0.0, 0.01)
                    m.bias.zero_()

    @torch.no_grad()
    def renormalize_filters_(self, radius: float = 0.1) -> int:
        """Rescale every convolutional filter whose RMS exceeds ``radius`` to RMS ``radius`` (section 3).

        A filter is one output channel's weights ``W[j]`` (all input channels and taps); its RMS is
        ``sqrt(mean(W[j]^2))``. Biases are left alone. A relative tolerance of 1e-6 keeps a filter rescaled by an
        earlier call (whose RMS rounds to about ``radius``) from counting again. Returns the number rescaled.

        Example:
            >>> net = zfnet(width=0.125)
            >>> _ = net.stages[0][0].weight.data.mul_(100.0)  # conv1's filters now have RMS ~1
            >>> net.renormalize_filters_()
            12
        """
        count = 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                rms = m.weight.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
                over = rms > radius * (1.0 + 1e-6)  # tolerance: a rescaled filter's RMS rounds to ~radius
                count += int(over.sum())
                m.weight.mul_(torch.where(over, radius / rms, torch.ones_like(rms)))
        return count


@register_model(
    family="ZFNet",
    source="hand-written (paper)",
    paper="Zeiler and Fergus 2014",
    min_input_size=ZFNET_MIN_SIZE,
    small={"width": 0.125, "img_size": 64},
    small_input_size=64,
)
def zfnet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width: float = 1.0,
    drop_rate: float = 0.5,
    img_size: int = 224,
) -> ZFNet:
    """ZFNet (Zeiler and Fergus 2014), 62,357,608 parameters at 1000 classes.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width: multiplies the filter counts 96/256/384/384/256 and the fully-connected width 4096.
        drop_rate: dropout on the outputs of fc6 and fc7 (the paper: 0.5).
        img_size: the nominal square input size recorded in ``input_size`` (paper: 224; at least 47 px).

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in zfnet().parameters())
        62357608
    """
    return ZFNet(num_classes=num_classes, in_chans=in_chans, width=width, drop_rate=drop_rate, img_size=img_size)
