"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016): torchvision's networks, staged.

Reference: F. N. Iandola, S. Han, M. W. Moskewicz, K. Ashraf, W. J. Dally, K. Keutzer, "SqueezeNet: AlexNet-level
accuracy with 50x fewer parameters and <0.5MB model size", arXiv:1602.07360, 2016: section 3 (the Fire module),
Table 1 (SqueezeNet 1.0). SqueezeNet 1.1 is the authors' later revision (released with their code, not in the
paper): a 3x3/2 first convolution with 64 filters and the max-pools moved earlier, 2.4x less computation at the
same accuracy. The networks are torchvision's ``SqueezeNet(version="1_0" | "1_1")`` (never re-implemented here);
:func:`stage_torchvision_squeezenet` regroups its own module objects:

- ``stem`` = an input-size check, conv1, ReLU, max-pool (stride 4);
- ``stages`` = the eight Fire modules fire2 ... fire9, each with the max-pool that follows it, if any (1.0: after
  fire4 and fire8; 1.1: after fire3 and fire5). Output channels 128, 128, 256, 256, 384, 384, 512, 512 in both;
  strides 4, 4, 8, 8, 8, 8, 16, 16 (1.0) and 4, 8, 8, 16, 16, 16, 16, 16 (1.1);
- ``head`` = torchvision's ``classifier`` (dropout 0.5, conv10 1x1 to ``num_classes``, ReLU, global average pool)
  and a flatten.

Parameters at 1000 classes: 1,248,424 (1.0) and 1,235,496 (1.1). Deviations from the paper (torchvision's): no
bypass connections (the paper's best variant adds simple bypasses; its Table 1 network has none), Kaiming-uniform
initialisation (conv10: N(0, 0.01^2)). No width knob: the networks train in well under a second per step at 32 px.

Example:
    >>> import torch
    >>> net = squeezenet1_1(num_classes=10, img_size=32)
    >>> net.strides
    [4, 8, 8, 16, 16, 16, 16, 16]
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torchvision.models.squeezenet import Fire, SqueezeNet

from ._registry import register_model
from .alexnet import MinInputSize, check_img_size
from .resnet import StagedModel

__all__ = ["squeezenet1_0", "squeezenet1_1", "stage_torchvision_squeezenet"]

MIN_SIZE = {"1_0": 21, "1_1": 17}


def _stride(m: nn.Module) -> int:
    s = m.stride if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) else 1
    return int(s[0] if isinstance(s, tuple) else s)


def stage_torchvision_squeezenet(
    net: SqueezeNet, *, input_size: Sequence[int] = (3, 224, 224), version: str = "1_0"
) -> StagedModel:
    """Wrap a torchvision ``SqueezeNet`` (reusing its module objects) as a :class:`~baselines.resnet.StagedModel`.

    ``stem`` = the layers before the first Fire module; one stage per Fire module, with any max-pool after it. The
    staged forward is bit-identical to ``net``'s. ``version`` only sets the input-size check ("1_0" or "1_1").

    Example:
        >>> import torch, torchvision
        >>> tv = torchvision.models.squeezenet1_0(num_classes=10).eval()
        >>> staged = stage_torchvision_squeezenet(tv)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.equal(staged(x), tv(x))
        True
    """
    if version not in MIN_SIZE:
        raise ValueError(f"unknown SqueezeNet version {version!r}; choose from: {', '.join(MIN_SIZE)}")
    f = net.features
    starts = [i for i, m in enumerate(f) if isinstance(m, Fire)]
    ends = starts[1:] + [len(f)]
    stem_stride = 1
    for m in f[: starts[0]]:
        stem_stride *= _stride(m)
    stages, channels, strides, stride = [], [], [], stem_stride
    for a, b in zip(starts, ends):
        stages.append(f[a:b] if b - a > 1 else f[a])
        for m in f[a + 1 : b]:
            stride *= _stride(m)
        channels.append(f[a].expand1x1.out_channels + f[a].expand3x3.out_channels)
        strides.append(stride)
    return StagedModel(
        nn.Sequential(MinInputSize(MIN_SIZE[version], f"SqueezeNet {version.replace('_', '.')}"), *f[: starts[0]]),
        stages,
        nn.Sequential(net.classifier, nn.Flatten(1)),
        channels=channels,
        strides=strides,
        input_size=input_size,
        num_classes=net.num_classes,
        num_features=channels[-1],
    )


def _squeezenet(version: str, num_classes: int, in_chans: int, drop_rate: float, img_size: int) -> StagedModel:
    img_size = check_img_size(img_size, MIN_SIZE[version], f"squeezenet{version}")
    net = SqueezeNet(version, num_classes=num_classes, dropout=drop_rate)
    if in_chans != 3:
        old = net.features[0]
        conv = nn.Conv2d(in_chans, old.out_channels, kernel_size=old.kernel_size, stride=old.stride)
        nn.init.kaiming_uniform_(conv.weight)  # torchvision's initialisation
        nn.init.constant_(conv.bias, 0)
        net.features[0] = conv
    return stage_torchvision_squeezenet(net, input_size=(in_chans, img_size, img_size), version=version)


@register_model(
    family="SqueezeNet",
    source="torchvision squeezenet1_0",
    paper="Iandola et al. 2016",
    min_input_size=MIN_SIZE["1_0"],
    small={"img_size": 32},
    small_input_size=32,
)
def squeezenet1_0(
    *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's SqueezeNet 1.0 (Iandola et al. 2016, Table 1), staged; 1,248,424 parameters at 1000 classes.

    Args:
        num_classes: classifier outputs (conv10's filters).
        in_chans: input channels (a new conv1, torchvision's initialisation, when not 3).
        drop_rate: dropout before conv10 (torchvision's ``dropout``; the paper: 0.5).
        img_size: the nominal square input size recorded in ``input_size`` (at least 21 px).

    Example:
        >>> sum(p.numel() for p in squeezenet1_0().parameters())
        1248424
    """
    return _squeezenet("1_0", num_classes, in_chans, drop_rate, img_size)


@register_model(
    family="SqueezeNet",
    source="torchvision squeezenet1_1",
    paper="Iandola et al. 2016 (v1.1: the authors' revision)",
    min_input_size=MIN_SIZE["1_1"],
    small={"img_size": 32},
    small_input_size=32,
)
def squeezenet1_1(
    *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5, img_size: int = 224
) -> StagedModel:
    """torchvision's SqueezeNet 1.1 (the authors' revision of 1.0), staged; 1,235,496 parameters at 1000 classes.

    Args:
        num_classes: classifier outputs (conv10's filters).
        in_chans: input channels (a new conv1, torchvision's initialisation, when not 3).
        drop_rate: dropout before conv10 (torchvision's ``dropout``).
        img_size: the nominal square input size recorded in ``input_size`` (at least 17 px).

    Example:
        >>> sum(p.numel() for p in squeezenet1_1().parameters())
        1235496
    """
    return _squeezenet("1_1", num_classes, in_chans, drop_rate, img_size)
