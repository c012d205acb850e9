"""Grad-CAM: class activation maps weighted by the gradient of the class score.

Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: visual explanations from deep networks via
gradient-based localization", ICCV 2017, equations 1-2:

.. math::

    \\alpha^k_c = \\frac{1}{hw} \\sum_{u, v} \\frac{\\partial y_k}{\\partial A^c_{uv}}, \\qquad
    L^k = \\mathrm{ReLU}\\Big(\\sum_c \\alpha^k_c A^c\\Big)

with ``A`` (B, C, h, w) the activations of ``layer`` and ``y_k`` the target's logit (before the soft-max, as in
the paper). Ordinary gradients; no deviation.

Shapes: ``x`` (B, C, H, W), ``target`` int or (B,) -> maps (B, 1, h, w) (``layer``'s spatial size; ``resize=True``:
(H, W)). Default ``layer``: :func:`feedback.readout.default_layer` ``("gradcam")``, the last stage with a spatial
output (``layer4`` on ResNets, ``S4`` on LeNet-5), as the paper uses the last convolutional layer.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(4, 3))
    >>> x = torch.rand(2, 1, 6, 6)
    >>> A = net[1](net[0](x))
    >>> ref = torch.relu((net[4].weight[2][None, :, None, None] / 36 * A).sum(1, keepdim=True))
    >>> torch.allclose(grad_cam(net, x, 2, layer="1"), ref, atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from ._common import finish, spatial
from ._rules import default_layer, run_topdown

__all__ = ["grad_cam"]


def grad_cam(model: nn.Module, x: Tensor, target: Any = None, *, layer: str | int | None = None,
             resize: bool = False) -> Tensor:
    """Grad-CAM map of ``target`` at ``layer``: ``relu(sum_c mean_uv(dy/dA_c) A_c)``, (B, 1, h, w)."""
    if layer is None:
        layer = default_layer(model, x, "gradcam")
    probes, _, _ = run_topdown(model, x, target, rules=None, layers=[layer])
    g, a = spatial(probes[0].signal, layer), spatial(probes[0].value, layer)
    weights = g.mean((2, 3), keepdim=True)
    return finish((weights * a).sum(1, keepdim=True).clamp(min=0), model, x, layer, resize)
