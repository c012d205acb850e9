"""ResNet-18 (He et al. 2016) from timm, with the Staged view; and its small-input (32 px) variant.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016. The networks
are timm's ``timm.models.resnet.ResNet`` with ``BasicBlock`` and ``layers=(2, 2, 2, 2)`` (timm source:
``timm/models/resnet.py``, the same network as timm's and torchvision's ``resnet18``: 11,689,512 parameters at 1000
classes), never re-implemented here. :class:`StagedResNet` only regroups timm's own module objects:

- ``stem`` = ``nn.Sequential(conv1, bn1, act1, maxpool)``;
- ``stages`` = ``layer1 .. layer4`` (outputs: 64, 128, 256, 512 channels at strides 4, 8, 16, 32 for ``resnet18``;
  ``strides[i]`` is the cumulative stride, timm's ``feature_info`` ``reduction``);
- ``head`` = :class:`ResNetHead`: timm's ``forward_head`` as a module (``global_pool``, dropout if ``drop_rate``,
  ``fc``),

so the staged forward is bit-identical to timm's forward with the same weights. The parameter names differ from
timm's (``stem.0.weight`` for ``conv1.weight``): to load timm weights, load them into the timm model and wrap it with
:meth:`StagedResNet.from_timm`.

``timm.create_model("resnet18")`` returns timm's own ``resnet18`` (the identical network, without the Staged
attributes); ``baselines.create_model("resnet18")`` returns the Staged wrapper.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet
from torch import Tensor

from ._registry import register_model

__all__ = ["ResNetHead", "StagedResNet", "resnet18", "resnet18_small", "small_input_stem_"]


class ResNetHead(nn.Module):
    """timm's ``ResNet.forward_head`` as a module: ``fc(dropout(global_pool(x)))``, dropout only if ``drop_rate``.

    ``global_pool`` and ``fc`` are the timm model's own modules. Shapes: ``(B, C, H, W) -> (B, num_classes)``
    (``(B, C)`` if ``fc`` is an identity, i.e. ``num_classes=0``).
    """

    def __init__(self, global_pool: nn.Module, fc: nn.Module, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.global_pool = global_pool
        self.fc = fc
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return self.fc(x)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}"


class StagedResNet(nn.Module):
    """A timm ResNet seen as ``stem -> layer1 .. layer4 -> head`` (the Staged contract, DESIGN.md section 3.1).

    Build it with :meth:`from_timm`, which reuses the timm model's module objects. Attributes: ``stem``, ``stages``
    (``nn.ModuleList``), ``head``, ``channels`` and ``strides`` (per stage output), ``input_size`` (C, H, W),
    ``num_classes``, ``num_features`` (width of the pooled features), ``in_chans``.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``.

    Example:
        >>> import timm, torch
        >>> net = timm.create_model("resnet18", num_classes=10).eval()
        >>> staged = StagedResNet.from_timm(net)
        >>> staged.channels, staged.strides
        ([64, 128, 256, 512], [4, 8, 16, 32])
        >>> x = torch.randn(1, 3, 64, 64)
        >>> torch.equal(staged(x), net(x))
        True
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[nn.Module],
        head: nn.Module,
        *,
        channels: Sequence[int],
        strides: Sequence[int],
        input_size: Sequence[int],
        num_classes: int,
        num_features: int,
    ) -> None:
        super().__init__()
        if not len(stages) == len(channels) == len(strides):
            raise ValueError(f"{len(stages)} stages but {len(channels)} channels and {len(strides)} strides")
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.channels: list[int] = [int(c) for c in channels]
        self.strides: list[int] = [int(s) for s in strides]
        self.input_size: tuple[int, int, int] = tuple(int(s) for s in input_size)  # type: ignore[assignment]
        self.in_chans = self.input_size[0]
        self.num_classes = num_classes
        self.num_features = num_features

    @classmethod
    def from_timm(cls, model: ResNet, *, input_size: Sequence[int] | None = None) -> StagedResNet:
        """Wrap a timm ``ResNet`` (any depth or variant), reusing its module objects (no copies).

        Args:
            model: a ``timm.models.resnet.ResNet``; its ``feature_info`` gives ``channels`` and ``strides``.
            input_size: (C, H, W); default: the model's ``pretrained_cfg`` input size if it has one, else 224 px,
                with C = ``model.in_chans``.

        The wrapper and ``model`` share parameters and buffers: train either, both change. Gradient checkpointing
        (``model.set_grad_checkpointing``) is not carried over.
        """
        needed = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4", "global_pool", "fc")
        missing = [n for n in needed if not hasattr(model, n)]
        if missing:
            raise TypeError(f"{type(model).__name__} is not a timm ResNet: missing {', '.join(missing)}")
        info = {f["module"]: f for f in model.feature_info}
        names = [f"layer{i}" for i in range(1, 5)]
        in_chans = int(getattr(model, "in_chans", 3))
        if input_size is None:
            cfg_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
            input_size = (in_chans, *cfg_size[1:])
        return cls(
            nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool),
            [getattr(model, n) for n in names],
            ResNetHead(model.global_pool, model.fc, float(model.drop_rate)),
            channels=[info[n]["num_chs"] for n in names],
            strides=[info[n]["reduction"] for n in names],
            input_size=input_size,
            num_classes=int(model.num_classes),
            num_features=int(model.num_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``head(stages[-1](...stages[0](stem(x))))``: ``(B, in_chans, H, W) -> (B, num_classes)``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def small_input_stem_(model: ResNet) -> ResNet:
    """Give a timm ResNet the small-input (32 px) stem, in place: 3x3 stride-1 conv, BN, ReLU, no max-pool.

    Replaces ``conv1`` by ``Conv2d(in_chans, bn1.num_features, 3, stride=1, padding=1, bias=False)`` (timm's
    Kaiming-normal fan-out initialisation) and ``maxpool`` by ``nn.Identity()``, keeps ``bn1`` and ``act1``, and
    divides the ``feature_info`` reductions accordingly (``act1``: 1; ``layer1..4``: 1, 2, 4, 8). This is the stem
    of most CIFAR ResNet-18 code, not of the paper's CIFAR ResNets (He et al. 2016 section 4.2: ResNet-20/32/...,
    widths 16/32/64, option-A shortcuts; out of scope here). Meant for timm's plain stem (``stem_type=""``). The stem
    width is ``bn1.num_features``, which timm fixes at 64 for the plain stem whatever ``channels`` is. Returns
    ``model``; a second call does nothing.

    Example:
        >>> import timm
        >>> net = small_input_stem_(timm.create_model("resnet18", num_classes=10))
        >>> [f["reduction"] for f in net.feature_info]
        [1, 1, 2, 4, 8]
    """
    if getattr(model, "_small_input_stem", False):
        return model
    old = next(model.conv1.parameters())
    conv = nn.Conv2d(
        int(getattr(model, "in_chans", 3)),
        model.bn1.num_features,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=False,
        device=old.device,
        dtype=old.dtype,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv
    model.maxpool = nn.Identity()
    for f in model.feature_info:
        f["reduction"] //= 2 if f["module"] == "act1" else 4  # removed: conv1's stride 2 (and maxpool's stride 2)
    model._small_input_stem = True
    return model


@register_model(timm_owned=True)
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedResNet:
    """ResNet-18 (He et al. 2016) for 224 px ImageNet-style inputs: timm's ``resnet18`` with the Staged view.

    timm's ``ResNet(BasicBlock, layers=(2, 2, 2, 2))``; 11,689,512 parameters at 1000 classes and 3 channels, as
    timm's and torchvision's ``resnet18``. Stem downsamples 4x (7x7/2 conv, 3x3/2 max-pool): at 32 px layer4 is 1x1,
    use :func:`resnet18_small` there. ``kwargs`` go to timm's ``ResNet`` (``drop_rate``, ``drop_path_rate``,
    ``channels``, ``output_stride``, ...). timm owns the name: ``timm.create_model("resnet18")`` is timm's own model.

    Example:
        >>> sum(p.numel() for p in resnet18().parameters())
        11689512
    """
    net = ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans, **kwargs)
    return StagedResNet.from_timm(net, input_size=(in_chans, 224, 224))


@register_model
def resnet18_small(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    channels: Sequence[int] = (64, 128, 256, 512),
    **kwargs: Any,
) -> StagedResNet:
    """ResNet-18 for 32 px inputs (CIFAR-style stem): timm's ResNet-18 with :func:`small_input_stem_`.

    Stem: 3x3 stride-1 conv (64 channels), BN, ReLU, no max-pool, so the stage strides are 1, 2, 4, 8 (layer4 is 4x4
    at 32 px). 11,173,962 parameters at 10 classes, 3 channels and the default widths. This is the ResNet-18 of most
    CIFAR code, **not** the paper's CIFAR ResNet (He et al. 2016 section 4.2: ResNet-20/32/44/56/110 with option-A
    shortcuts, out of scope here).

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        channels: the four stage widths, timm ResNet's ``channels`` argument: a width knob, e.g. ``(16, 32, 64, 128)``
            for a fast CPU quickstart. The stem stays 64 wide (timm fixes it), so with ``channels[0] != 64`` the
            first block of layer1 gets a 1x1 projection shortcut.
        **kwargs: other timm ``ResNet`` arguments (``drop_rate``, ``drop_path_rate``, ``act_layer``, ...).

    Example:
        >>> import torch
        >>> net = resnet18_small(channels=(16, 32, 64, 128))
        >>> net.channels, net.strides
        ([16, 32, 64, 128], [1, 2, 4, 8])
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    channels = tuple(int(c) for c in channels)
    if len(channels) != 4:
        raise ValueError(f"resnet18_small needs 4 stage widths in channels, got {channels}")
    net = ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans, channels=channels, **kwargs)
    return StagedResNet.from_timm(small_input_stem_(net), input_size=(in_chans, 32, 32))
