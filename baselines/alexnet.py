"""AlexNet (Krizhevsky, Sutskever and Hinton 2012): torchvision's single-column network and the paper's two-group one.

References:
    A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet classification with deep convolutional neural networks",
    NeurIPS 2012 (section 3 and Figure 2: the network; section 5: the initialisation).
    A. Krizhevsky, "One weird trick for parallelizing convolutional neural networks", arXiv:1404.5997, 2014 (the
    single-column 64/192/384/256/256 variant that torchvision implements).

Two registered models, both with five stages (one per convolutional layer; the max-pools close stages 1, 2 and 5)
and the fully-connected layers in the head:

- ``alexnet``: torchvision's ``AlexNet`` (its own module objects, wrapped by :func:`stage_torchvision_alexnet`):
  the 2014 single-column variant, no local response normalisation, no groups, convolutions 64/192/384/256/256 with
  padding (11x11/4 pad 2), ``AdaptiveAvgPool2d(6)`` before the classifier, dropout before fc6 and fc7;
  61,100,840 parameters at 1000 classes (reference/architectures.md section 2.1). Smallest input 63 px.
- ``alexnet_paper``: written from the 2012 paper (torchvision has no such model): 96/256/384/384/256 filters,
  conv 11x11/4 without padding on 227 px (the paper says 224, which does not give its 55x55 conv1 maps; 227
  does), ``groups=2`` on conv2, conv4 and conv5 (the two-GPU split: those layers
  only see the kernel maps on their own GPU), ReLU after every layer, local response normalisation after conv1 and
  conv2 (before their max-pools), overlapping 3x3/2 max-pools, dropout 0.5 on the outputs of fc6 and fc7;
  60,965,224 parameters at 1000 classes. Initialisation as in section 5: weights N(0, 0.01^2), biases 1 in conv2,
  conv4, conv5, fc6 and fc7, 0 elsewhere.

Local response normalisation (section 3.3), over ``n = 5`` adjacent kernel maps, with ``k = 2``, ``alpha = 1e-4``,
``beta = 0.75``:

.. math::

    b^i_{x,y} = a^i_{x,y} \\Big/ \\Big(k + \\alpha \\sum_{j=\\max(0, i-n/2)}^{\\min(N-1, i+n/2)} (a^j_{x,y})^2\\Big)^\\beta

PyTorch's ``nn.LocalResponseNorm`` divides ``alpha`` by ``n`` (it averages the squares), so the paper's
``alpha = 1e-4`` is ``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)`` (:func:`local_response_norm`).

Deviations of ``alexnet_paper`` (all chosen to be exact no-ops at the nominal 227 px, which a test checks): the
max-pools use ``ceil_mode=True`` and an ``AdaptiveAvgPool2d(6)`` precedes fc6, so that inputs down to 39 px pass
(at 227 px every pooling window fits and the conv5 map is already 6x6). One module on one device: ``groups=2``
reproduces the paper's connectivity, not its two-GPU execution. No PCA colour augmentation here (data pipeline).

Width knob (both models): ``width`` scales every convolution and the two hidden fully-connected layers (rounded,
to even numbers in ``alexnet_paper`` so that the groups split evenly); ``width=1`` is the canonical network. The
stage shapes at 227 px (``alexnet_paper``, per sample):

=====  =================================  =============  =======
stage  layers                             output         stride
=====  =================================  =============  =======
conv1  conv 11x11/4, ReLU, LRN, pool 3/2  (96, 27, 27)   8
conv2  conv 5x5 g2, ReLU, LRN, pool 3/2   (256, 13, 13)  16
conv3  conv 3x3                           (384, 13, 13)  16
conv4  conv 3x3 g2                        (384, 13, 13)  16
conv5  conv 3x3 g2, pool 3/2              (256, 6, 6)    32
=====  =================================  =============  =======

``strides[i]`` is the nominal cumulative stride (the product of the layer strides); the unpadded convolutions make
the maps slightly smaller than ``input / stride``. The stem checks the input size (``MinInputSize``) and is otherwise
the identity, so feedback into stage 0 reaches the image itself.

The models are :class:`baselines.resnet.StagedModel` containers. This module also holds the input check
(:class:`MinInputSize`), the width rounding (:func:`scaled`) and the LRN layer that the other classic CNNs of this
package (ZFNet, VGG, GoogLeNet, SqueezeNet) reuse.

Example:
    >>> import torch
    >>> net = alexnet_paper(num_classes=10, width=0.125, img_size=67)
    >>> net.channels, net.strides, net.input_size
    ([12, 32, 48, 48, 32], [8, 16, 16, 16, 32], (3, 67, 67))
    >>> net(torch.zeros(2, 3, 67, 67)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models.alexnet import AlexNet

from ._registry import register_model
from .resnet import StagedModel

__all__ = [
    "LRN_ALPHA",
    "LRN_BETA",
    "LRN_K",
    "LRN_SIZE",
    "MinInputSize",
    "alexnet",
    "alexnet_paper",
    "check_img_size",
    "local_response_norm",
    "scaled",
    "stage_torchvision_alexnet",
]

# Section 3.3 of the paper: n, k, alpha, beta (alpha as in the paper's formula, i.e. not divided by n).
LRN_SIZE, LRN_K, LRN_ALPHA, LRN_BETA = 5, 2.0, 1e-4, 0.75


def local_response_norm() -> nn.LocalResponseNorm:
    """AlexNet's local response normalisation: n = 5, k = 2, alpha = 1e-4, beta = 0.75 (paper section 3.3).

    ``nn.LocalResponseNorm`` divides its ``alpha`` by ``size``, so it gets ``alpha = 5e-4`` here.

    Example:
        >>> local_response_norm()
        LocalResponseNorm(5, alpha=0.0005, beta=0.75, k=2.0)
    """
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


def scaled(channels: int, width: float, multiple: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``multiple`` (at least ``multiple``): the width knob.

    Example:
        >>> scaled(96, 0.125), scaled(96, 0.1, multiple=2), scaled(4096, 1.0)
        (12, 10, 4096)
    """
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier of the canonical channel counts, got {width!r}")
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def check_img_size(img_size: int, min_size: int, model: str) -> int:
    """Validate a square input size against the smallest size ``model`` accepts; returns it as an ``int``."""
    if int(img_size) != img_size or img_size < min_size:
        raise ValueError(f"{model} needs img_size >= {min_size} px (its smallest input), got {img_size!r}")
    return int(img_size)


