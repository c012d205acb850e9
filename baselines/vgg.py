"""VGG-11/13/16/19 with and without batch normalisation (Simonyan and Zisserman 2015): torchvision's, staged.

Reference: K. Simonyan, A. Zisserman, "Very deep convolutional networks for large-scale image recognition", ICLR
2015 (arXiv:1409.1556): Table 1, configurations A (11 weight layers), B (13), D (16) and E (19); Table 2 gives 133,
133, 138 and 144 million parameters. The networks are torchvision's ``VGG`` built by torchvision's ``make_layers``
from its configurations ``A``, ``B``, ``D``, ``E`` (never re-implemented here); :func:`stage_torchvision_vgg` only
regroups torchvision's own module objects:

- ``stem`` = an input-size check (identity; VGG needs 32 px: five 2x2 max-pools);
- ``stages`` = the five convolution blocks, each ending with its max-pool (outputs at strides 2, 4, 8, 16, 32; 64,
  128, 256, 512, 512 channels);
- ``head`` = ``avgpool`` (adaptive, 7x7), flatten, ``classifier`` (fc6 4096, ReLU, dropout, fc7 4096, ReLU,
  dropout, fc8).

Parameters at 1000 classes: 132,863,336 / 133,047,848 / 138,357,544 / 143,667,240 (VGG-11/13/16/19), with batch
normalisation 132,868,840 / 133,053,736 / 138,365,992 / 143,678,248.

Why torchvision's and not timm's: timm owns the names ``vgg11`` ... ``vgg19_bn``, but its VGG computes fc6 as a 7x7
convolution (``ConvMlp``) that costs several times torchvision's linear fc6 on CPU (reference/architectures.md
section 3, item 3), and its parameter shapes differ, so it is not the identical network. The models here are
therefore registered as ``tv_vgg11`` ... ``tv_vgg19_bn`` (timm's own naming for torchvision variants, e.g.
``tv_resnet50``); ``timm.create_model("vgg16")`` stays timm's model.

Deviations from the paper (torchvision's): the ``*_bn`` variants insert batch normalisation after every convolution
(not in the paper, which predates it); the weights are initialised as torchvision does (Kaiming-normal fan-out
convolutions, N(0, 0.01^2) linear layers, zero biases) rather than by the paper's scheme (N(0, 0.01^2) for net A,
deeper nets initialised from A's layers); the adaptive 7x7 average pool before fc6 is the identity at 224 px and
lets smaller inputs through (at 32 px it replicates the 1x1 map 49 times). The paper's configurations A-LRN and C
(1x1 convolutions) are not provided.

``width`` scales every convolution and the fully-connected width (``width=1`` is torchvision's network itself).

Example:
    >>> import torch
    >>> net = tv_vgg11(num_classes=10, width=0.125, img_size=32)
    >>> net.channels, net.strides
    ([8, 16, 32, 64, 64], [2, 4, 8, 16, 32])
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from torchvision.models.vgg import VGG, cfgs, make_layers

from ._registry import register_model
from .alexnet import MinInputSize, check_img_size, scaled
from .resnet import StagedModel

__all__ = [
    "VGG_CONFIGS",
    "stage_torchvision_vgg",
    "tv_vgg",
    "tv_vgg11",
    "tv_vgg11_bn",
    "tv_vgg13",
    "tv_vgg13_bn",
    "tv_vgg16",
    "tv_vgg16_bn",
    "tv_vgg19",
    "tv_vgg19_bn",
]

VGG_MIN_SIZE = 32
VGG_CONFIGS = {11: "A", 13: "B", 16: "D", 19: "E"}  # depth -> torchvision's (and the paper's) configuration


def stage_torchvision_vgg(net: VGG, *, input_size: Sequence[int] = (3, 224, 224)) -> StagedModel:
    """Wrap a torchvision ``VGG`` (reusing its module objects) as a :class:`~baselines.resnet.StagedModel`.

    One stage per convolution block, split after each ``nn.MaxPool2d`` of ``net.features``. The staged forward is
    bit-identical to ``net``'s.

    Example:
        >>> import torchvision
        >>> with torch.device("meta"):  # the structure only: parity is checked in tests/test_baselines_classic.py
        ...     staged = stage_torchvision_vgg(torchvision.models.vgg16_bn())
        >>> [len(stage) for stage in staged.stages], staged.channels
        ([7, 7, 10, 10, 10], [64, 128, 256, 512, 512])
    """
    f = net.features
    ends = [i + 1 for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)]
    if len(ends) != 5 or ends[-1] != len(f):
        raise TypeError(f"expected torchvision VGG features with five max-pool-terminated blocks, got {len(ends)}")
    stages = [f[a:b] for a, b in zip([0] + ends[:-1], ends)]
    channels = [[m.out_channels for m in s if isinstance(m, nn.Conv2d)][-1] for s in stages]
    return StagedModel(
        MinInputSize(VGG_MIN_SIZE, "VGG"),
        stages,
        nn.Sequential(net.avgpool, nn.Flatten(1), net.classifier),
        channels=channels,
        strides=[2, 4, 8, 16, 32],
        input_size=input_size,
        num_classes=net.classifier[-1].out_features,
        num_features=channels[-1],
    )


def _init_like_torchvision_(net: nn.Module) -> None:
    """torchvision's VGG initialisation (the one its constructor applies with ``init_weights=True``)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


