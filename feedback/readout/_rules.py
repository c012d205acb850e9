"""Per-op propagation rules for top-down readouts, applied by a scoped ``TorchFunctionMode``, and the driver.

A readout runs the model's ordinary forward pass inside :class:`RuleMode`. The mode sees every ``torch`` function
call of the forward (``F.conv2d``, ``F.linear``, ``F.avg_pool2d``, ``F.batch_norm``, ``Tensor.add_`` ...) and, for
the ops its :class:`Rules` name, computes the ordinary output through a custom ``autograd.Function`` whose
``backward`` is the readout's propagation rule instead of the ordinary vector-Jacobian product. Every other op keeps
its ordinary backward (ReLU masks, max-pooling routes to the arg-max, views and concatenations move the signal).
The top-down pass is then one ``torch.autograd.grad`` call from the logits, seeded with the top signal.

Nothing global is touched: the mode is a context manager entered and left around the forward pass (never
``torch.nn.functional`` monkey-patching), the only hooks are forward hooks on the tapped modules and they are removed
in a ``finally``; the model's train/eval flags and its parameters' ``requires_grad`` are saved and restored.

Why a function mode and not module hooks: a residual sum is not a module. timm's and torchvision's ``BasicBlock``
end in ``x += shortcut``, which reaches the mode as ``Tensor.add_``; the rule object performs the same in-place
addition (``ctx.mark_dirty``), keeps copies of both operands and, in backward, splits the signal in proportion to
them. Any other model that adds two activations (``+``, ``+=``, ``torch.add``) gets the same treatment with no
rewriting of its ``forward``.

Rule families (the ``op`` classes a :class:`Rules` table maps):

==============  ==========================================================================================
``linear``      ``conv1d/2d/3d``, ``linear``: positive-weight ops ``f`` (weights of the call, bias dropped)
``pool``        ``avg_pool1d/2d/3d``, ``adaptive_avg_pool1d/2d/3d``, ``mean``, ``sum``: already positive-linear
``add``         ``+``, ``+=``, ``add``, ``add_`` with at least two activation operands (a residual sum)
``scale``       ``*`` or ``/`` of one activation by a constant (a parameter, a buffer or a number)
``norm``        ``batch_norm``, ``layer_norm``, ``group_norm``, ``instance_norm``
``dropout``     ``dropout``, ``dropout1d/2d/3d``, ``alpha_dropout``, ``feature_alpha_dropout``
``relu``        ``F.relu``, ``torch.relu(_)``, ``Tensor.relu(_)``
==============  ==========================================================================================

"Activation" means a tensor computed from the model input: the mode marks the input and, by data flow, every
output of an op that reads a marked tensor. Parameters, buffers and whatever is computed from them alone (a bias
reshaped for broadcasting, a batch-norm scale, a learned subsampling coefficient) are constants and receive no
signal: a sum with a constant passes the signal to the activation unchanged (EB ignores biases).

Taps: a readout asks for the signal at a *layer*: a dotted module name (its output), ``""`` (the model input), or
an integer ``i`` (the output of ``stages[i]`` of a Staged model, DESIGN.md section 3.1). A tap wraps the layer's
output in an identity ``autograd.Function`` that records the signal passing through it (summed if the module runs
more than once, as in an unrolled :class:`~feedback.core.FeedbackNet`). Every tap is tied to a private zero-size
*anchor* leaf and the backward pass asks for the anchor's gradient only, so autograd runs the rules from the logits
down to the lowest tap and no further (nothing below the map layer is computed).
"""

from __future__ import annotations

import contextlib
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "Probe",
    "RuleMode",
    "Rules",
    "Tap",
    "default_layer",
    "is_activation",
    "logits_of",
    "mark_activation",
    "readout_state",
    "resolve_layer",
    "rule_mode_active",
    "run_topdown",
    "select_winners",
    "target_tensor",
]

_TB = torch.Tensor

# --------------------------------------------------------------------------------------------------- op families

CONV_FNS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
LINEAR_FNS = (F.linear,)
AVG_POOL_FNS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
ADAPTIVE_AVG_FNS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3}
REDUCE_FNS = (torch.mean, _TB.mean, torch.sum, _TB.sum)
ADD_FNS = (torch.add, _TB.add, _TB.__add__, _TB.__radd__)
IADD_FNS = (_TB.add_, _TB.__iadd__)
MUL_FNS = (torch.mul, _TB.mul, _TB.__mul__, _TB.__rmul__)
IMUL_FNS = (_TB.mul_, _TB.__imul__)
DIV_FNS = (torch.div, _TB.div, _TB.__truediv__)
IDIV_FNS = (_TB.div_, _TB.__itruediv__)
NORM_FNS = (F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm)
DROPOUT_FNS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
RELU_FNS = (F.relu, torch.relu, _TB.relu)
IRELU_FNS = (torch.relu_, _TB.relu_)

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_LINEAR_ARGS = ("input", "weight", "bias")
_AVG_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_AVG_DEFAULTS = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None}
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


