"""ImageNet ResNets (He et al. 2016) from timm, with the Staged view; ResNet-18's small-input (32 px) variant.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016, Table 1.
The networks are timm's ``timm.models.resnet.ResNet`` (timm source: ``timm/models/resnet.py``), never
re-implemented here; parameter counts at 1000 classes, equal to timm's and torchvision's models of the same name:

==========  ===========  ======================  ===========
model       block        layers                  parameters
==========  ===========  ======================  ===========
resnet18    BasicBlock   (2, 2, 2, 2)            11,689,512
resnet34    BasicBlock   (3, 4, 6, 3)            21,797,672
resnet50    Bottleneck   (3, 4, 6, 3)            25,557,032
resnet101   Bottleneck   (3, 4, 23, 3)           44,549,160
resnet152   Bottleneck   (3, 8, 36, 3)           60,192,808
==========  ===========  ======================  ===========

timm's Bottleneck puts the stride on the 3x3 convolution ("ResNet v1.5", as torchvision), not on the first 1x1 as
in the paper's Caffe model; same parameters, slightly different function (reference/architectures.md section 3).
:class:`StagedResNet` only regroups timm's own module objects:

- ``stem`` = ``nn.Sequential(conv1, bn1, act1, maxpool)``;
- ``stages`` = ``layer1 .. layer4`` (outputs: 64, 128, 256, 512 channels at strides 4, 8, 16, 32 for ``resnet18``;
  ``strides[i]`` is the cumulative stride, timm's ``feature_info`` ``reduction``);
- ``head`` = :class:`ResNetHead`: timm's ``forward_head`` as a module (``global_pool``, dropout if ``drop_rate``,
  ``fc``),

so the staged forward is bit-identical to timm's forward with the same weights. The parameter names differ from
timm's (``stem.0.weight`` for ``conv1.weight``): to load timm weights, load them into the timm model and wrap it with
:meth:`StagedResNet.from_timm`.

``timm.create_model("resnet50")`` returns timm's own ``resnet50`` (the identical network, without the Staged
attributes); ``baselines.create_model("resnet50")`` returns the Staged wrapper. The ImageNet stem downsamples 4x, so
at 32 px layer4 is 1x1: for CIFAR-size inputs use ``resnet18_small`` or the paper's CIFAR ResNets
(``baselines.resnet_cifar``). :class:`StagedModel` is the Staged container the other family modules reuse.

Example:
    >>> import torch
    >>> net = resnet50(num_classes=10, channels=(8, 16, 32, 64)).eval()  # a narrow ResNet-50 for a CPU
    >>> net.channels, net.strides
    ([32, 64, 128, 256], [4, 8, 16, 32])
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor

from ._registry import register_model

__all__ = [
    "ResNetHead",
    "StagedModel",
    "StagedResNet",
    "resnet18",
    "resnet18_small",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "small_input_stem_",
]


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


class StagedModel(nn.Module):
    """A network given as ``stem -> stages[0] -> ... -> stages[-1] -> head`` (the Staged contract, DESIGN.md 3.1).

    The container of every wrapped library model here (ResNet, DenseNet, NASNet, ViT) and of the hand-written CIFAR
    ResNets. Attributes: ``stem``, ``stages`` (``nn.ModuleList``), ``head``, ``channels`` and ``strides`` (per stage
    output: channels, or the token dimension for token stages; cumulative stride in input pixels, 0 for vectors),
    ``input_size`` (C, H, W), ``in_chans``, ``num_classes``, ``num_features`` (width of the features the classifier
    reads).

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``.

    Example:
        >>> import torch
        >>> head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
        >>> m = StagedModel(nn.Identity(), [nn.Conv2d(1, 4, 3, 2, 1)], head, channels=[4], strides=[2],
        ...                 input_size=(1, 8, 8), num_classes=2, num_features=64)
        >>> m(torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3, 2])
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

    def forward(self, x: Tensor) -> Tensor:
        """``head(stages[-1](...stages[0](stem(x))))``: ``(B, in_chans, H, W) -> (B, num_classes)``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def default_input_size(model: nn.Module, input_size: Sequence[int] | None, fallback: int = 224) -> tuple[int, ...]:
    """``input_size`` if given, else ``(model.in_chans, H, W)`` from its ``pretrained_cfg``, or ``fallback`` px."""
    if input_size is not None:
        return tuple(int(s) for s in input_size)
    in_chans = int(getattr(model, "in_chans", 3))
    cfg_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, fallback, fallback))
    return (in_chans, *(int(s) for s in cfg_size[1:]))


class StagedResNet(StagedModel):
    """A timm ResNet seen as ``stem -> layer1 .. layer4 -> head`` (the Staged contract, DESIGN.md section 3.1).

    Build it with :meth:`from_timm`, which reuses the timm model's module objects. Attributes as
    :class:`StagedModel`.

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
        input_size = default_input_size(model, input_size)
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