class MinInputSize(nn.Module):
    """An identity that raises ``ValueError`` unless its input is ``(B, C, H, W)`` with ``H, W >= min_size``.

    Used as (the first module of) a stem, so that a too-small image fails with a clear message instead of deep
    inside a pooling layer. Shapes: ``(B, C, H, W)`` unchanged.

    Example:
        >>> MinInputSize(63, "alexnet")(torch.zeros(1, 3, 32, 32))
        Traceback (most recent call last):
        ...
        ValueError: alexnet needs input (B, C, H, W) with H, W >= 63 px, got (1, 3, 32, 32)
    """

    def __init__(self, min_size: int, model: str) -> None:
        super().__init__()
        self.min_size = int(min_size)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-2] < self.min_size or x.shape[-1] < self.min_size:
            raise ValueError(
                f"{self.model} needs input (B, C, H, W) with H, W >= {self.min_size} px, got {tuple(x.shape)}"
            )
        return x

    def extra_repr(self) -> str:
        return f"min_size={self.min_size}"


# ----------------------------------------------------------------------------------------------- torchvision AlexNet

ALEXNET_MIN_SIZE = 63  # torchvision's meta["min_size"]; reference/architectures.md section 4
ALEXNET_STRIDES = (8, 16, 16, 16, 32)


def stage_torchvision_alexnet(net: AlexNet, *, input_size: Sequence[int] = (3, 224, 224)) -> StagedModel:
    """Wrap a torchvision ``AlexNet`` (reusing its module objects) as a :class:`StagedModel`.

    ``stem`` = an input-size check; ``stages`` = ``features[0:3]`` (conv1, ReLU, pool), ``features[3:6]`` (conv2,
    ReLU, pool), ``features[6:8]``, ``features[8:10]``, ``features[10:13]`` (conv5, ReLU, pool); ``head`` =
    ``avgpool``, flatten, ``classifier``. The staged forward is bit-identical to ``net``'s.

    Example:
        >>> import torchvision
        >>> tv = torchvision.models.alexnet(num_classes=10).eval()
        >>> staged = stage_torchvision_alexnet(tv)
        >>> x = torch.randn(1, 3, 64, 64)
        >>> torch.equal(staged(x), tv(x))
        True
    """
    f = net.features
    bounds = ((0, 3), (3, 6), (6, 8), (8, 10), (10, 13))
    stages = [f[a:b] for a, b in bounds]
    return StagedModel(
        MinInputSize(ALEXNET_MIN_SIZE, "alexnet"),
        stages,
        nn.Sequential(net.avgpool, nn.Flatten(1), net.classifier),
        channels=[f[a].out_channels for a, _ in bounds],
        strides=ALEXNET_STRIDES,
        input_size=input_size,
        num_classes=net.classifier[-1].out_features,
        num_features=f[10].out_channels,
    )


