"""LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998), paper-faithful and modern, with the Staged view.

Reference: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998, section II.B and Table I. Written from the paper; no library has it
(reference/architectures.md sections 2.1 and 9).

Both models take ``(B, C, 32, 32)`` images and have six stages, named as in the paper (shapes per sample):

====  ==========================  ============  ========  =======
name  layer                       output        channels  strides
====  ==========================  ============  ========  =======
C1    conv 5x5, 6 maps            (6, 28, 28)   6         1
S2    2x2 subsampling             (6, 14, 14)   6         2
C3    conv 5x5, 16 maps           (16, 10, 10)  16        2
S4    2x2 subsampling             (16, 5, 5)    16        4
C5    conv 5x5, 120 maps (full)   (120, 1, 1)   120       4
F6    flatten, 84 units           (84,)         84        0
====  ==========================  ============  ========  =======

``strides[i]`` is the *cumulative* stride of stage ``i``'s output: the distance, in input pixels, between two
neighbouring output positions (timm's ``reduction``). The convolutions are unpadded ("valid"), so an output is
smaller than ``input / stride`` (C1 is 28x28 at stride 1). A vector output (F6) has ``channels`` = its width and
``stride`` = 0. C5 is a convolution in the paper, so its output stays a ``(120, 1, 1)`` map; F6 flattens it.
C5 reduces to 1x1 only at 32 px, so the stem checks the input size and raises ``ValueError`` otherwise (pad MNIST's
28x28 digits by 2 px on each side, as the paper does).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model

__all__ = [
    "C3_TABLE",
    "EuclideanRBF",
    "ExpectInputSize",
    "LeNet5",
    "LeNet5ReLU",
    "PartialConv2d",
    "ScaledTanh",
    "TrainableSubsampling",
    "lenet5",
    "lenet5_relu",
]

STAGE_NAMES = ("C1", "S2", "C3", "S4", "C5", "F6")

# Table I of the paper: for each C3 feature map, the S2 feature maps it is connected to (60 connections).
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (4, 5, 0),
    (5, 0, 1),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (3, 4, 5, 0),
    (4, 5, 0, 1),
    (5, 0, 1, 2),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class ScaledTanh(nn.Module):
    """The paper's squashing function ``f(a) = A tanh(S a)`` with ``A = 1.7159``, ``S = 2/3`` (Appendix A).

    Shapes: any tensor to a tensor of the same shape.

    Example:
        >>> round(ScaledTanh()(torch.tensor(1.0)).item(), 3)  # f(1) ~ 1 by design
        1.0
    """

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> None:
        super().__init__()
        self.amplitude = amplitude
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.4f}"


class ExpectInputSize(nn.Identity):
    """An identity (an ``nn.Identity``) that raises ``ValueError`` unless its input is ``(B, C, H, W)`` of ``size``.

    Used as LeNet's stem: the networks only work at 32x32 and would otherwise fail deep inside C5 or F6.

    Example:
        >>> ExpectInputSize((1, 32, 32), "LeNet-5")(torch.zeros(2, 1, 28, 28))
        Traceback (most recent call last):
        ...
        ValueError: LeNet-5 expects input of shape (B, 1, 32, 32), got (2, 1, 28, 28); ...
    """

    def __init__(self, size: tuple[int, int, int], model: str) -> None:
        super().__init__()
        self.size = tuple(size)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.size:
            c, h, w = self.size
            raise ValueError(
                f"{self.model} expects input of shape (B, {c}, {h}, {w}), got {tuple(x.shape)}; its C5 layer reduces "
                f"the maps to 1x1 only at {h}x{w} px (pad 28x28 MNIST digits by 2 px per side, as the paper does)"
            )
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}"


class TrainableSubsampling(nn.Module):
    """The paper's S2/S4 layer before squashing: per map, ``coefficient * (sum of each 2x2 window) + bias``.

    Two trainable parameters per map (S2: 12, S4: 32). Shapes: ``(B, C, H, W) -> (B, C, H // 2, W // 2)``.

    Example:
        >>> s = TrainableSubsampling(6)
        >>> s(torch.zeros(1, 6, 28, 28)).shape, sum(p.numel() for p in s.parameters())
        (torch.Size([1, 6, 14, 14]), 12)
    """

    def __init__(self, channels: int, window: int = 2) -> None:
        super().__init__()
        self.window = window
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        summed = F.avg_pool2d(x, self.window, divisor_override=1)  # sum over each non-overlapping window
        return summed * self.weight[:, None, None] + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.weight.numel()}, window={self.window}"


class PartialConv2d(nn.Module):
    """A convolution in which output map ``j`` sees only the input maps ``table[j]`` (LeNet-5's C3, Table I).

    Only the ``sum(len(t) for t in table)`` connected kernels are parameters (``weight``: ``(connections, k, k)``,
    ``bias``: ``(out_channels,)``); ``forward`` scatters them into a dense ``(out, in, k, k)`` kernel whose other
    entries are zero, so the trainable count is exact and the unconnected pairs get no gradient. Unpadded, stride 1.

    Shapes: ``(B, in_channels, H, W) -> (B, len(table), H - k + 1, W - k + 1)``.

    Example:
        >>> c3 = PartialConv2d(C3_TABLE, in_channels=6, kernel_size=5)
        >>> c3(torch.zeros(1, 6, 14, 14)).shape, sum(p.numel() for p in c3.parameters())
        (torch.Size([1, 16, 10, 10]), 1516)
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int) -> None:
        super().__init__()
        pairs = [(j, i) for j, inputs in enumerate(table) for i in inputs]
        if any(not 0 <= i < in_channels for _, i in pairs):
            raise ValueError(f"connection table refers to input maps outside 0..{in_channels - 1}")
        if len(set(pairs)) != len(pairs):
            raise ValueError("connection table lists a connection twice")
        self.table = tuple(tuple(t) for t in table)
        self.in_channels = in_channels
        self.out_channels = len(table)
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_channels))
        # Row of each connection in the flattened (out * in, k, k) dense kernel.
        flat = torch.tensor([j * in_channels + i for j, i in pairs], dtype=torch.long)
        self.register_buffer("flat_index", flat, persistent=False)
        self.register_buffer("out_index", torch.tensor([j for j, _ in pairs], dtype=torch.long), persistent=False)
        nn.init.normal_(self.weight, std=0.1)
        nn.init.zeros_(self.bias)

    def dense_weight(self) -> Tensor:
        """The ``(out_channels, in_channels, k, k)`` kernel, zero outside the connection table."""
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels * self.in_channels, k, k)
        return dense.index_copy(0, self.flat_index, self.weight).view(self.out_channels, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"connections={self.weight.shape[0]}"
        )


