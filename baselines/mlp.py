"""Multi-layer perceptron (Rumelhart, Hinton and Williams 1986) on flat vectors or flattened images, staged.

Reference: D. E. Rumelhart, G. E. Hinton, R. J. Williams, "Learning representations by back-propagating errors",
Nature 323, 1986. The network is torchvision's ``torchvision.ops.MLP`` (never re-implemented here):

.. math::

    h_0 = \\mathrm{flatten}(x), \\qquad h_l = \\mathrm{drop}(\\phi(W_l h_{l-1} + b_l)), \\; l = 1..L, \\qquad
    \\mathrm{logits} = W_{L+1} h_L + b_{L+1}

with ``depth`` = L hidden layers of ``width`` units and activation ``phi`` one of

- ``sigmoid`` (Rumelhart et al.'s logistic unit), ``tanh``, ``relu``, ``leaky_relu`` (slope ``negative_slope`` for
  negative inputs, default 0.01);
- ``step``: the binary (Heaviside) step of Rosenblatt's perceptron, ``phi(a) = 1 if a > 0 else 0``
  (:class:`BinaryStep`). Its derivative is 0 wherever it exists, so backpropagation sends zero gradient through it
  (the true gradient; no straight-through estimate): only the output layer of a step MLP learns by gradient descent.
  This is why the MLP needed a differentiable unit. See :mod:`baselines.perceptron` for the perceptron rule.

Staged view: ``stem`` = ``nn.Flatten()`` (``(B, C, H, W)`` or ``(B, d)`` to ``(B, d)``, ``d = in_chans * H * W``),
``stages`` = the hidden layers (each ``Linear``, activation, ``Dropout``: torchvision's own module objects, so
feedback can reach every hidden layer), ``head`` = the output ``Linear``. Every stage output is a ``(B, width)``
vector: ``channels[i] = width``, ``strides[i] = 0``.

Deviation from ``torchvision.ops.MLP``: torchvision also applies dropout to the output layer's result (the logits);
the head here is the output ``Linear`` alone, so with ``drop_rate > 0`` training-mode outputs differ from
``ops.MLP``'s by that last dropout (eval mode: bit-identical, which a test checks). Initialisation: PyTorch's default.

A flat vector of ``d`` features is ``in_chans=d, img_size=1`` (``input_size = (d, 1, 1)``; ``(B, d)`` inputs work
too).

Example:
    >>> import torch
    >>> net = mlp(num_classes=10, in_chans=1, img_size=28, depth=2, width=64, act="tanh")
    >>> net.channels, net.strides, sum(p.numel() for p in net.parameters())
    ([64, 64], [0, 0], 55050)
    >>> net(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.ops import MLP

from ._registry import register_model

__all__ = ["ACTIVATIONS", "BinaryStep", "StagedMLP", "mlp", "stage_torchvision_mlp"]


class _Heaviside(torch.autograd.Function):
    """``1[a > 0]`` with its derivative, 0 (defined everywhere except at 0, where 0 is used too)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor) -> Tensor:
        return (a > 0).to(a.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class BinaryStep(nn.Module):
    """Rosenblatt's threshold unit: ``1 if a > 0 else 0`` elementwise; zero gradient (its true derivative).

    Shapes: any tensor to a tensor of the same shape, values in {0, 1}.

    Example:
        >>> a = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
        >>> y = BinaryStep()(a)
        >>> y.tolist(), torch.autograd.grad(y.sum(), a)[0].tolist()
        ([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    """

    def forward(self, a: Tensor) -> Tensor:
        return _Heaviside.apply(a)


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "step": BinaryStep,
}