@register_model(
    family="AlexNet",
    source="torchvision alexnet",
    paper="Krizhevsky 2014",
    min_input_size=ALEXNET_MIN_SIZE,
    small={"width": 0.125, "img_size": 64},
    small_input_size=64,
)
def alexnet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width: float = 1.0,
    drop_rate: float = 0.5,
    img_size: int = 224,
) -> StagedModel:
    """torchvision's AlexNet (the 2014 single-column variant), staged; 61,100,840 parameters at 1000 classes.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels (a new first convolution, PyTorch's default init, when not 3).
        width: multiplies the convolution widths 64/192/384/256/256 and the fully-connected width 4096. At
            ``width != 1`` the layers are torchvision's layout rebuilt at the new sizes (PyTorch's default
            initialisation, as torchvision's AlexNet); ``width=1`` is torchvision's model itself.
        drop_rate: dropout before fc6 and fc7 (torchvision's ``dropout``).
        img_size: the nominal square input size recorded in ``input_size`` (at least 63 px).

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in alexnet().parameters())
        61100840
    """
    img_size = check_img_size(img_size, ALEXNET_MIN_SIZE, "alexnet")
    if width == 1.0:
        net = AlexNet(num_classes=num_classes, dropout=drop_rate)
        if in_chans != 3:
            net.features[0] = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
    else:
        c = [scaled(n, width) for n in (64, 192, 384, 256, 256)]
        hidden = scaled(4096, width)
        with torch.device("meta"):  # only the layout is kept: every parametrised layer is replaced below
            net = AlexNet(num_classes=num_classes, dropout=drop_rate)
        f, cls = net.features, net.classifier
        f[0] = nn.Conv2d(in_chans, c[0], kernel_size=11, stride=4, padding=2)
        f[3] = nn.Conv2d(c[0], c[1], kernel_size=5, padding=2)
        f[6] = nn.Conv2d(c[1], c[2], kernel_size=3, padding=1)
        f[8] = nn.Conv2d(c[2], c[3], kernel_size=3, padding=1)
        f[10] = nn.Conv2d(c[3], c[4], kernel_size=3, padding=1)
        cls[1] = nn.Linear(c[4] * 6 * 6, hidden)
        cls[4] = nn.Linear(hidden, hidden)
        cls[6] = nn.Linear(hidden, num_classes)
    return stage_torchvision_alexnet(net, input_size=(in_chans, img_size, img_size))


# ----------------------------------------------------------------------------------------------- paper AlexNet

ALEXNET_PAPER_MIN_SIZE = 39  # with ceil-mode pools; the strict paper stack needs 67 px


def _init_alexnet_paper_(net: nn.Module) -> None:
    """Section 5: weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5 and the hidden fully-connected layers."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ones = {1, 3, 4, 5, 6}  # conv2, conv4, conv5, fc6, fc7 (conv1 = 0, ..., fc8 = 7)
    with torch.no_grad():
        for i, m in enumerate(layers):
            m.weight.normal_(0.0, 0.01)
            m.bias.fill_(1.0 if i in ones else 0.0)


@register_model(
    family="AlexNet",
    source="hand-written (paper)",
    paper="Krizhevsky et al. 2012",
    min_input_size=ALEXNET_PAPER_MIN_SIZE,
    small={"width": 0.125, "img_size": 64},
    small_input_size=64,
)
def alexnet_paper(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width: float = 1.0,
    drop_rate: float = 0.5,
    img_size: int = 227,
) -> StagedModel:
    """Paper-faithful AlexNet (Krizhevsky et al. 2012): two groups, LRN; 60,965,224 parameters at 1000 classes.

    See the module docstring for the layers, the initialisation and the deviations (ceil-mode pools and an adaptive
    6x6 average pool, both exact no-ops at 227 px, so that inputs down to 39 px work).

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        width: multiplies the filter counts 96/256/384/384/256 and the fully-connected width 4096 (filter counts
            rounded to even numbers for the two groups).
        drop_rate: dropout on the outputs of fc6 and fc7 (the paper: 0.5).
        img_size: the nominal square input size recorded in ``input_size`` (paper: 227; at least 39 px).

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in alexnet_paper().parameters())
        60965224
    """
    img_size = check_img_size(img_size, ALEXNET_PAPER_MIN_SIZE, "alexnet_paper")
    c = [scaled(n, width, multiple=2) for n in (96, 256, 384, 384, 256)]
    hidden = scaled(4096, width)

    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

    stages = [
        nn.Sequential(nn.Conv2d(in_chans, c[0], 11, stride=4), nn.ReLU(inplace=True), local_response_norm(), pool()),
        nn.Sequential(
            nn.Conv2d(c[0], c[1], 5, padding=2, groups=2), nn.ReLU(inplace=True), local_response_norm(), pool()
        ),
        nn.Sequential(nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(c[2], c[3], 3, padding=1, groups=2), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(c[3], c[4], 3, padding=1, groups=2), nn.ReLU(inplace=True), pool()),
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
    net = StagedModel(
        MinInputSize(ALEXNET_PAPER_MIN_SIZE, "alexnet_paper"),
        stages,
        head,
        channels=c,
        strides=ALEXNET_STRIDES,
        input_size=(in_chans, img_size, img_size),
        num_classes=num_classes,
        num_features=c[4],
    )
    _init_alexnet_paper_(net)
    return net