def _bind(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str], defaults: dict[str, Any]) -> dict:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _tuple(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _safe_div(p: Tensor, z: Tensor) -> Tensor:
    """``p / z`` where ``z != 0``, else 0 (the Caffe implementation's convention)."""
    nz = z != 0
    return torch.where(nz, p / torch.where(nz, z, torch.ones_like(z)), torch.zeros_like(p))


def _reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast signal back to ``shape`` (the inverse of broadcasting)."""
    if g.shape == shape:
        return g
    while g.dim() > len(shape):
        g = g.sum(0)
    dims = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(dims, keepdim=True) if dims else g


# --------------------------------------------------------------------------------------------------- selection


def select_winners(c: Tensor, *, mode: str = "theta", theta: float = 0.0, mass: float = 0.5) -> Tensor:
    """Winners among the children of each gated parent, one row per parent.

    Args:
        c: (n, R) contributions ``w_ji a_j`` of the R children of n parents (padding entries 0).
        mode: ``"theta"``: the theta-WTA of Tsotsos et al. (1995) at convergence, with theta relative to the row's
            largest contribution: child ``j`` survives iff ``c_j > 0`` and ``c_j >= (1 - theta) max_j c_j``
            (every unit exceeded by more than ``theta * max`` is inhibited); ``theta = 0`` keeps exactly one
            winner per row (the arg-max, first index on ties). ``"mass"``: the fewest largest positive
            contributions carrying at least ``mass`` of the row's positive total. ``"stnet"``: STNet's rule
            (Biparva & Tsotsos 2017): sort ascending, take prefix sums, theta is the contribution at which the
            prefix sum first becomes positive, and the winners are the children above theta.
        theta: relative theta in [0, 1] for ``mode="theta"``.
        mass: fraction in (0, 1] for ``mode="mass"``.

    Returns: bool (n, R). A row without a positive contribution has no winner.

    Example:
        >>> c = torch.tensor([[0.1, 0.5, 0.45, -1.0]])
        >>> select_winners(c).int().tolist(), select_winners(c, theta=0.2).int().tolist()
        ([[0, 1, 0, 0]], [[0, 1, 1, 0]])
        >>> select_winners(c, mode="mass", mass=0.6).int().tolist()
        [[0, 1, 1, 0]]
    """
    if c.dim() != 2:
        raise ValueError(f"select_winners expects (n, R) contributions, got shape {tuple(c.shape)}")
    if c.shape[0] == 0 or c.shape[1] == 0:
        return torch.zeros_like(c, dtype=torch.bool)
    pos = c > 0
    if mode == "theta":
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must be in [0, 1], got {theta}")
        top, idx = c.max(dim=1, keepdim=True)
        if theta == 0.0:
            win = torch.zeros_like(pos)
            win.scatter_(1, idx, True)
            return win & (top > 0)
        return pos & (c >= (1.0 - theta) * top)
    if mode == "mass":
        if not 0.0 < mass <= 1.0:
            raise ValueError(f"mass must be in (0, 1], got {mass}")
        cp = c.clamp(min=0)
        vals, order = cp.sort(dim=1, descending=True)
        total = vals.sum(1, keepdim=True)
        before = vals.cumsum(1) - vals  # positive mass of the larger children
        keep_sorted = (before < mass * total) & (vals > 0)
        win = torch.zeros_like(pos)
        win.scatter_(1, order, keep_sorted)
        return win
    if mode == "stnet":
        vals, _ = c.sort(dim=1)
        crossed = vals.cumsum(1) > 0
        any_cross = crossed.any(1, keepdim=True)
        first = crossed.float().argmax(1, keepdim=True)
        thr = vals.gather(1, first)
        return pos & (c > thr) & any_cross
    raise ValueError(f"unknown WTA mode '{mode}'; choose from: theta, mass, stnet")


# --------------------------------------------------------------------------------------------------- rule objects


class _Rule:
    """One intercepted call: ``forward`` computes the ordinary output, ``backward`` maps the output signal to the
    signals of ``acts`` (the activation arguments)."""

    inplace = False

    def __init__(self, func: Callable, args: tuple, kwargs: dict, acts: tuple[Tensor, ...]) -> None:
        self.func, self.args, self.kwargs, self.acts = func, args, kwargs, acts

    def forward(self) -> Tensor:
        return self.func(*self.args, **self.kwargs)

    def backward(self, p: Tensor) -> tuple[Tensor | None, ...]:
        raise NotImplementedError


class _RuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rule: _Rule, *acts: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rule = rule
        out = rule.forward()
        if rule.inplace:
            ctx.mark_dirty(acts[0])
        return out

    @staticmethod
    def backward(ctx, p: Tensor) -> tuple:  # type: ignore[override]
        rule = ctx.rule
        ctx.rule = None  # the rule holds copies of the inputs: free them with the graph
        return (None, *rule.backward(p))


class _Saving(_Rule):
    """A rule that keeps copies of its activation inputs (the forward may overwrite them in place later)."""

    def forward(self) -> Tensor:
        self.saved = tuple(a.detach().clone() for a in self.acts)
        return super().forward()


class ZPlus(_Saving):
    """Excitation backprop on a positive-linear op ``f``: ``p' = x * f*(p / f(x))`` (f with w+ and no bias)."""

    def __init__(self, func, args, kwargs, acts, fplus: Callable[[Tensor], Tensor]) -> None:
        super().__init__(func, args, kwargs, acts)
        self.fplus = fplus

    def backward(self, p):
        (x,) = self.saved
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            z = self.fplus(xx)
            (c,) = torch.autograd.grad(z, xx, _safe_div(p, z))
        return (x * c,)


class Proportional(_Saving):
    """A sum ``y = sum_k x_k`` of activations: ``p_k = (x_k / y) * p`` (summed back over broadcast dimensions)."""

    def __init__(self, func, args, kwargs, acts, inplace: bool) -> None:
        super().__init__(func, args, kwargs, acts)
        self.inplace = inplace

    def backward(self, p):
        y = self.saved[0]
        for a in self.saved[1:]:
            y = y + a
        s = _safe_div(p, y.expand_as(p))
        return tuple(_reduce_to(a * s, a.shape) for a in self.saved)


class PassThrough(_Rule):
    """The signal passes unchanged (batch norm as identity, dropout), or masked by ``mask`` (scale by a constant)."""

    def __init__(self, func, args, kwargs, acts, mask: Any = None, inplace: bool = False) -> None:
        super().__init__(func, args, kwargs, acts)
        self.mask, self.inplace = mask, inplace

    def backward(self, p):
        if self.mask is None:
            return (p,)
        return (_reduce_to(p * self.mask, self.acts[0].shape),)


class _NoUpdateNorm(PassThrough):
    """Batch norm as identity; a training-mode call uses batch statistics without updating the running ones."""

    def forward(self):
        if self.func is F.batch_norm:
            b = _bind(self.args, self.kwargs, _BN_ARGS, {"weight": None, "bias": None, "training": False,
                                                            "momentum": 0.1, "eps": 1e-5})
            if b["training"]:
                b["running_mean"] = b["running_var"] = None
            return F.batch_norm(**b)
        return super().forward()


class GuidedReLU(_Rule):
    """Guided backprop (Springenberg et al. 2015): ``p' = p [x > 0] [p > 0]``; ``deconvnet``: ``p' = max(p, 0)``."""

    def __init__(self, func, args, kwargs, acts, inplace: bool, deconv: bool) -> None:
        super().__init__(func, args, kwargs, acts)
        self.inplace, self.deconv = inplace, deconv

    def forward(self):
        out = super().forward()
        self.mask = out > 0
        return out

    def backward(self, p):
        if self.deconv:
            return (p.clamp(min=0),)
        return (p * self.mask * (p > 0),)


class WTALinear(_Saving):
    """Selective tuning on a linear op: each gated parent keeps the winners among its children's contributions."""

    def __init__(self, func, args, kwargs, acts, kind: str, spec: dict, select: Callable[[Tensor], Tensor],
                 chunk: int = 8192) -> None:
        super().__init__(func, args, kwargs, acts)
        self.kind, self.spec, self.select, self.chunk = kind, spec, select, chunk

    def backward(self, p):
        (x,) = self.saved
        gate = p > 0
        if self.kind == "linear":
            return (_wta_linear(x, self.spec["weight"], gate, self.select, self.chunk),)
        if self.kind == "conv":
            return (_wta_conv(x, gate, self.spec, self.select, self.chunk),)
        if self.kind == "reduce":
            return (_wta_reduce(x, gate, self.spec["dims"], self.spec["keepdim"], self.select, self.chunk),)
        if self.kind == "windows":
            return (_wta_windows(x, gate, self.spec["members"], self.spec["n"], self.select, self.chunk),)
        raise AssertionError(self.kind)


class WTASum(_Saving):
    """Selective tuning on a residual sum: each gated unit keeps the winning operand(s)."""

    def __init__(self, func, args, kwargs, acts, inplace: bool, select: Callable[[Tensor], Tensor]) -> None:
        super().__init__(func, args, kwargs, acts)
        self.inplace, self.select = inplace, select

    def backward(self, p):
        gate = p > 0
        vals = torch.stack([a.expand_as(p) for a in self.saved], dim=-1)  # (*out, k)
        flat = vals.reshape(-1, len(self.saved))
        idx = gate.reshape(-1).nonzero().squeeze(1)
        win = torch.zeros_like(flat, dtype=torch.bool)
        win[idx] = self.select(flat[idx])
        win = win.reshape(vals.shape)
        return tuple((_reduce_to(win[..., k].to(p.dtype), a.shape) > 0).to(p.dtype) for k, a in enumerate(self.saved))


def _chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def _wta_linear(x: Tensor, w: Tensor, gate: Tensor, select, chunk: int) -> Tensor:
    if x.dim() != 2:
        raise ValueError(f"selective tuning supports linear layers on (B, features) inputs, got {tuple(x.shape)}")
    child = torch.zeros_like(x)
    b, k = gate.nonzero(as_tuple=True)
    for sl in _chunks(b.numel(), chunk):
        win = select(w[k[sl]] * x[b[sl]])
        child.index_add_(0, b[sl], win.to(x.dtype))
    return (child > 0).to(x.dtype)


def _wta_conv(x: Tensor, gate: Tensor, spec: dict, select, chunk: int) -> Tensor:
    """Conv / avg-pool as unfold: contributions of every child inside each gated parent's receptive field."""
    squeeze = x.dim() == 3  # 1-D: add a unit height
    if squeeze:
        x, gate = x.unsqueeze(2), gate.unsqueeze(2)
    bsz, c_in, h, w = x.shape
    k, s, pad, d = spec["kernel"], spec["stride"], spec["padding"], spec["dilation"]
    cols = F.unfold(x, k, dilation=d, padding=pad, stride=s)  # (B, C_in*kh*kw, L)
    out_c, oh, ow = gate.shape[1:]
    if cols.shape[-1] != oh * ow:
        raise ValueError(f"selective tuning: unfold gives {cols.shape[-1]} positions for an output of {oh}x{ow} "
                         "(ceil_mode pooling is not supported)")
    kk = k[0] * k[1]
    g = spec["groups"]
    weight = spec.get("weight")  # (out, C_in/g, kh, kw), or None for average pooling (per-channel, equal weights)
    if weight is None:
        cols = cols.view(bsz, c_in, kk, oh * ow)
        per = kk
    else:
        cols = cols.view(bsz, g, (c_in // g) * kk, oh * ow)
        per = (c_in // g) * kk
        wflat = weight.reshape(out_c, per)
    acc = torch.zeros_like(cols)
    bi, oi, yi, xi = gate.nonzero(as_tuple=True)
    li = yi * ow + xi
    for sl in _chunks(bi.numel(), chunk):
        b, o, l_ = bi[sl], oi[sl], li[sl]
        ar = torch.arange(per, device=x.device)[None, :].expand(len(b), per)
        if weight is None:
            rows = cols[b, o, :, l_]
            win = select(rows)
            acc.index_put_((b[:, None].expand(-1, per), o[:, None].expand(-1, per), ar, l_[:, None].expand(-1, per)),
                           win.to(x.dtype), accumulate=True)
        else:
            grp = o // (out_c // g)
            rows = cols[b, grp, :, l_] * wflat[o]
            win = select(rows)
            acc.index_put_((b[:, None].expand(-1, per), grp[:, None].expand(-1, per), ar, l_[:, None].expand(-1, per)),
                           win.to(x.dtype), accumulate=True)
    child = F.fold(acc.view(bsz, c_in * kk, oh * ow), (h, w), k, dilation=d, padding=pad, stride=s)
    child = (child > 0).to(x.dtype)
    return child.squeeze(2) if squeeze else child


def _wta_reduce(x: Tensor, gate: Tensor, dims: tuple[int, ...], keepdim: bool, select, chunk: int) -> Tensor:
    nd = x.dim()
    dims = tuple(sorted(d % nd for d in dims))
    kept = [d for d in range(nd) if d not in dims]
    perm = kept + list(dims)
    xr = x.permute(perm)
    kept_shape = xr.shape[: len(kept)]
    xr = xr.reshape(-1, math.prod(xr.shape[len(kept):]))
    gflat = gate.reshape(-1)
    if gflat.numel() != xr.shape[0]:
        raise ValueError("selective tuning: cannot match a reduction's output to its input")
    win_all = torch.zeros_like(xr, dtype=torch.bool)
    idx = gflat.nonzero().squeeze(1)
    for sl in _chunks(idx.numel(), chunk):
        win_all[idx[sl]] = select(xr[idx[sl]])
    child = win_all.to(x.dtype).reshape(*kept_shape, *[x.shape[d] for d in dims])
    inv = [perm.index(i) for i in range(nd)]
    return child.permute(inv).contiguous()


# --------------------------------------------------------------------------------------------------- rule tables


_ACT = "_feedback_activation"


def mark_activation(t: Tensor) -> Tensor:
    """Mark ``t`` as an activation (the start of the data flow the rules follow); returns ``t``."""
    setattr(t, _ACT, True)
    return t


def is_activation(t: Any) -> bool:
    """A floating tensor computed from a marked one (see :class:`RuleMode`)."""
    return isinstance(t, Tensor) and t.is_floating_point() and getattr(t, _ACT, False)


@dataclass
class Rules:
    """A propagation rule set: ``"excitation"`` (MWP), ``"wta"`` (selective tuning), ``"guided"``, ``"deconvnet"``.

    Args:
        name: which rule set.
        wta_mode, theta, mass: winner selection of ``"wta"`` (see :func:`select_winners`).
    """

    name: str
    wta_mode: str = "theta"
    theta: float = 0.0
    mass: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in ("excitation", "wta", "guided", "deconvnet"):
            raise ValueError(f"unknown rule set '{self.name}'; choose from: excitation, wta, guided, deconvnet")
        select_winners(torch.ones(1, 1), mode=self.wta_mode, theta=self.theta, mass=self.mass)  # validate

    # -- helpers
    def is_act(self, t: Any) -> bool:
        return is_activation(t)

    def _live(self, t: Any) -> bool:
        """An activation on the path of the top-down signal (it requires grad)."""
        return self.is_act(t) and t.requires_grad

    def _select(self, c: Tensor) -> Tensor:
        return select_winners(c, mode=self.wta_mode, theta=self.theta, mass=self.mass)

    # -- dispatch
    def make(self, func: Callable, args: tuple, kwargs: dict) -> _Rule | None:
        """The rule object for this call, or ``None`` for the ordinary backward."""
        if self.name in ("guided", "deconvnet"):
            if func in RELU_FNS or func in IRELU_FNS:
                x = args[0] if args else kwargs["input"]
                inplace = func in IRELU_FNS or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
                return GuidedReLU(func, args, kwargs, (x,), inplace, self.name == "deconvnet")
            return None
        if func in NORM_FNS:
            x = args[0] if args else kwargs["input"]
            return _NoUpdateNorm(func, args, kwargs, (x,)) if self._live(x) else None
        if func in DROPOUT_FNS:
            x = args[0] if args else kwargs["input"]
            inplace = bool(kwargs.get("inplace", args[3] if len(args) > 3 else False))
            return PassThrough(func, args, kwargs, (x,), inplace=inplace) if self._live(x) else None
        if func in ADD_FNS or func in IADD_FNS:
            return self._add(func, args, kwargs)
        if func in MUL_FNS or func in IMUL_FNS or func in DIV_FNS or func in IDIV_FNS:
            return self._scale(func, args, kwargs)
        if func in CONV_FNS or func in LINEAR_FNS or func in AVG_POOL_FNS or func in ADAPTIVE_AVG_FNS:
            return self._linear(func, args, kwargs)
        if func in REDUCE_FNS:
            return self._reduce(func, args, kwargs)
        return None

    def _add(self, func, args, kwargs):
        if len(args) < 2 or kwargs.get("out") is not None or kwargs.get("alpha", 1) != 1:
            return None
        a, b = args[0], args[1]
        if not (self.is_act(a) and self.is_act(b) and (a.requires_grad or b.requires_grad)):
            return None
        inplace = func in IADD_FNS
        if self.name == "wta":
            return WTASum(func, args, kwargs, (a, b), inplace, self._select)
        return Proportional(func, args, kwargs, (a, b), inplace)

    def _scale(self, func, args, kwargs):
        if len(args) < 2 or kwargs.get("out") is not None or kwargs.get("rounding_mode") is not None:
            return None
        a, b = args[0], args[1]
        div = func in DIV_FNS or func in IDIV_FNS
        a_act, b_act = self.is_act(a), self.is_act(b)
        if a_act == b_act or (div and b_act):
            return None  # a product of two activations, or a division by an activation: ordinary backward
        x, c = (a, b) if a_act else (b, a)
        if not x.requires_grad:
            return None
        positive = (c > 0) if isinstance(c, Tensor) else torch.tensor(float(c) > 0, device=x.device)
        inplace = func in IMUL_FNS or func in IDIV_FNS
        return PassThrough(func, args, kwargs, (x,), mask=positive.to(x.dtype), inplace=inplace)

    def _linear(self, func, args, kwargs):
        x = args[0] if args else kwargs["input"]
        if not self._live(x):
            return None
        if func in CONV_FNS:
            b = _bind(args, kwargs, _CONV_ARGS, _CONV_DEFAULTS)
            w = b["weight"]
            if self.name == "excitation":
                wp = w.clamp(min=0)

                def fplus(t, b=b, wp=wp):
                    return func(t, wp, None, b["stride"], b["padding"], b["dilation"], b["groups"])

                return ZPlus(func, args, kwargs, (x,), fplus)
            n = CONV_FNS[func]
            if n == 3:
                raise ValueError("selective tuning supports conv1d and conv2d, not conv3d")
            return WTALinear(func, args, kwargs, (x,), "conv", _conv_spec(b, w, n), self._select)
        if func in LINEAR_FNS:
            b = _bind(args, kwargs, _LINEAR_ARGS, {"bias": None})
            w = b["weight"]
            if self.name == "excitation":
                wp = w.clamp(min=0)
                return ZPlus(func, args, kwargs, (x,), lambda t, wp=wp: F.linear(t, wp))
            return WTALinear(func, args, kwargs, (x,), "linear", {"weight": w}, self._select)
        # average pooling: already positive-linear
        if self.name == "excitation":
            rest, kw = args[1:], kwargs
            return ZPlus(func, args, kwargs, (x,), lambda t: func(t, *rest, **{k: v for k, v in kw.items()
                                                                                  if k != "input"}))
        if func in AVG_POOL_FNS:
            n = AVG_POOL_FNS[func]
            if n == 3:
                raise ValueError("selective tuning supports avg_pool1d and avg_pool2d, not avg_pool3d")
            b = _bind(args, kwargs, _AVG_ARGS, _AVG_DEFAULTS)
            k = _tuple(b["kernel_size"], n)
            s = _tuple(b["stride"] if b["stride"] not in (None, [], ()) else k, n)
            spec = _spatial_spec(k, s, _tuple(b["padding"], n), (1,) * n, n)
            spec.update(groups=1, weight=None)
            return WTALinear(func, args, kwargs, (x,), "conv", spec, self._select)
        # adaptive average pooling: global (a reduction), else explicit windows (PyTorch's floor/ceil bounds)
        n = ADAPTIVE_AVG_FNS[func]
        out = _tuple(args[1] if len(args) > 1 else kwargs["output_size"], n)
        sizes = tuple(x.shape[-n:])
        out = tuple(sz if o is None else int(o) for o, sz in zip(out, sizes))
        if all(o == 1 for o in out):
            dims = tuple(range(x.dim() - n, x.dim()))
            return WTALinear(func, args, kwargs, (x,), "reduce", {"dims": dims, "keepdim": True}, self._select)
        return WTALinear(func, args, kwargs, (x,), "windows", {"members": _adaptive_members(sizes, out, x.device),
                                                               "n": n}, self._select)

    def _reduce(self, func, args, kwargs):
        x = args[0] if args else kwargs["input"]
        if not self._live(x):
            return None
        if self.name == "excitation":
            rest, kw = args[1:], {k: v for k, v in kwargs.items() if k != "input"}
            return ZPlus(func, args, kwargs, (x,), lambda t: func(t, *rest, **kw))
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if dim is None:
            dims = tuple(range(x.dim()))
        else:
            dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
        return WTALinear(func, args, kwargs, (x,), "reduce", {"dims": dims, "keepdim": keepdim}, self._select)


def _adaptive_members(sizes: tuple[int, ...], out: tuple[int, ...], device: torch.device) -> Tensor:
    """(prod(out), prod(sizes)) bool: which inputs each adaptive-pooling window averages (floor/ceil bounds)."""
    axes = []
    for sz, o in zip(sizes, out):
        i = torch.arange(o)
        start, end = (i * sz) // o, -((-(i + 1) * sz) // o)
        j = torch.arange(sz)
        axes.append((j[None, :] >= start[:, None]) & (j[None, :] < end[:, None]))  # (o, sz)
    m = axes[0]
    for a in axes[1:]:
        m = (m[:, None, :, None] & a[None, :, None, :]).reshape(m.shape[0] * a.shape[0], m.shape[1] * a.shape[1])
    return m.to(device)


def _wta_windows(x: Tensor, gate: Tensor, members: Tensor, n: int, select, chunk: int) -> Tensor:
    lead = x.shape[: x.dim() - n]
    xf = x.reshape(-1, members.shape[1])  # (B*C, P)
    gf = gate.reshape(-1, members.shape[0])  # (B*C, O)
    child = torch.zeros_like(xf)
    r, o = gf.nonzero(as_tuple=True)
    for sl in _chunks(r.numel(), chunk):
        win = select(xf[r[sl]] * members[o[sl]].to(x.dtype))
        child.index_add_(0, r[sl], win.to(x.dtype))
    return (child > 0).to(x.dtype).reshape(*lead, *x.shape[x.dim() - n:])


def _spatial_spec(k, s, p, d, n) -> dict:
    if n == 1:  # conv1d/avg_pool1d run as 2-D with a unit height
        return {"kernel": (1, k[0]), "stride": (1, s[0]), "padding": (0, p[0]), "dilation": (1, d[0])}
    return {"kernel": tuple(k), "stride": tuple(s), "padding": tuple(p), "dilation": tuple(d)}


def _conv_spec(b: dict, w: Tensor, n: int) -> dict:
    k = tuple(w.shape[2:])
    d = _tuple(b["dilation"], n)
    pad = b["padding"]
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0,) * n
        elif all((di * (ki - 1)) % 2 == 0 for di, ki in zip(d, k)):
            pad = tuple(di * (ki - 1) // 2 for di, ki in zip(d, k))
        else:
            raise ValueError("selective tuning: padding='same' with an even kernel is not supported")
    spec = _spatial_spec(k, _tuple(b["stride"], n), _tuple(pad, n), d, n)
    spec.update(groups=int(b["groups"]), weight=w if n == 2 else w.unsqueeze(2))
    return spec


def rule_mode_active() -> bool:
    """True inside a :class:`RuleMode` (a rule-based readout's forward pass) on this thread."""
    from torch.overrides import _get_current_function_mode_stack

    return any(isinstance(m, RuleMode) for m in _get_current_function_mode_stack())


class RuleMode(TorchFunctionMode):
    """Scoped interception: inside ``with RuleMode(rules):`` every call named by ``rules`` uses its rule."""

    def __init__(self, rules: Rules) -> None:
        super().__init__()
        self.rules = rules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = self.rules.make(func, args, kwargs)
        if rule is None or not any(a.requires_grad for a in rule.acts):
            out = func(*args, **kwargs)
        else:
            out = _RuleFunction.apply(rule, *rule.acts)
        if any(is_activation(t) for t in tree_flatten((args, kwargs))[0]):
            for o in tree_flatten(out)[0]:
                if isinstance(o, Tensor) and o.is_floating_point():
                    mark_activation(o)
        return out


# --------------------------------------------------------------------------------------------------- taps


class Probe:
    """Where a tap records the signal passing through it (summed over calls); ``inject`` may replace the signal."""

    def __init__(self, name: str = "", inject: Callable[[Tensor], Tensor] | None = None) -> None:
        self.name = name
        self.inject = inject
        self.signal: Tensor | None = None
        self.value: Tensor | None = None  # the tapped forward value (last call)

    def receive(self, g: Tensor) -> Tensor:
        self.signal = g.detach() if self.signal is None else self.signal + g.detach()
        return self.inject(g) if self.inject is not None else g


class Tap(torch.autograd.Function):
    """Identity in forward; in backward, hands the incoming signal to a :class:`Probe` and passes (or injects) it."""

    @staticmethod
    def forward(ctx, x: Tensor, anchor: Tensor | None, probe: Probe) -> Tensor:  # type: ignore[override]
        ctx.probe = probe
        probe.value = x.detach()
        out = x.clone()
        if is_activation(x):
            mark_activation(out)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple:  # type: ignore[override]
        return ctx.probe.receive(g), None, None


# --------------------------------------------------------------------------------------------------- driver


def logits_of(out: Any) -> Tensor:
    """The logits of a model output: a tensor, or an object with ``.logits`` (a ``FeedbackOutput``)."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    raise TypeError(f"the model returned {type(out).__name__}; a readout needs logits (a tensor or .logits)")


def target_tensor(target: Any, batch: int, device: torch.device, logits: Tensor | None = None) -> Tensor:
    """Target classes as int64 (B,): an int, a sequence or tensor of B ints, or ``None`` (the predicted class)."""
    if target is None:
        if logits is None:
            raise ValueError("target=None needs the logits")
        return logits.detach().argmax(-1)
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        return t.expand(batch).clone()
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch}")
    return t


def _staged(model: nn.Module) -> nn.Module | None:
    if hasattr(model, "stages") and isinstance(model.stages, nn.ModuleList):
        return model
    bb = getattr(model, "backbone", None)
    if bb is not None and hasattr(bb, "stages") and isinstance(bb.stages, nn.ModuleList):
        return bb
    return None


def resolve_layer(model: nn.Module, layer: str | int) -> tuple[str, nn.Module | None]:
    """``(name, module)`` of a layer spec: ``""``/``"input"`` -> the input, an int -> ``stages[i]``, else a name."""
    if isinstance(layer, bool):
        raise TypeError("layer must be a module name, '' (the input) or a stage index, not a bool")
    if isinstance(layer, int):
        st = _staged(model)
        if st is None:
            raise ValueError(f"layer={layer}: a stage index needs a Staged model (stem, stages, head); "
                             f"{type(model).__name__} has no stages; pass a module name")
        n = len(st.stages)
        if not -n <= layer < n:
            raise ValueError(f"layer={layer}: the model has {n} stages (valid indices {-n}..{n - 1})")
        i = layer % n
        prefix = "backbone." if st is not model else ""
        return f"{prefix}stages.{i}", st.stages[i]
    if layer in ("", "input"):
        return "", None
    modules = dict(model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(str(layer), [k for k in modules if k], n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown layer {layer!r}{hint}; pass a module name from model.named_modules(), '' for the "
                         "input, or a stage index")
    return layer, modules[layer]


@contextlib.contextmanager
def readout_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; every module's flag and ``requires_grad`` restored."""
    flags = [(m, m.training) for m in model.modules()]
    req = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in req:
            p.requires_grad_(False)
        yield
    finally:
        for m, t in flags:
            m.training = t
        for p, r in req:
            p.requires_grad_(r)


@torch.no_grad()
def _stage_output_shapes(model: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
    st = _staged(model)
    shapes: list[tuple[int, ...]] = []
    hooks = [s.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for s in st.stages]
    try:
        with readout_state(model):
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes[: len(st.stages)]


def default_layer(model: nn.Module, x: Tensor, which: str = "excitation") -> str | int:
    """The default map layer of a readout family on ``model`` for inputs like ``x``.

    * ``which="excitation"`` (EB, c-MWP, WTA): the second-to-last stage whose output is a spatial map larger than
      1x1 (the last one if there is only one). ``resnet18`` at 224 px: ``layer3`` (14x14, as TorchRay's ResNet-50
      benchmark); ``resnet18_small`` at 32 px: ``layer3`` (8x8); ``lenet5``/``lenet5_relu``: ``C3`` (10x10).
    * ``which="gradcam"``: the last spatial stage (``layer4``; LeNet ``S4``), as Selvaraju et al. use the last
      convolutional layer.
    * ``which="input"``: ``""`` (the input image), the gradient family's default.

    Models that are not Staged: ``layer3``/``layer4`` where the model has them (timm and torchvision ResNets), else
    the last two entries of timm's ``feature_info``; otherwise ``ValueError`` asking for ``layer=``.
    """
    if which == "input":
        return ""
    if which not in ("excitation", "gradcam"):
        raise ValueError(f"unknown default-layer family '{which}'; choose from: excitation, gradcam, input")
    if _staged(model) is not None:
        shapes = _stage_output_shapes(model, x)
        spatial = [i for i, s in enumerate(shapes) if len(s) == 3 and s[1] * s[2] > 1]
        if not spatial:
            raise ValueError("no stage of this model outputs a spatial map larger than 1x1; pass layer=")
        if which == "gradcam" or len(spatial) == 1:
            return spatial[-1]
        return spatial[-2]
    if hasattr(model, "layer3") and hasattr(model, "layer4"):
        return "layer3" if which == "excitation" else "layer4"
    info = getattr(model, "feature_info", None)
    if info is not None:
        names = [f["module"] for f in info] if isinstance(info, list) else list(info.module_name())
        if len(names) >= 2:
            return names[-2] if which == "excitation" else names[-1]
    raise ValueError(f"no default map layer for {type(model).__name__}; pass layer= (a module name)")


def run_topdown(
    model: nn.Module,
    x: Tensor,
    target: Any,
    *,
    rules: Rules | None,
    layers: Sequence[str | int],
    top: Callable[[Tensor, Tensor], Tensor] | None = None,
    hooks: Callable[[nn.Module], list] | None = None,
) -> tuple[list[Probe], Tensor, Tensor]:
    """Forward under ``rules`` with taps at ``layers``, then one top-down pass from the logits.

    Args:
        model: any module returning logits (B, K) or an object with ``.logits``.
        x: (B, C, H, W) input.
        target: class per sample (see :func:`target_tensor`).
        rules: the rule set (``None``: ordinary gradients).
        layers: tap points (module names, ``""`` for the input, stage indices).
        top: ``top(logits, target) -> signal`` at the logits; default one-hot of the target.
        hooks: ``hooks(model) -> [handles]`` installs extra hooks for the forward (removed afterwards).

    Returns: ``(probes, logits, target)`` with one :class:`Probe` per layer holding ``signal`` and ``value``.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (B, ...), got shape {tuple(x.shape)}")
    resolved = [resolve_layer(model, layer) for layer in layers]
    with readout_state(model):
        anchor = torch.zeros((), device=x.device, requires_grad=True)
        probes = [Probe(name) for name, _ in resolved]
        handles = []
        xin = mark_activation(x.detach())
        try:
            for (_, mod), probe in zip(resolved, probes):
                if mod is None:
                    xin = Tap.apply(xin, anchor, probe)
                else:
                    handles.append(mod.register_forward_hook(
                        lambda m, i, o, probe=probe: Tap.apply(o, anchor, probe)))
            if hooks is not None:
                handles.extend(hooks(model))
            with torch.enable_grad():
                if rules is not None:
                    with RuleMode(rules):
                        out = model(xin)
                else:
                    out = model(xin)
                logits = logits_of(out)
                if logits.dim() != 2:
                    raise ValueError(f"readouts need logits of shape (B, K), got {tuple(logits.shape)}")
                tgt = target_tensor(target, logits.shape[0], logits.device, logits)
                seed = top(logits, tgt) if top is not None else F.one_hot(tgt, logits.shape[1]).to(logits.dtype)
                if not logits.requires_grad:
                    raise ValueError(f"no path from the logits to the tapped layer(s) {list(layers)}")
                torch.autograd.grad(logits, anchor, seed, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
    for probe, layer in zip(probes, layers):
        if probe.signal is None:
            raise ValueError(f"layer {layer!r} received no top-down signal: it is not on the path to the logits "
                             "(or it ran under torch.no_grad)")
    return probes, logits.detach(), tgt
