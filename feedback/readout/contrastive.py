"""Contrastive excitation backprop (c-MWP): the target's winning probability minus that of all other classes.

Zhang, Lin, Brandt, Shen, Sclaroff, "Top-down neural attention by excitation backprop", ECCV 2016 / IJCV 2018,
section 3.3. Re-implemented from the paper (reference/methods.md section 2.1, item 7).

MWP maps of different classes overlap (they share low-level evidence). c-MWP builds a *dual* output unit from the
classifier (top) layer with negated weights ``-W``, which stands for every class but the target, and subtracts its
winning probability where the two first differ, at the classifier's input (the *contrast layer*):

.. math::

    P = x \\odot (W^+)^\\top \\frac{e_k}{W^+ x}, \\qquad
    N = x \\odot ((-W)^+)^\\top \\frac{e_k}{(-W)^+ x}, \\qquad
    \\Delta = P - N

``x`` is the classifier's input and ``e_k`` the one-hot prior. ``Delta`` (signed, unclamped) is then propagated by
the excitation-backprop rules (:mod:`feedback.readout.excitation`) down to the map layer, and the map is
``max(sum_c, 0)`` of the signal there. Both P and N carry one unit of probability, so the maps of an image sum to
at most zero before clamping: units that excite the target more than the other classes stay positive.

Implementation: one forward pass and one top-down pass. A forward pre-hook taps the classifier's input; when the
top-down signal ``P`` arrives there, the tap replaces it by ``P - N``, computing ``N`` from the saved classifier input
and the negated weights (the weights are never modified in place, unlike TorchRay's implementation).

The classifier: ``classifier=`` (a module name), or the last ``nn.Linear``/``nn.Conv*`` of the model's ``head``
(of the whole model if it has none); models whose head has none (``lenet5``'s Euclidean RBF) raise ``ValueError``.
Normally its output is the logits and the prior there is the one-hot ``e_k``; where layers follow it (SqueezeNet's
1x1 class convolution, then ReLU and global pooling), the prior is the excitation-backprop signal that reaches its
output.

Shapes: ``x`` (B, C, H, W), ``target`` int or (B,) -> maps (B, 1, h, w) (``layer``'s spatial size; ``resize=True``:
(H, W)). Default ``layer``: :func:`feedback.readout.default_layer` ``("excitation")``.

Example:
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    >>> m = contrastive_excitation_backprop(net, torch.rand(2, 1, 8, 8), 0, layer="1")
    >>> m.shape, bool((m >= 0).all())
    (torch.Size([2, 1, 8, 8]), True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import finish, spatial
from ._rules import Probe, Rules, Tap, _safe_div, default_layer, run_topdown

__all__ = ["contrastive_excitation_backprop", "find_classifier"]

_CLASSIFIERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def find_classifier(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` of the last linear or convolutional layer of ``model.head`` (else of ``model``)."""
    roots = []
    for owner in (model, getattr(model, "backbone", None)):
        if owner is not None and isinstance(getattr(owner, "head", None), nn.Module):
            roots.append((owner, owner.head))
    if not roots:
        roots.append((model, model))
    names = {id(m): n for n, m in model.named_modules()}
    found = None
    for _, root in roots:
        for m in root.modules():
            if isinstance(m, _CLASSIFIERS):
                found = m
    if found is None:
        raise ValueError(f"contrastive EB needs a linear or convolutional classifier as the output layer; none found "
                         f"in {type(model).__name__}'s head (pass classifier=<module name>)")
    return names[id(found)], found


def _dual_signal(mod: nn.Module, a: Tensor, p: Tensor) -> Tensor:
    """EB of the classifier with negated weights: the dual unit's winning probability at the classifier's input."""
    wn = (-mod.weight.detach()).clamp(min=0)
    if isinstance(mod, nn.Linear):
        def f(t):
            return F.linear(t, wn)
    else:
        conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(mod)]
        if mod.padding_mode != "zeros":
            raise ValueError("contrastive EB supports classifiers with zero padding only")

        def f(t):
            return conv(t, wn, None, mod.stride, mod.padding, mod.dilation, mod.groups)

    with torch.enable_grad():
        aa = a.detach().clone().requires_grad_()
        z = f(aa)
        (c,) = torch.autograd.grad(z, aa, _safe_div(p, z))
    return a * c


def contrastive_excitation_backprop(
    model: nn.Module,
    x: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    classifier: str | None = None,
    clamp: bool = True,
    resize: bool = False,
) -> Tensor:
    """c-MWP map of ``target`` at ``layer``: (B, 1, h, w), ``max(channel sum of the contrastive signal, 0)``.

    Args:
        model: any module whose last layer is a linear/convolutional classifier producing the logits.
        x: input batch (B, C, H, W).
        target: class per sample (int or (B,)); ``None``: the predicted class.
        layer: the map layer (below the classifier); default :func:`default_layer` ``("excitation")``.
        classifier: module name of the classifier; default :func:`find_classifier`.
        clamp: ``max(., 0)`` of the map (the paper's c-MWP); ``False`` returns the signed channel sum of ``P - N``,
            which integrates to zero in a bias-free network (both carry one unit of probability).
        resize: return maps at the input size, aligned on the layer's receptive fields.
    """
    if layer is None:
        layer = default_layer(model, x, "excitation")
    if classifier is None:
        cls_name, cls_mod = find_classifier(model)
    else:
        modules = dict(model.named_modules())
        if classifier not in modules or not isinstance(modules[classifier], _CLASSIFIERS):
            raise ValueError(f"classifier={classifier!r} is not a linear or convolutional module of the model")
        cls_name, cls_mod = classifier, modules[classifier]
    calls: list[dict[str, Any]] = []

    class _Top(Probe):
        def __init__(self, call):
            super().__init__("classifier output")
            self.call = call

        def receive(self, g):
            self.call["p"] = g.detach()
            return g

    def pre(m, args):
        call: dict[str, Any] = {"a": args[0].detach()}
        calls.append(call)
        inj = Probe("contrast", inject=lambda P, call=call: P - _dual_signal(m, call["a"], call["p"]))
        return (Tap.apply(args[0], None, inj),) + tuple(args[1:])

    def post(m, args, out):
        return Tap.apply(out, None, _Top(calls[-1]))

    def install(_model):
        return [cls_mod.register_forward_pre_hook(pre), cls_mod.register_forward_hook(post)]

    probes, logits, _ = run_topdown(model, x, target, rules=Rules("excitation"), layers=[layer], hooks=install)
    if not calls or "p" not in calls[-1]:
        raise ValueError(f"contrastive EB: the classifier {cls_name!r} is not on the path from the logits to layer "
                         f"{layer!r} (pass classifier= and a layer below it)")
    maps = spatial(probes[0].signal, layer).sum(1, keepdim=True)
    if clamp:
        maps = maps.clamp(min=0)
    return finish(maps, model, x, layer, resize)
