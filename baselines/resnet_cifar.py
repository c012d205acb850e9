"""The CIFAR ResNets of He et al. 2016 (section 4.2): ResNet-20/32/44/56/110 with option-A shortcuts, Staged.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016, section 4.2
and Table 6. Written from the paper: no library has these networks (reference/architectures.md sections 2.1, 10).

The network for 32x32 inputs, depth ``6n + 2``:

- stem: 3x3 convolution, 16 filters, batch norm, ReLU;
- three stages of ``n`` basic blocks each, on 32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters; the first
  block of stages 2 and 3 subsamples with stride 2;
- head: global average pooling and a fully connected layer (the softmax is in the loss).

A basic block computes ``y = relu(F(x) + s(x))`` with ``F = bn(conv3x3(relu(bn(conv3x3(x)))))`` (batch norm after
every convolution and before the activation, section 3.4). The shortcut ``s`` is *option A* (section 3.3, used for
all CIFAR networks): the identity, and where the block changes shape, the identity subsampled with stride 2
(``x[:, :, ::2, ::2]``) and zero-padded with the new channels, so the shortcuts add no parameters:

.. math::

    s(x) = \\big[\\,x_{:, :, ::2, ::2} \\;;\\; 0_{C_{out} - C_{in}}\\big] \\quad (\\text{channel concatenation})

Parameters at 10 classes: ResNet-20 269,722; -32 464,154; -44 658,586; -56 853,018; -110 1,727,962 (Table 6 gives
0.27M, 0.46M, 0.66M, 0.85M, 1.7M). Initialisation: He et al. 2015 ("Delving deep into rectifiers"), the paper's
[13]: ``N(0, 2 / fan_in)`` for convolutions, batch norm at weight 1 and bias 0; PyTorch's default for the linear layer.

Staged view (shapes per sample at 32 px; ``strides`` are cumulative):

=====  ======================  ============  ========  =======
stage  layers                  output        channels  strides
=====  ======================  ============  ========  =======
stem   conv3x3(16), BN, ReLU   (16, 32, 32)
0      n blocks, 16 filters    (16, 32, 32)  16        1
1      n blocks, 32 filters    (32, 16, 16)  32        2
2      n blocks, 64 filters    (64, 8, 8)    64        4
=====  ======================  ============  ========  =======

Deviations: the paper does not say where the zero channels of option A go; they are appended after the identity
channels here. ``width`` (default 16, the paper's) scales all widths (16/32/64 -> w/2w/4w) for ablations.

Example:
    >>> import torch
    >>> net = resnet20_cifar()
    >>> sum(p.numel() for p in net.parameters())
    269722
    >>> net.channels, net.strides
    ([16, 32, 64], [1, 2, 4])
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model
from .resnet import StagedModel

__all__ = [
    "CifarBasicBlock",
    "CifarResNet",
    "OptionAShortcut",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet44_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
]


class OptionAShortcut(nn.Module):
    """The parameter-free shortcut of option A: stride-``s`` subsampling, then zero channels appended.

    Shapes: ``(B, in_chs, H, W) -> (B, out_chs, ceil(H / s), ceil(W / s))``.

    Example:
        >>> import torch
        >>> s = OptionAShortcut(2, 4, stride=2)
        >>> y = s(torch.ones(1, 2, 4, 4))
        >>> y.shape, y[:, :2].sum().item(), y[:, 2:].abs().sum().item()
        (torch.Size([1, 4, 2, 2]), 8.0, 0.0)
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"option-A shortcuts only add channels: {in_chs} -> {out_chs}")
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.out_chs > self.in_chs:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_chs - self.in_chs))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}, stride={self.stride}"


class CifarBasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, two 3x3 convolutions (He et al. 2016, Fig. 2).

    The shortcut is the identity, or :class:`OptionAShortcut` where the shape changes.
    Shapes: ``(B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut = OptionAShortcut(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(StagedModel):
    """A CIFAR ResNet of depth ``6n + 2`` (He et al. 2016, section 4.2), option-A shortcuts; Staged.

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110, 1202 in the paper).
        num_classes: classifier outputs.
        in_chans: input channels.
        width: filters of the first stage (paper: 16); the stages have ``width``, ``2 width``, ``4 width``.

    Attributes as :class:`~baselines.resnet.StagedModel`; ``depth`` and ``blocks_per_stage`` (``n``) as well.
    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``, made for ``H = W = 32``.
    """

    def __init__(self, *, depth: int = 20, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        n = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)
        stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        in_chs = width
        for i, out_chs in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(CifarBasicBlock(in_chs, out_chs, stride=2 if (i > 0 and j == 0) else 1))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(widths[-1], num_classes))
        super().__init__(
            stem,
            stages,
            head,
            channels=widths,
            strides=(1, 2, 4),
            input_size=(in_chans, 32, 32),
            num_classes=num_classes,
            num_features=widths[-1],
        )
        self.depth = depth
        self.blocks_per_stage = n
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


_INFO: dict[str, Any] = dict(
    family="ResNet (CIFAR)",
    source="hand-written (paper)",
    paper="He et al. 2016",
    min_input_size=8,
    small_input_size=32,
)


@register_model(**_INFO)
def resnet20_cifar(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2; n = 3, option A): 269,722 parameters at 10 classes."""
    return CifarResNet(depth=20, num_classes=num_classes, in_chans=in_chans, width=width)


@register_model(**_INFO)
def resnet32_cifar(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> CifarResNet:
    """ResNet-32 for CIFAR (He et al. 2016, section 4.2; n = 5, option A): 464,154 parameters at 10 classes."""
    return CifarResNet(depth=32, num_classes=num_classes, in_chans=in_chans, width=width)


@register_model(**_INFO)
def resnet44_cifar(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> CifarResNet:
    """ResNet-44 for CIFAR (He et al. 2016, section 4.2; n = 7, option A): 658,586 parameters at 10 classes."""
    return CifarResNet(depth=44, num_classes=num_classes, in_chans=in_chans, width=width)


@register_model(**_INFO)
def resnet56_cifar(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016, section 4.2; n = 9, option A): 853,018 parameters at 10 classes."""
    return CifarResNet(depth=56, num_classes=num_classes, in_chans=in_chans, width=width)


@register_model(**(_INFO | {"small": {"width": 8}, "small_input_size": 16}))
def resnet110_cifar(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> CifarResNet:
    """ResNet-110 for CIFAR (He et al. 2016, section 4.2; n = 18, option A): 1,727,962 parameters at 10 classes."""
    return CifarResNet(depth=110, num_classes=num_classes, in_chans=in_chans, width=width)