class EuclideanRBF(nn.Module):
    """LeNet-5's output layer: Euclidean RBF units with fixed prototypes, returned as logits ``-||x - w_k||^2``.

    Paper: ``y_k = sum_j (x_j - w_kj)^2`` with prototypes ``w_k`` fixed to stylised 7x12 bitmaps of the characters
    (+1/-1 pixels). **Deviation:** those bitmaps are not available, so the prototypes are ``+-1`` codes drawn from a
    seeded generator (``seed``); they are a buffer, not a parameter (the paper's 840 fixed weights for 10 classes).
    **Deviation:** the layer returns ``-y_k`` so that ordinary cross-entropy can train it. Cross-entropy on these
    logits, ``y_D + log sum_k exp(-y_k)``, is the paper's MAP criterion (eq. 9) without its constant ``exp(-j)``
    "rubbish class" term (the limit ``j -> infinity``); the paper's plain MSE criterion (eq. 8) is ``-logits[D]``.

    Shapes: ``(B, in_features) -> (B, num_classes)``.

    Example:
        >>> rbf = EuclideanRBF(84, 10)
        >>> rbf(rbf.prototypes[:2]).argmax(1).tolist()  # a prototype is nearest to itself
        [0, 1]
    """

    def __init__(self, in_features: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=generator).float() * 2 - 1
        self.register_buffer("prototypes", codes)
        self.seed = seed

    def forward(self, x: Tensor) -> Tensor:
        return -(x[:, None, :] - self.prototypes).pow(2).sum(-1)

    def extra_repr(self) -> str:
        n, d = self.prototypes.shape
        return f"in_features={d}, num_classes={n}, seed={self.seed}"


