"""Excitation backprop: the marginal winning probability (MWP) of every unit of a layer for a target class.

Zhang, Lin, Brandt, Shen, Sclaroff, "Top-down neural attention by excitation backprop", ECCV 2016 and IJCV 126
(2018). Re-implemented from the paper's equations (reference/methods.md section 2.1); no reference code is used.

A probabilistic winner-take-all: the top-down signal starts as a one-hot prior on the target class and descends
the network. For a lower unit ``a_j >= 0`` with parents ``i`` and weights ``w_ji``, with ``w+ = max(w, 0)``:

.. math::

    P(a_j) = \\sum_i P(a_j \\mid a_i)\\, P(a_i), \\qquad
    P(a_j \\mid a_i) = \\frac{a_j\\, w^+_{ji}}{\\sum_{j'} a_{j'}\\, w^+_{j'i}}

Only excitatory connections carry signal and biases are ignored. Vectorised, a linear layer ``f`` maps the signal
``p`` at its output to ``p' = x \\odot f^*\\big(p \\oslash f^+(x)\\big)`` at its input, where ``f^+`` is ``f`` with
``w+`` and no bias and ``f^*`` its vector-Jacobian product; where ``f^+(x) = 0`` the quotient is 0 (the Caffe
convention). Per op (see :mod:`feedback.readout._rules`):

====================================  ========================================================================
conv1d/2d/3d, linear                  the rule above (weights clamped at zero, bias dropped)
avg / adaptive-avg pooling, mean, sum the same rule: the signal splits in proportion to the inputs
max pooling                           the ordinary gradient: all of a window's signal goes to its arg-max
ReLU (and other activations)          the ordinary gradient (ReLU passes the signal where the input is > 0)
batch/layer/group norm, dropout       identity
residual sum ``y = sum_k x_k``        ``p_k = (x_k / y) p`` (timm/torchvision ``x += shortcut`` included)
scale by a constant ``c``             ``p`` where ``c > 0``, else 0 (a positive diagonal layer)
====================================  ========================================================================

With non-negative inputs the rule conserves the signal: ``sum_j P(a_j) = sum_i P(a_i)`` at every layer (tested).
The map is the channel sum of ``P`` at the chosen layer's output, unclamped (TorchRay's code does not clamp
either). EB stops at an intermediate layer: its rule assumes non-negative inputs, true above the first layer.

Deviations: none in the rules. The top prior is a one-hot (TorchRay's ``exp(score)`` normalised over a scalar
output is the same); logits must be (B, K) (no spatial soft-max for fully convolutional outputs).

Shapes: ``x`` (B, C, H, W), ``target`` int or (B,) -> maps (B, 1, h, w) with (h, w) the spatial size of
``layer``'s output (``resize=True``: (H, W), aligned on the receptive fields, see
:func:`feedback.readout.resize_maps`). Default ``layer``: :func:`feedback.readout.default_layer` (``"excitation"``):
``layer3`` on ResNets, ``C3`` on LeNet-5.

Example:
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    ...                     nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(8, 3))
    >>> m = excitation_backprop(net, torch.rand(2, 1, 16, 16), 1, layer="2")
    >>> m.shape, bool((m >= 0).all())
    (torch.Size([2, 1, 8, 8]), True)
    >>> round(m.sum().item(), 4)  # one unit of probability per image reaches the layer
    2.0
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from ._common import finish, spatial
from ._rules import Rules, default_layer, run_topdown

__all__ = ["excitation_backprop"]


def excitation_backprop(
    model: nn.Module, x: Tensor, target: Any = None, *, layer: str | int | None = None, resize: bool = False
) -> Tensor:
    """MWP map of ``target`` at ``layer``: (B, 1, h, w), the channel sum of the winning probabilities.

    Args:
        model: any module returning logits (B, K) (timm, torchvision, Staged models, ``FeedbackNet``).
        x: input batch (B, C, H, W).
        target: class per sample (int or (B,)); ``None``: the predicted class.
        layer: module name, ``""`` (input) or stage index; default :func:`default_layer` ``("excitation")``.
        resize: return maps at the input size, aligned on the layer's receptive fields.
    """
    if layer is None:
        layer = default_layer(model, x, "excitation")
    probes, _, _ = run_topdown(model, x, target, rules=Rules("excitation"), layers=[layer])
    maps = spatial(probes[0].signal, layer).sum(1, keepdim=True)
    return finish(maps, model, x, layer, resize)