def tv_vgg(
    depth: int,
    *,
    batch_norm: bool = False,
    num_classes: int = 1000,
    in_chans: int = 3,
    width: float = 1.0,
    drop_rate: float = 0.5,
    img_size: int = 224,
) -> StagedModel:
    """Build torchvision's VGG-``depth`` (11, 13, 16 or 19), optionally with batch norm, and stage it.

    Args:
        depth: 11, 13, 16 or 19 (the paper's configurations A, B, D, E).
        batch_norm: batch normalisation after every convolution (torchvision's ``*_bn``).
        num_classes: classifier outputs.
        in_chans: input channels (a new first convolution, torchvision's initialisation, when not 3).
        width: multiplies the convolution widths and the fully-connected width 4096. ``width=1``: torchvision's
            ``VGG(make_layers(cfgs[...]))`` itself; otherwise the same layers at the new widths, initialised as
            torchvision initialises VGG.
        drop_rate: dropout after fc6 and fc7 (torchvision's ``dropout``; the paper: 0.5).
        img_size: the nominal square input size recorded in ``input_size`` (at least 32 px).
    """
    if depth not in VGG_CONFIGS:
        raise ValueError(f"VGG depth must be one of {', '.join(map(str, VGG_CONFIGS))}, got {depth!r}")
    img_size = check_img_size(img_size, VGG_MIN_SIZE, f"VGG-{depth}")
    cfg = [v if v == "M" else scaled(int(v), width) for v in cfgs[VGG_CONFIGS[depth]]]
    features = make_layers(cfg, batch_norm=batch_norm)
    if width == 1.0:
        net = VGG(features, num_classes=num_classes, init_weights=True, dropout=drop_rate)
    else:
        with torch.device("meta"):  # the full-width classifier built here is replaced below
            net = VGG(features, num_classes=num_classes, init_weights=False, dropout=drop_rate)
        last, hidden = int(cfg[-2]), scaled(4096, width)
        cls = net.classifier
        cls[0] = nn.Linear(last * 7 * 7, hidden)
        cls[3] = nn.Linear(hidden, hidden)
        cls[6] = nn.Linear(hidden, num_classes)
        _init_like_torchvision_(net)
    if in_chans != 3:
        conv = nn.Conv2d(in_chans, int(cfg[0]), kernel_size=3, padding=1)
        _init_like_torchvision_(conv)
        net.features[0] = conv
    return stage_torchvision_vgg(net, input_size=(in_chans, img_size, img_size))


