"""GoogLeNet / Inception v1 (Szegedy et al. 2015): torchvision's network and a paper-faithful variant, staged.

Reference: C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke, A. Rabinovich,
"Going deeper with convolutions", CVPR 2015 (arXiv:1409.4842): Figure 2(b) (the Inception module), Table 1 and
Figure 3 (the network), section 5 (the auxiliary classifiers).

Both models are torchvision's ``GoogLeNet`` class (never re-implemented here); :func:`stage_torchvision_googlenet`
regroups its own module objects:

- ``stem`` = an input-size check, ``conv1``, ``maxpool1``, ``conv2``, ``conv3``, ``maxpool2`` (stride 8), with the
  paper's two local response normalisations (after ``maxpool1`` and after ``conv3``) when ``lrn=True``;
- ``stages`` = the nine Inception modules, ``maxpool3`` closing 3b and ``maxpool4`` closing 4e:

  =====  ===================  ===============  ========  =======
  index  stage                output at 224px  channels  stride
  =====  ===================  ===============  ========  =======
  0      inception3a          (256, 28, 28)    256       8
  1      inception3b + pool   (480, 14, 14)    480       16
  2      inception4a          (512, 14, 14)    512       16
  3-5    inception4b, 4c, 4d  (512/512/528)    ...       16
  6      inception4e + pool   (832, 7, 7)      832       32
  7, 8   inception5a, 5b      (832/1024, 7, 7) ...       32
  =====  ===================  ===============  ========  =======

- ``head`` = ``avgpool`` (global), flatten, ``dropout``, ``fc``.

The two models:

- ``googlenet``: ``torchvision.models.GoogLeNet(aux_logits=False, init_weights=True)``, 6,624,904 parameters at 1000
  classes. torchvision's deviations from the paper (reference/architectures.md section 3): batch normalisation after
  every convolution (no conv biases), a 3x3 instead of a 5x5 convolution in the "5x5" branch (pytorch/vision#906),
  no local response normalisation, dropout 0.2 (paper: 0.4), truncated-normal initialisation.
- ``googlenet_paper``: torchvision's class with ``blocks=[ConvReLU, InceptionPaper, InceptionAuxPaper]``: convolutions
  with biases and ReLU, no batch normalisation, the 5x5 branch a real 5x5 convolution, local response normalisation
  in the stem (Figure 3), dropout 0.4; 6,998,552 parameters at 1000 classes without the auxiliary heads, 6,990,272
  of them weights (6,826.4K in units of 1024, against the 6,797.7K that Table 1's parameter column sums to). The paper
  does not give its initialisation nor the normalisation's constants: Kaiming-normal (fan-in) weights and zero
  biases; AlexNet's local response normalisation (:func:`baselines.alexnet.local_response_norm`).

Auxiliary classifiers (``aux_logits=True``; off by default): torchvision's ``InceptionAux`` heads on the outputs of
stage 2 (4a) and stage 5 (4d), in ``model.aux_heads``. The Staged ``forward`` returns the main logits only (the heads
are a training device); :meth:`StagedGoogLeNet.forward_aux` returns ``(logits, [aux1, aux2])`` (the paper adds the
auxiliary losses with weight 0.3 and discards the heads at inference). They add 6,379,984 parameters at 1000
classes to ``googlenet`` and 6,379,728 to ``googlenet_paper`` (whose heads use :class:`ConvReLU`, no batch norm).
Deviation (torchvision's, kept): the heads average-pool adaptively to 4x4, which equals the paper's 5x5 stride-3
pool in size at 224 px but not in its windows, and works at any input size.

Example:
    >>> import torch
    >>> net = googlenet_paper(num_classes=10, img_size=32)
    >>> net.channels
    [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn
from torch import Tensor
from torchvision.models.googlenet import BasicConv2d, GoogLeNet, Inception, InceptionAux

from ._registry import register_model
from .alexnet import MinInputSize, check_img_size, local_response_norm
from .resnet import StagedModel

__all__ = [
    "ConvReLU",
    "InceptionAuxPaper",
    "InceptionPaper",
    "StagedGoogLeNet",
    "googlenet",
    "googlenet_paper",
    "stage_torchvision_googlenet",
]

GOOGLENET_MIN_SIZE = 15  # reference/architectures.md section 4 (torchvision's, without auxiliary heads)
STAGE_NAMES = (
    "inception3a",
    "inception3b",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "inception5a",
    "inception5b",
)
STRIDES = (8, 16, 16, 16, 16, 16, 32, 32, 32)
AUX_STAGES = (2, 5)  # aux1 reads inception4a's output, aux2 inception4d's


class ConvReLU(nn.Module):
    """The paper's convolution unit: ``Conv2d`` (with bias) followed by ReLU, no batch normalisation.

    Drop-in for torchvision's ``BasicConv2d`` (same signature: ``(in_channels, out_channels, **conv_kwargs)``).

    Example:
        >>> import torch
        >>> ConvReLU(3, 8, kernel_size=3, padding=1)(torch.zeros(1, 3, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, **kwargs)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


class InceptionPaper(Inception):
    """torchvision's ``Inception`` module as in the paper (Figure 2(b)): a real 5x5 convolution, conv + ReLU units.

    torchvision builds a 3x3 convolution in the "5x5" branch (pytorch/vision#906); this class replaces it by a 5x5
    one (padding 2). ``conv_block`` defaults to :class:`ConvReLU` (torchvision's ``GoogLeNet`` builds its Inception
    modules without passing one, so the default decides).

    Example:
        >>> import torch
        >>> m = InceptionPaper(192, 64, 96, 128, 16, 32, 32)
        >>> m.branch3[1].conv.kernel_size, m(torch.zeros(1, 192, 8, 8)).shape
        ((5, 5), torch.Size([1, 256, 8, 8]))
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        conv_block: Any = None,
    ) -> None:
        conv_block = conv_block or ConvReLU
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, conv_block=conv_block)
        self.branch3[1] = conv_block(ch5x5red, ch5x5, kernel_size=5, padding=2)


class InceptionAuxPaper(InceptionAux):
    """torchvision's ``InceptionAux`` with :class:`ConvReLU` as its default convolution unit (no batch norm).

    Example:
        >>> import torch
        >>> head = InceptionAuxPaper(512, 10)
        >>> head(torch.zeros(2, 512, 14, 14)).shape, isinstance(head.conv, ConvReLU)
        (torch.Size([2, 10]), True)
    """

    def __init__(self, in_channels: int, num_classes: int, conv_block: Any = None, dropout: float = 0.7) -> None:
        super().__init__(in_channels, num_classes, conv_block=conv_block or ConvReLU, dropout=dropout)


class StagedGoogLeNet(StagedModel):
    """A :class:`~baselines.resnet.StagedModel` with GoogLeNet's optional auxiliary classifiers.

    ``aux_heads``: an ``nn.ModuleList`` of the auxiliary heads (empty without them), applied to the outputs of the
    stages listed in ``aux_stages``. ``forward`` is the Staged forward and ignores them.
    """

    def __init__(self, *args: Any, aux_heads: Sequence[nn.Module] = (), aux_stages: Sequence[int] = (), **kw: Any):
        super().__init__(*args, **kw)
        if len(aux_heads) != len(aux_stages):
            raise ValueError(f"{len(aux_heads)} auxiliary heads but {len(aux_stages)} auxiliary stages")
        self.aux_heads = nn.ModuleList(aux_heads)
        self.aux_stages: tuple[int, ...] = tuple(int(i) for i in aux_stages)

    def forward_aux(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits, [aux logits, ...])``: the Staged forward plus each auxiliary head on its stage's output.

        In training mode this consumes random numbers in torchvision's order (aux1, aux2, then the main dropout), so
        with the same seed it reproduces torchvision's training-mode ``GoogLeNetOutputs(logits, aux2, aux1)``.
        """
        heads = dict(zip(self.aux_stages, self.aux_heads))
        aux = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in heads:
                aux.append(heads[i](x))
        return self.head(x), aux


def stage_torchvision_googlenet(
    net: GoogLeNet, *, input_size: Sequence[int] = (3, 224, 224), lrn: bool = False
) -> StagedGoogLeNet:
    """Wrap a torchvision ``GoogLeNet`` (reusing its module objects) as a :class:`StagedGoogLeNet`.

    With ``lrn=False`` the staged forward is bit-identical to ``net``'s (eval mode; in training mode to its main
    output when ``net.aux_logits`` is off). ``lrn=True`` inserts the paper's two local response normalisations into
    the stem (new, parameter-free modules). ``net.transform_input`` must be off (it is unless ImageNet weights are
    loaded): normalise in the data pipeline instead.

    Example:
        >>> import torch, torchvision
        >>> tv = torchvision.models.googlenet(aux_logits=False, init_weights=False, num_classes=10).eval()
        >>> staged = stage_torchvision_googlenet(tv)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.equal(staged(x), tv(x))
        True
    """
    if net.transform_input:
        raise ValueError("stage_torchvision_googlenet needs transform_input=False; normalise the inputs instead")
    stem: list[nn.Module] = [MinInputSize(GOOGLENET_MIN_SIZE, "GoogLeNet"), net.conv1, net.maxpool1]
    stem += [local_response_norm()] if lrn else []
    stem += [net.conv2, net.conv3]
    stem += [local_response_norm()] if lrn else []
    stem += [net.maxpool2]
    stages: list[nn.Module] = [getattr(net, n) for n in STAGE_NAMES]
    stages[1] = nn.Sequential(net.inception3b, net.maxpool3)
    stages[6] = nn.Sequential(net.inception4e, net.maxpool4)
    channels = [
        sum(_out_channels(b) for b in (m.branch1, m.branch2, m.branch3, m.branch4))
        for m in (getattr(net, n) for n in STAGE_NAMES)
    ]
    aux = [net.aux1, net.aux2] if net.aux_logits and net.aux1 is not None else []
    return StagedGoogLeNet(
        nn.Sequential(*stem),
        stages,
        nn.Sequential(net.avgpool, nn.Flatten(1), net.dropout, net.fc),
        channels=channels,
        strides=STRIDES,
        input_size=input_size,
        num_classes=net.fc.out_features,
        num_features=net.fc.in_features,
        aux_heads=aux,
        aux_stages=AUX_STAGES if aux else (),
    )


def _out_channels(branch: nn.Module) -> int:
    """Output channels of an Inception branch: those of its last convolution."""
    return [m.out_channels for m in branch.modules() if isinstance(m, nn.Conv2d)][-1]


def _first_conv(conv_block: Any, in_chans: int) -> nn.Module:
    return conv_block(in_chans, 64, kernel_size=7, stride=2, padding=3)


@register_model(
    family="GoogLeNet",
    source="torchvision googlenet (aux_logits=False)",
    paper="Szegedy et al. 2015",
    min_input_size=GOOGLENET_MIN_SIZE,
    small={"img_size": 32},
    small_input_size=32,
)
def googlenet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    aux_logits: bool = False,
    drop_rate: float = 0.2,
    aux_drop_rate: float = 0.7,
    img_size: int = 224,
) -> StagedGoogLeNet:
    """torchvision's GoogLeNet (batch norm, 3x3 "5x5" branch), staged; 6,624,904 parameters at 1000 classes.

    Args:
        num_classes: classifier outputs.
        in_chans: input channels (a new ``conv1``, torchvision's truncated-normal initialisation, when not 3).
        aux_logits: build the two auxiliary heads (13,004,888 parameters in all); see :class:`StagedGoogLeNet`.
        drop_rate: dropout before ``fc`` (torchvision's ``dropout``).
        aux_drop_rate: dropout in the auxiliary heads (torchvision's ``dropout_aux``).
        img_size: the nominal square input size recorded in ``input_size`` (at least 15 px).

    Example:
        >>> import torch
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in googlenet().parameters())
        6624904
    """
    img_size = check_img_size(img_size, GOOGLENET_MIN_SIZE, "googlenet")
    net = GoogLeNet(
        num_classes=num_classes,
        aux_logits=aux_logits,
        transform_input=False,
        init_weights=True,
        dropout=drop_rate,
        dropout_aux=aux_drop_rate,
    )
    if in_chans != 3:
        net.conv1 = _first_conv(BasicConv2d, in_chans)
        nn.init.trunc_normal_(net.conv1.conv.weight, mean=0.0, std=0.01, a=-2, b=2)  # torchvision's init
    return stage_torchvision_googlenet(net, input_size=(in_chans, img_size, img_size))


