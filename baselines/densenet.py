"""DenseNets (Huang et al. 2017) from timm with the Staged view: ImageNet 121/161/169/201 and CIFAR DenseNet-BC.

Reference: G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger, "Densely connected convolutional networks", CVPR
2017, section 3 and Table 1. The networks are timm's ``timm.models.densenet.DenseNet`` (a copy of torchvision's, BSD
licence), never re-implemented here. Layer ``l`` of a dense block sees the concatenation of all earlier feature maps
of the block,

.. math::

    x_\\ell = H_\\ell([x_0, x_1, \\ldots, x_{\\ell-1}]), \\qquad
    H_\\ell = \\mathrm{conv}_{3\\times3} \\circ \\mathrm{ReLU} \\circ \\mathrm{BN} \\circ
    \\mathrm{conv}_{1\\times1} \\circ \\mathrm{ReLU} \\circ \\mathrm{BN}
    \\quad (\\text{"B": } 4k \\text{ bottleneck channels})

with growth rate ``k`` (each layer adds ``k`` channels); transitions (BN, ReLU, 1x1 conv halving the channels: "C",
compression 0.5, 2x2 average pool) join the blocks.

====================  ==  ==============  =========================  ===========================
model                 k   layers/block    stage channels             parameters
====================  ==  ==============  =========================  ===========================
densenet121           32  6, 12, 24, 16   256, 512, 1024, 1024       7,978,856
densenet161           48  6, 12, 36, 24   384, 768, 2112, 2208       28,681,000
densenet169           32  6, 12, 32, 32   256, 512, 1280, 1664       14,149,480
densenet201           32  6, 12, 48, 32   256, 512, 1792, 1920       20,013,928
densenet_bc100_cifar  12  16, 16, 16      216, 300, 342              769,162 (10 classes)
====================  ==  ==============  =========================  ===========================

(ImageNet counts at 1000 classes, as timm's and torchvision's models; ImageNet strides 4, 8, 16, 32; CIFAR 1, 2, 4.)

Staged view (:class:`StagedDenseNet`, reusing timm's module objects): ``stem`` = ``features`` up to the first dense
block (7x7/2 conv, BN-ReLU, 3x3/2 max-pool); ``stages[0]`` = dense block 1; ``stages[i]`` = transition ``i`` then
dense block ``i + 1``; the last stage also holds the final BN-ReLU (``norm5``); ``head`` = global pool, dropout,
classifier. So the stage outputs are timm's ``feature_info`` taps (the dense-block outputs before each transition,
and ``norm5``), and the staged forward is bit-identical to timm's.

DenseNet-BC for CIFAR (section 3, "Implementation details"): three dense blocks of ``(L - 4) / 6`` bottleneck layers
on 32x32, 16x16 and 8x8 maps, and before the first block a single 3x3 convolution with ``2k`` output channels (no
batch norm, no pooling; the dense layers start with BN-ReLU). This is timm's ``DenseNet(growth_rate=12,
block_config=(16, 16, 16))`` with that stem patched in (:func:`cifar_stem_`); the paper reports 0.8M parameters.

Example:
    >>> import torch
    >>> net = densenet_bc100_cifar()
    >>> sum(p.numel() for p in net.parameters())
    769162
    >>> net.channels, net.strides
    ([216, 300, 342], [1, 2, 4])
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn
from timm.models.densenet import DenseNet

from ._registry import register_model
from .resnet import StagedModel, default_input_size

__all__ = [
    "StagedDenseNet",
    "cifar_stem_",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_bc100_cifar",
]


class StagedDenseNet(StagedModel):
    """A timm DenseNet seen as ``stem -> dense blocks (with the transition before each) -> head``.

    Build it with :meth:`from_timm`. Attributes as :class:`~baselines.resnet.StagedModel`.
    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``.

    Example:
        >>> import timm, torch
        >>> net = timm.create_model("densenet121", num_classes=10, growth_rate=8).eval()
        >>> staged = StagedDenseNet.from_timm(net)
        >>> staged.channels, staged.strides
        ([64, 128, 256, 256], [4, 8, 16, 32])
        >>> x = torch.randn(1, 3, 64, 64)
        >>> torch.equal(staged(x), net(x))
        True
    """

    @classmethod
    def from_timm(cls, model: DenseNet, *, input_size: Sequence[int] | None = None) -> StagedDenseNet:
        """Wrap a timm ``DenseNet``, reusing its module objects (the wrapper and ``model`` share parameters).

        Args:
            model: a ``timm.models.densenet.DenseNet``; its ``feature_info`` gives ``channels`` and ``strides``.
            input_size: (C, H, W); default: the model's ``pretrained_cfg`` input size, else 224 px.
        """
        if not isinstance(model, DenseNet):
            raise TypeError(f"expected a timm DenseNet, got {type(model).__name__}")
        children = list(model.features.named_children())
        block_idx = [i for i, (n, _) in enumerate(children) if n.startswith("denseblock")]
        if not block_idx:
            raise ValueError("the DenseNet has no dense block (was it pruned?)")
        stem = nn.Sequential(*[m for _, m in children[: block_idx[0]]])
        # stage j: the transition after block j - 1 (none for j = 0) and block j; the last stage also takes norm5
        starts = [block_idx[0]] + [b + 1 for b in block_idx[:-1]]
        ends = [block_idx[j] + 1 for j in range(len(block_idx) - 1)] + [len(children)]
        stages = [nn.Sequential(*[m for _, m in children[a:b]]) for a, b in zip(starts, ends)]
        info = {f["module"].split(".", 1)[1]: f for f in model.feature_info}
        taps = [children[i][0] for i in block_idx[:-1]] + [children[-1][0]]
        return cls(
            stem,
            stages,
            nn.Sequential(model.global_pool, model.head_drop, model.classifier),
            channels=[info[t]["num_chs"] for t in taps],
            strides=[info[t]["reduction"] for t in taps],
            input_size=default_input_size(model, input_size),
            num_classes=int(model.num_classes),
            num_features=int(model.num_features),
        )


def cifar_stem_(model: DenseNet) -> DenseNet:
    """Give a timm DenseNet the CIFAR stem of the paper, in place: one 3x3 stride-1 convolution, nothing else.

    Replaces ``features.conv0`` by ``Conv2d(in_chans, 2k, 3, padding=1, bias=False)`` (Kaiming-normal, as timm
    initialises its convolutions) and ``norm0`` and ``pool0`` by identities, and divides the ``feature_info``
    reductions accordingly (the stem no longer downsamples). Returns ``model``; a second call does nothing.
    """
    if getattr(model, "_cifar_stem", False):
        return model
    feats = model.features
    old = feats.conv0
    conv = nn.Conv2d(
        old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False,
        device=old.weight.device, dtype=old.weight.dtype,
    )  # fmt: skip
    nn.init.kaiming_normal_(conv.weight)
    feats.conv0 = conv
    feats.norm0 = nn.Identity()
    feats.pool0 = nn.Identity()
    for f in model.feature_info:
        f["reduction"] //= 2 if f["module"] == "features.norm0" else 4
    model._cifar_stem = True
    return model


def _timm_densenet(
    growth_rate: int, block_config: tuple[int, ...], num_classes: int, in_chans: int, kwargs: dict[str, Any]
) -> StagedDenseNet:
    kwargs = {"growth_rate": growth_rate, "block_config": block_config} | kwargs
    net = DenseNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
    return StagedDenseNet.from_timm(net, input_size=(in_chans, 224, 224))


_HUANG = "Huang et al. 2017"
# fast CPU configuration: growth rate 8 instead of 32/48 (timm's growth_rate argument; the stem is 2k wide)
_SMALL: dict[str, Any] = dict(min_input_size=32, small={"growth_rate": 8}, small_input_size=32)


@register_model(timm_owned=True, family="DenseNet", source="timm densenet121", paper=_HUANG, **_SMALL)
def densenet121(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedDenseNet:
    """DenseNet-121 (Huang et al. 2017, Table 1; k = 32, blocks 6-12-24-16): timm's, Staged; 7,978,856 parameters.

    ``kwargs`` go to timm's ``DenseNet`` (``growth_rate``, ``block_config``, ``drop_rate``, ...).
    """
    return _timm_densenet(32, (6, 12, 24, 16), num_classes, in_chans, kwargs)


@register_model(timm_owned=True, family="DenseNet", source="timm densenet161", paper=_HUANG, **_SMALL)
def densenet161(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedDenseNet:
    """DenseNet-161 (Huang et al. 2017, Table 1; k = 48, blocks 6-12-36-24): timm's, Staged; 28,681,000 parameters.

    ``kwargs`` go to timm's ``DenseNet``.
    """
    return _timm_densenet(48, (6, 12, 36, 24), num_classes, in_chans, kwargs)


@register_model(timm_owned=True, family="DenseNet", source="timm densenet169", paper=_HUANG, **_SMALL)
def densenet169(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedDenseNet:
    """DenseNet-169 (Huang et al. 2017, Table 1; k = 32, blocks 6-12-32-32): timm's, Staged; 14,149,480 parameters.

    ``kwargs`` go to timm's ``DenseNet``.
    """
    return _timm_densenet(32, (6, 12, 32, 32), num_classes, in_chans, kwargs)


@register_model(timm_owned=True, family="DenseNet", source="timm densenet201", paper=_HUANG, **_SMALL)
def densenet201(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> StagedDenseNet:
    """DenseNet-201 (Huang et al. 2017, Table 1; k = 32, blocks 6-12-48-32): timm's, Staged; 20,013,928 parameters.

    ``kwargs`` go to timm's ``DenseNet``.
    """
    return _timm_densenet(32, (6, 12, 48, 32), num_classes, in_chans, kwargs)


@register_model(
    family="DenseNet (CIFAR)",
    source="timm DenseNet + CIFAR stem (paper)",
    paper=_HUANG,
    min_input_size=8,
    small={"depth": 40},
    small_input_size=32,
)
def densenet_bc100_cifar(
    *, num_classes: int = 10, in_chans: int = 3, depth: int = 100, growth_rate: int = 12, **kwargs: Any
) -> StagedDenseNet:
    """DenseNet-BC (L = 100, k = 12) for 32 px inputs (Huang et al. 2017, section 3): 769,162 parameters.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        depth: ``L``; three blocks of ``(L - 4) / 6`` bottleneck layers (paper: 100, 190, 250).
        growth_rate: ``k`` (paper: 12, 24, 40).
        **kwargs: other timm ``DenseNet`` arguments (``drop_rate``, ``proj_drop_rate``: the paper's dropout 0.2
            after each convolution when training without augmentation).
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC depth must be 6n + 4 with n >= 1 (40, 100, 190, 250, ...), got {depth}")
    n = (depth - 4) // 6
    net = DenseNet(
        growth_rate=growth_rate, block_config=(n, n, n), num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    return StagedDenseNet.from_timm(cifar_stem_(net), input_size=(in_chans, 32, 32))