class StagedMLP(nn.Module):
    """An MLP seen as ``flatten -> hidden layers -> output layer`` (the Staged contract, DESIGN.md section 3.1).

    Attributes: ``stem``, ``stages``, ``head``, ``channels`` (hidden widths), ``strides`` (zeros), ``input_size``
    (C, H, W), ``in_chans``, ``in_features`` (``C * H * W``), ``num_classes``, ``act`` (the activation's name).

    Shapes: ``(B, C, H, W)`` or ``(B, C * H * W)`` -> ``(B, num_classes)``.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        head: nn.Linear,
        *,
        channels: Sequence[int],
        input_size: Sequence[int],
        act: str = "",
    ) -> None:
        super().__init__()
        self.stem = nn.Flatten()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.channels: list[int] = [int(c) for c in channels]
        self.strides: list[int] = [0] * len(self.channels)
        self.input_size: tuple[int, int, int] = tuple(int(s) for s in input_size)  # type: ignore[assignment]
        self.in_chans = self.input_size[0]
        self.in_features = self.input_size[0] * self.input_size[1] * self.input_size[2]
        self.num_classes = head.out_features
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        """``head(stages[-1](...stages[0](stem(x))))``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def stage_torchvision_mlp(net: MLP, *, input_size: Sequence[int], act: str = "") -> StagedMLP:
    """Wrap a ``torchvision.ops.MLP`` without normalisation layers (reusing its modules) as a :class:`StagedMLP`.

    ``net`` is ``[Linear, activation, Dropout] * depth + [Linear, Dropout]``; each hidden triple becomes a stage and
    the output ``Linear`` the head (its trailing ``Dropout`` is dropped: see the module docstring).

    Example:
        >>> tv = MLP(12, [8, 8, 3]).eval()
        >>> staged = stage_torchvision_mlp(tv, input_size=(12, 1, 1))
        >>> x = torch.randn(2, 12)
        >>> torch.equal(staged(x), tv(x))
        True
    """
    layers = list(net)
    if len(layers) % 3 != 2 or not isinstance(layers[-2], nn.Linear):
        raise TypeError(
            "expected a torchvision.ops.MLP without norm_layer: [Linear, act, Dropout] * L + [Linear, Dropout]"
        )
    stages = [nn.Sequential(*layers[i : i + 3]) for i in range(0, len(layers) - 2, 3)]
    return StagedMLP(stages, layers[-2], channels=[s[0].out_features for s in stages], input_size=input_size, act=act)


@register_model(family="MLP", source="torchvision.ops.MLP", paper="Rumelhart et al. 1986")
def mlp(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int | Sequence[int] = 28,
    depth: int = 2,
    width: int = 256,
    act: str = "relu",
    negative_slope: float = 0.01,
    drop_rate: float = 0.0,
) -> StagedMLP:
    """An MLP with ``depth`` hidden layers of ``width`` units: ``torchvision.ops.MLP``, staged.

    Args:
        num_classes: output units.
        in_chans: input channels (for a flat vector of ``d`` features: ``in_chans=d, img_size=1``).
        img_size: input height and width (an int or ``(H, W)``); the stem flattens ``in_chans * H * W`` inputs.
        depth: number of hidden layers (stages), at least 1 (no hidden layer: :mod:`baselines.perceptron`).
        width: units per hidden layer.
        act: ``sigmoid``, ``tanh``, ``relu``, ``leaky_relu`` or ``step`` (see the module docstring).
        negative_slope: the slope of ``leaky_relu`` for negative inputs.
        drop_rate: dropout after each hidden activation.

    Parameters: ``(d + 1) w + (depth - 1)(w + 1) w + (w + 1) K``; 269,322 for ``d = 784, w = 256, depth = 2, K = 10``
    (the defaults, as ``torchvision.ops.MLP(784, [256, 256, 10])``).

    Example:
        >>> sum(p.numel() for p in mlp().parameters())
        269322
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from: {', '.join(ACTIVATIONS)}")
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (hidden layers), got {depth!r}; for none use 'perceptron'")
    if int(width) != width or width < 1:
        raise ValueError(f"width must be an integer >= 1 (units per hidden layer), got {width!r}")
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    layer = functools.partial(nn.LeakyReLU, negative_slope) if act == "leaky_relu" else ACTIVATIONS[act]
    net = MLP(in_chans * h * w, [int(width)] * int(depth) + [num_classes], activation_layer=layer, dropout=drop_rate)
    return stage_torchvision_mlp(net, input_size=(in_chans, h, w), act=act)