def _init_googlenet_paper_(net: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU gain) weights and zero biases: the paper does not state its initialisation."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)


@register_model(
    family="GoogLeNet",
    source="torchvision GoogLeNet class with paper blocks (5x5, no BN) + LRN",
    paper="Szegedy et al. 2015",
    min_input_size=GOOGLENET_MIN_SIZE,
    small={"img_size": 32},
    small_input_size=32,
)
def googlenet_paper(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    aux_logits: bool = False,
    lrn: bool = True,
    drop_rate: float = 0.4,
    aux_drop_rate: float = 0.7,
    img_size: int = 224,
) -> StagedGoogLeNet:
    """Paper-faithful GoogLeNet (Szegedy et al. 2015): 5x5 branch, no batch norm, LRN; 6,998,552 parameters.

    torchvision's ``GoogLeNet`` with ``blocks=[ConvReLU, InceptionPaper, InceptionAuxPaper]``, staged with the paper's
    local response normalisations (see the module docstring for the deviations).

    Args:
        num_classes: classifier outputs.
        in_chans: input channels.
        aux_logits: build the two auxiliary heads (13,378,280 parameters in all); see :class:`StagedGoogLeNet`.
        lrn: the two local response normalisations of the stem (Figure 3); ``False`` gives exactly torchvision's
            forward for these blocks.
        drop_rate: dropout before the classifier (the paper: 0.4).
        aux_drop_rate: dropout in the auxiliary heads (the paper: 0.7).
        img_size: the nominal square input size recorded in ``input_size`` (paper: 224; at least 15 px).

    Example:
        >>> import torch
        >>> with torch.device("meta"):  # counts without allocating or initialising
        ...     sum(p.numel() for p in googlenet_paper().parameters())
        6998552
    """
    img_size = check_img_size(img_size, GOOGLENET_MIN_SIZE, "googlenet_paper")
    net = GoogLeNet(
        num_classes=num_classes,
        aux_logits=aux_logits,
        transform_input=False,
        init_weights=False,
        blocks=[ConvReLU, InceptionPaper, InceptionAuxPaper],
        dropout=drop_rate,
        dropout_aux=aux_drop_rate,
    )
    if in_chans != 3:
        net.conv1 = _first_conv(ConvReLU, in_chans)
    _init_googlenet_paper_(net)
    return stage_torchvision_googlenet(net, input_size=(in_chans, img_size, img_size), lrn=lrn)