_SIMONYAN = "Simonyan and Zisserman 2015"
# fast CPU configuration: 1/8 of the widths (convolutions 8..64, fully-connected 512) at 32 px
_SMALL: dict[str, Any] = dict(min_input_size=VGG_MIN_SIZE, small={"width": 0.125, "img_size": 32}, small_input_size=32)


@register_model(family="VGG", source="torchvision vgg11", paper=_SIMONYAN, **_SMALL)
def tv_vgg11(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-11 (configuration A), staged; 132,863,336 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg11().parameters())
        132863336
    """
    return tv_vgg(11, num_classes=num_classes, in_chans=in_chans, width=width, drop_rate=drop_rate, img_size=img_size)


@register_model(family="VGG", source="torchvision vgg11_bn", paper=_SIMONYAN, **_SMALL)
def tv_vgg11_bn(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-11 with batch normalisation (configuration A), staged; 132,868,840 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg11_bn().parameters())
        132868840
    """
    return tv_vgg(
        11,
        batch_norm=True,
        num_classes=num_classes,
        in_chans=in_chans,
        width=width,
        drop_rate=drop_rate,
        img_size=img_size,
    )


@register_model(family="VGG", source="torchvision vgg13", paper=_SIMONYAN, **_SMALL)
def tv_vgg13(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-13 (configuration B), staged; 133,047,848 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg13().parameters())
        133047848
    """
    return tv_vgg(13, num_classes=num_classes, in_chans=in_chans, width=width, drop_rate=drop_rate, img_size=img_size)


@register_model(family="VGG", source="torchvision vgg13_bn", paper=_SIMONYAN, **_SMALL)
def tv_vgg13_bn(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-13 with batch normalisation (configuration B), staged; 133,053,736 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg13_bn().parameters())
        133053736
    """
    return tv_vgg(
        13,
        batch_norm=True,
        num_classes=num_classes,
        in_chans=in_chans,
        width=width,
        drop_rate=drop_rate,
        img_size=img_size,
    )


@register_model(family="VGG", source="torchvision vgg16", paper=_SIMONYAN, **_SMALL)
def tv_vgg16(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-16 (configuration D), staged; 138,357,544 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg16().parameters())
        138357544
    """
    return tv_vgg(16, num_classes=num_classes, in_chans=in_chans, width=width, drop_rate=drop_rate, img_size=img_size)


@register_model(family="VGG", source="torchvision vgg16_bn", paper=_SIMONYAN, **_SMALL)
def tv_vgg16_bn(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-16 with batch normalisation (configuration D), staged; 138,365,992 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg16_bn().parameters())
        138365992
    """
    return tv_vgg(
        16,
        batch_norm=True,
        num_classes=num_classes,
        in_chans=in_chans,
        width=width,
        drop_rate=drop_rate,
        img_size=img_size,
    )


@register_model(family="VGG", source="torchvision vgg19", paper=_SIMONYAN, **_SMALL)
def tv_vgg19(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-19 (configuration E), staged; 143,667,240 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg19().parameters())
        143667240
    """
    return tv_vgg(19, num_classes=num_classes, in_chans=in_chans, width=width, drop_rate=drop_rate, img_size=img_size)


@register_model(family="VGG", source="torchvision vgg19_bn", paper=_SIMONYAN, **_SMALL)
def tv_vgg19_bn(
    *, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's VGG-19 with batch normalisation (configuration E), staged; 143,678,248 parameters at 1000 classes.

    Arguments as :func:`tv_vgg`.

    Example:
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in tv_vgg19_bn().parameters())
        143678248
    """
    return tv_vgg(
        19,
        batch_norm=True,
        num_classes=num_classes,
        in_chans=in_chans,
        width=width,
        drop_rate=drop_rate,
        img_size=img_size,
    )
