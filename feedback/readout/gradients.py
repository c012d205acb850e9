"""Gradient-based readouts: gradient, gradient x input, guided backprop and deconvnet.

All four back-propagate the target class's score ``y_k`` (one-hot at the logits) and read the signal ``g`` at a layer
(by default the input image, as in the papers); they differ in how a ReLU passes the signal down:

===================  ===============================================  ==========================================
method               ReLU rule (``x`` its input, ``g`` the signal)    map
===================  ===============================================  ==========================================
``gradient``         ``g [x > 0]`` (the ordinary gradient)            ``max_c |g|``
``gradient_x_input`` ``g [x > 0]``                                    ``sum_c a g`` (``a``: the layer's values)
``guided_backprop``  ``g [x > 0] [g > 0]``                            ``max_c |g|``
``deconvnet``        ``max(g, 0)`` (ignores ``x``)                    ``max_c |g|``
===================  ===============================================  ==========================================

* gradient: Simonyan, Vedaldi, Zisserman, "Deep inside convolutional networks: visualising image classification
  models and saliency maps", ICLR workshop 2014: ``M = max_c |d y_k / d x_c|``.
* gradient x input: Shrikumar, Greenside, Shcherbina, Kundaje, "Not just a black box: learning important features
  through propagating activation differences", arXiv:1605.01713 (2016): ``M = sum_c x_c d y_k / d x_c`` (signed).
* guided backprop: Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for simplicity: the all convolutional
  net", ICLR workshop 2015.
* deconvnet: Zeiler & Fergus, "Visualizing and understanding convolutional networks", ECCV 2014 (the backward
  pass of their deconvnet is, for a ReLU network, the gradient with the ReLU rule above; Simonyan et al. 2014,
  section 4).

The ReLU rules are applied by the scoped :class:`~feedback.readout._rules.RuleMode` (``F.relu``, ``torch.relu`` and
their in-place forms, e.g. timm's ``ReLU(inplace=True)``); every other op keeps its ordinary backward. The max over
channels of ``|g|`` is the reduction of Simonyan et al. and of TorchRay's benchmark.

Shapes: ``x`` (B, C, H, W), ``target`` int or (B,) -> maps (B, 1, h, w) (``layer``'s size; default the input, so
(H, W)).

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    >>> x = torch.rand(2, 3, 8, 8)
    >>> [f(net, x, 1).shape for f in (gradient, gradient_x_input, guided_backprop, deconvnet)][0]
    torch.Size([2, 1, 8, 8])
    >>> g = torch.autograd.functional.jacobian(lambda t: net(t)[:, 1].sum(), x)
    >>> torch.allclose(gradient(net, x, 1), g.abs().amax(1, keepdim=True))
    True
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from ._common import finish, spatial
from ._rules import Rules, default_layer, run_topdown

__all__ = ["deconvnet", "gradient", "gradient_x_input", "guided_backprop"]


def _signal(model, x, target, layer, rules):
    if layer is None:
        layer = default_layer(model, x, "input")
    probes, _, _ = run_topdown(model, x, target, rules=rules, layers=[layer])
    return layer, spatial(probes[0].signal, layer), spatial(probes[0].value, layer)


def gradient(model: nn.Module, x: Tensor, target: Any = None, *, layer: str | int | None = None,
             resize: bool = False) -> Tensor:
    """Saliency of Simonyan et al. (2014): ``max_c |d y_k / d a_c|`` at ``layer`` (default: the input)."""
    layer, g, _ = _signal(model, x, target, layer, None)
    return finish(g.abs().amax(1, keepdim=True), model, x, layer, resize)


def gradient_x_input(model: nn.Module, x: Tensor, target: Any = None, *, layer: str | int | None = None,
                     resize: bool = False) -> Tensor:
    """Gradient x input (Shrikumar et al. 2016): ``sum_c a_c d y_k / d a_c`` at ``layer`` (signed)."""
    layer, g, a = _signal(model, x, target, layer, None)
    return finish((g * a).sum(1, keepdim=True), model, x, layer, resize)


def guided_backprop(model: nn.Module, x: Tensor, target: Any = None, *, layer: str | int | None = None,
                    resize: bool = False) -> Tensor:
    """Guided backprop (Springenberg et al. 2015): ``max_c |g|`` with the guided ReLU rule."""
    layer, g, _ = _signal(model, x, target, layer, Rules("guided"))
    return finish(g.abs().amax(1, keepdim=True), model, x, layer, resize)


def deconvnet(model: nn.Module, x: Tensor, target: Any = None, *, layer: str | int | None = None,
              resize: bool = False) -> Tensor:
    """Deconvnet (Zeiler & Fergus 2014): ``max_c |g|`` with the ReLU rule ``max(g, 0)``."""
    layer, g, _ = _signal(model, x, target, layer, Rules("deconvnet"))
    return finish(g.abs().amax(1, keepdim=True), model, x, layer, resize)