class _StagedSequential(nn.Module):
    """Common part of the LeNets: the Staged attributes and the forward loop."""

    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Module

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size: tuple[int, int, int] = (in_chans, 32, 32)
        self.stage_names: tuple[str, ...] = STAGE_NAMES
        self.channels: list[int] = [6, 6, 16, 16, 120, 84]
        self.strides: list[int] = [1, 2, 2, 4, 4, 0]

    def forward(self, x: Tensor) -> Tensor:
        """``head(stages[-1](...stages[0](stem(x))))``: ``(B, in_chans, 32, 32) -> (B, num_classes)``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class LeNet5(_StagedSequential):
    """LeNet-5 as in LeCun et al. 1998: exactly 60,000 trainable parameters (1 input channel).

    C1 (6 maps 5x5: 156), S2 (trainable 2x2 subsampling: 12), C3 (16 maps 5x5 on the partial connection table of
    Table I, 60 kernels: 1,516), S4 (32), C5 (120 maps 5x5, full: 48,120), F6 (84 units: 10,164); every one followed by
    the squashing ``1.7159 tanh(2a/3)``; output layer :class:`EuclideanRBF` with fixed prototypes (a buffer, 840
    values for 10 classes). Initialisation as in the paper: every weight and bias uniform in ``(-2.4/F, 2.4/F)``, ``F``
    the fan-in of the unit (the number of its inputs, not counting the bias; in C3 it depends on the map: 75, 100 or
    150). Input normalisation (the paper maps background to -0.1 and foreground to 1.175) is the data pipeline's job.

    Deviations (see :class:`EuclideanRBF`): random ``+-1`` prototypes instead of the character bitmaps, and logits
    ``-distance^2`` for cross-entropy instead of the paper's MAP loss. With ``in_chans > 1`` C1 sees all channels.

    Staged view: ``stem`` checks the 32x32 input (an identity otherwise), ``stages`` = C1, S2, C3, S4, C5, F6,
    ``head`` = the RBF layer. Shapes: ``(B, in_chans, 32, 32) -> (B, num_classes)``.

    Example:
        >>> model = LeNet5()
        >>> sum(p.numel() for p in model.parameters() if p.requires_grad)
        60000
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, *, rbf_seed: int = 0) -> None:
        super().__init__(num_classes, in_chans)
        self.stem = ExpectInputSize(self.input_size, "LeNet-5")
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_chans, 6, 5), ScaledTanh()),  # C1
                nn.Sequential(TrainableSubsampling(6), ScaledTanh()),  # S2
                nn.Sequential(PartialConv2d(C3_TABLE, 6, 5), ScaledTanh()),  # C3
                nn.Sequential(TrainableSubsampling(16), ScaledTanh()),  # S4
                nn.Sequential(nn.Conv2d(16, 120, 5), ScaledTanh()),  # C5
                nn.Sequential(nn.Flatten(), nn.Linear(120, 84), ScaledTanh()),  # F6
            ]
        )
        self.head = EuclideanRBF(84, num_classes, seed=rbf_seed)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The paper's initialisation: uniform in ``(-2.4/F, 2.4/F)``, ``F`` = fan-in of the receiving unit."""

        def uniform_(t: Tensor, fan_in: Tensor | int) -> None:
            # fan_in: a number, or one per row of t (C3, whose maps have different fan-ins)
            bound = 2.4 / torch.as_tensor(fan_in, dtype=t.dtype, device=t.device)
            t.uniform_(-1.0, 1.0).mul_(bound.reshape(bound.shape + (1,) * (t.dim() - bound.dim())))

        for stage in self.stages:
            for layer in stage:
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    fan_in = layer.weight[0].numel()
                    uniform_(layer.weight, fan_in)
                    uniform_(layer.bias, fan_in)
                elif isinstance(layer, TrainableSubsampling):
                    uniform_(layer.weight, layer.window**2)
                    uniform_(layer.bias, layer.window**2)
                elif isinstance(layer, PartialConv2d):
                    map_fan_in = torch.tensor([len(inputs) * layer.kernel_size**2 for inputs in layer.table])
                    uniform_(layer.weight, map_fan_in[layer.out_index.cpu()])
                    uniform_(layer.bias, map_fan_in)


class LeNet5ReLU(_StagedSequential):
    """The "modern" LeNet-5: full C3, ReLU, max-pooling and a linear head; 61,706 parameters (1 channel, 10 classes).

    C1 conv(in, 6, 5) + ReLU, S2 max-pool 2, C3 conv(6, 16, 5) + ReLU, S4 max-pool 2, C5 conv(16, 120, 5) + ReLU,
    F6 flatten + linear(120, 84) + ReLU, head linear(84, num_classes). Not the paper's network (see :class:`LeNet5`);
    the common textbook simplification of LeCun et al. 1998. PyTorch's default initialisation.

    Staged view as in :class:`LeNet5`. Shapes: ``(B, in_chans, 32, 32) -> (B, num_classes)``.

    Example:
        >>> model = LeNet5ReLU()
        >>> sum(p.numel() for p in model.parameters())
        61706
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__(num_classes, in_chans)
        self.stem = ExpectInputSize(self.input_size, "LeNet-5 (ReLU)")
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_chans, 6, 5), nn.ReLU()),  # C1
                nn.MaxPool2d(2),  # S2
                nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU()),  # C3
                nn.MaxPool2d(2),  # S4
                nn.Sequential(nn.Conv2d(16, 120, 5), nn.ReLU()),  # C5
                nn.Sequential(nn.Flatten(), nn.Linear(120, 84), nn.ReLU()),  # F6
            ]
        )
        self.head = nn.Linear(84, num_classes)


@register_model(
    family="LeNet", source="hand-written (paper)", paper="LeCun et al. 1998", min_input_size=32, max_input_size=32,
    small={}, small_input_size=32,
)
def lenet5(*, num_classes: int = 10, in_chans: int = 1, rbf_seed: int = 0) -> LeNet5:
    """Paper-faithful LeNet-5 (LeCun et al. 1998), 60,000 trainable parameters; ``rbf_seed`` seeds the fixed codes.

    Example:
        >>> lenet5()(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 10])
    """
    return LeNet5(num_classes=num_classes, in_chans=in_chans, rbf_seed=rbf_seed)


@register_model(
    family="LeNet", source="hand-written (modern variant)", paper="LeCun et al. 1998", min_input_size=32,
    max_input_size=32, small={}, small_input_size=32,
)
def lenet5_relu(*, num_classes: int = 10, in_chans: int = 1) -> LeNet5ReLU:
    """Modern LeNet-5 (ReLU, max-pool, full C3, linear head), 61,706 parameters.

    Example:
        >>> lenet5_relu(in_chans=3)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return LeNet5ReLU(num_classes=num_classes, in_chans=in_chans)
