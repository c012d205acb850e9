"""Top-down readouts of a trained network: where does it find the evidence for a class?

Every method has the signature ``method(model, x, target, *, layer=..., resize=False, **kw) -> maps (B, 1, h, w)``,
with (h, w) the spatial size of ``layer``'s output (``resize=True`` or :func:`resize_maps`: the input's size,
aligned on the layer's receptive fields). ``layer`` is a dotted module name, ``""`` (the input) or a stage index of
a Staged model; the defaults come from :func:`default_layer`. ``model`` is any module returning (B, K) logits:
timm and torchvision models, this project's Staged backbones, or a :class:`~feedback.core.FeedbackNet`.

===========================  =====================  ==================================================  ============
name (``METHODS``)           function               paper                                               default layer
===========================  =====================  ==================================================  ============
``excitation``               excitation_backprop    Zhang et al. 2016/2018 (MWP)                        excitation
``contrastive``              contrastive_...        Zhang et al. 2016/2018 (c-MWP)                      excitation
``wta``                      selective_tuning       Tsotsos et al. 1995 (selective tuning)              excitation
``gradient``                 gradient               Simonyan et al. 2014                                input
``gradient_x_input``         gradient_x_input       Shrikumar et al. 2016                               input
``guided_backprop``          guided_backprop        Springenberg et al. 2015                            input
``deconvnet``                deconvnet              Zeiler & Fergus 2014                                input
``gradcam``                  grad_cam               Selvaraju et al. 2017                               gradcam
``occlusion``                occlusion              Zeiler & Fergus 2014                                input
``centre``                   centre                 pointing-game baseline (Zhang et al.)               input
===========================  =====================  ==================================================  ============

The propagation rules (per op, applied by a scoped ``TorchFunctionMode``, never by patching
``torch.nn.functional``) are in :mod:`feedback.readout._rules`; the model's train/eval flags and ``requires_grad``
are restored after every call.

Example:
    >>> import torch, baselines
    >>> from feedback import readout
    >>> net = baselines.create_model("resnet18_small", num_classes=10, in_chans=1, channels=(8, 16, 16, 32))
    >>> x = torch.rand(2, 1, 32, 32)
    >>> readout.excitation_backprop(net, x, [3, 7]).shape  # layer3 of resnet18_small: 8x8 at 32 px
    torch.Size([2, 1, 8, 8])
    >>> readout.METHODS["contrastive"](net, x, 3, resize=True).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from typing import Callable

from ._geometry import Geometry, layer_geometry, resize_maps
from ._rules import Rules, default_layer, resolve_layer, select_winners
from .centre import centre
from .contrastive import contrastive_excitation_backprop, find_classifier
from .excitation import excitation_backprop
from .gradcam import grad_cam
from .gradients import deconvnet, gradient, gradient_x_input, guided_backprop
from .occlusion import occlusion
from .wta import selective_tuning

__all__ = [
    "METHODS",
    "Geometry",
    "Rules",
    "centre",
    "contrastive_excitation_backprop",
    "deconvnet",
    "default_layer",
    "excitation_backprop",
    "find_classifier",
    "get_method",
    "grad_cam",
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "layer_geometry",
    "occlusion",
    "resize_maps",
    "resolve_layer",
    "select_winners",
    "selective_tuning",
]

METHODS: dict[str, Callable] = {
    "excitation": excitation_backprop,
    "contrastive": contrastive_excitation_backprop,
    "wta": selective_tuning,
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "gradcam": grad_cam,
    "occlusion": occlusion,
    "centre": centre,
}


def get_method(name: str) -> Callable:
    """The readout registered as ``name``; ``ValueError`` naming the valid choices otherwise."""
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown readout method '{name}'{hint}; choose from: {', '.join(METHODS)}")
    return METHODS[name]