def small_input_stem_(model: ResNet) -> ResNet:
    """Give a timm ResNet the small-input (32 px) stem, in place: 3x3 stride-1 conv, BN, ReLU, no max-pool.

    Replaces ``conv1`` by ``Conv2d(in_chans, bn1.num_features, 3, stride=1, padding=1, bias=False)`` (timm's
    Kaiming-normal fan-out initialisation) and ``maxpool`` by ``nn.Identity()``, keeps ``bn1`` and ``act1``, and
    divides the ``feature_info`` reductions accordingly (``act1``: 1; ``layer1..4``: 1, 2, 4, 8). This is the stem
    of most CIFAR ResNet-18 code, not of the paper's CIFAR ResNets (He et al. 2016 section 4.2: ResNet-20/32/...,
    widths 16/32/64, option-A shortcuts: :mod:`baselines.resnet_cifar`). Meant for timm's plain stem
    (``stem_type=""``). The stem width is ``bn1.num_features``, which timm fixes at 64 for the plain stem whatever
    ``channels`` is. Returns ``model``; a second call does nothing.

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


_HE2016 = "He et al. 2016"
# A narrow configuration for fast CPU tests: stage widths 8..64 (timm keeps the 7x7 stem at 64 channels).
_NARROW = {"channels": (8, 16, 32, 64)}


@register_model(
    timm_owned=True,
    family="ResNet",
    source="timm resnet18",
    paper=_HE2016,
    min_input_size=32,
    small=_NARROW,
    small_input_size=64,
)
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


@register_model(
    family="ResNet",
    source="timm resnet18 + 3x3 stride-1 stem, no max-pool",
    paper=_HE2016,
    min_input_size=8,
    small={"channels": (8, 16, 32, 64)},
    small_input_size=32,
)
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
    shortcuts: :mod:`baselines.resnet_cifar`).

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


def _timm_resnet(
    name: str, block: type[nn.Module], layers: tuple[int, ...], num_classes: int, in_chans: int, kwargs: dict[str, Any]
) -> StagedResNet:
    net = ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return StagedResNet.from_timm(net, input_size=(in_chans, 224, 224))


@register_model(
    timm_owned=True,
    family="ResNet",
    source="timm resnet34",
    paper=_HE2016,
    min_input_size=32,
    small=_NARROW,
    small_input_size=64,
)
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedResNet:
    """ResNet-34 (He et al. 2016, Table 1): timm's ``resnet34`` with the Staged view; 21,797,672 parameters.

    timm's ``ResNet(BasicBlock, layers=(3, 4, 6, 3))`` at 1000 classes and 3 channels, as timm's and torchvision's
    ``resnet34``. Stages layer1..4: 64, 128, 256, 512 channels at strides 4, 8, 16, 32. ``kwargs`` go to timm's
    ``ResNet`` (``channels`` narrows the stages, ``drop_rate``, ``drop_path_rate``, ...).
    """
    return _timm_resnet("resnet34", BasicBlock, (3, 4, 6, 3), num_classes, in_chans, kwargs)


@register_model(
    timm_owned=True,
    family="ResNet",
    source="timm resnet50",
    paper=_HE2016,
    min_input_size=32,
    small=_NARROW,
    small_input_size=64,
)
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedResNet:
    """ResNet-50 (He et al. 2016, Table 1): timm's ``resnet50`` with the Staged view; 25,557,032 parameters.

    timm's ``ResNet(Bottleneck, layers=(3, 4, 6, 3))`` (stride on the 3x3 convolution, "v1.5") at 1000 classes, as
    timm's and torchvision's ``resnet50``. Stages layer1..4: 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32.
    ``kwargs`` go to timm's ``ResNet``.
    """
    return _timm_resnet("resnet50", Bottleneck, (3, 4, 6, 3), num_classes, in_chans, kwargs)


@register_model(
    timm_owned=True,
    family="ResNet",
    source="timm resnet101",
    paper=_HE2016,
    min_input_size=32,
    small=_NARROW,
    small_input_size=64,
)
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedResNet:
    """ResNet-101 (He et al. 2016, Table 1): timm's ``resnet101`` with the Staged view; 44,549,160 parameters.

    timm's ``ResNet(Bottleneck, layers=(3, 4, 23, 3))`` at 1000 classes, as timm's and torchvision's ``resnet101``.
    Stages layer1..4: 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32. ``kwargs`` go to timm's ``ResNet``.
    """
    return _timm_resnet("resnet101", Bottleneck, (3, 4, 23, 3), num_classes, in_chans, kwargs)


@register_model(
    timm_owned=True,
    family="ResNet",
    source="timm resnet152",
    paper=_HE2016,
    min_input_size=32,
    small=_NARROW,
    small_input_size=64,
)
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedResNet:
    """ResNet-152 (He et al. 2016, Table 1): timm's ``resnet152`` with the Staged view; 60,192,808 parameters.

    timm's ``ResNet(Bottleneck, layers=(3, 8, 36, 3))`` at 1000 classes, as timm's and torchvision's ``resnet152``.
    Stages layer1..4: 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32. ``kwargs`` go to timm's ``ResNet``.
    """
    return _timm_resnet("resnet152", Bottleneck, (3, 8, 36, 3), num_classes, in_chans, kwargs)
