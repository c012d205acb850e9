"""``rectified``: the bottom-up / top-down recurrence of hierarchical rectified Gaussians (Hu and Ramanan 2016).

Reference: P. Hu, D. Ramanan, "Bottom-Up and Top-Down Reasoning with Hierarchical Rectified Gaussians", CVPR 2016.
The model scores rectified latent layers ``z_i >= 0`` (``z_0 = x``) with the quadratic objective

.. math::

    S(x, z) = \\sum_i z_i^\\top (W_i z_{i-1} + b_i) - \\tfrac12 \\sum_i \\lVert z_i \\rVert^2,
    \\qquad z_i \\ge 0,

whose MAP inference is a QP. Coordinate ascent on one layer with both neighbours fixed is a rectified linear unit
that sums a bottom-up and a *tied, transposed* top-down term,

.. math::

    z_i \\leftarrow \\max\\big(0,\\; W_i z_{i-1} + b_i + W_{i+1}^\\top z_{i+1}\\big),

with the top-down term un-pooled at the max-pooling switches of the bottom-up pass. Unrolling ``k`` sweeps gives
"QP-k"; QP-1 is the feed-forward CNN (``z_{i+1} = 0`` in the first sweep). Training back-propagates through the
unrolled sweeps (a deep tied-weight recurrent net).

**On a Staged backbone** (``FeedbackNet(..., steps=T)`` = QP-T): after step ``t`` stage ``i`` produced
``z_i = feats[i]``; the message it sends down is its own transposed linear map applied to it,
``m = W_i^\\top z_i``, which lives in stage ``i``'s *input* space (the output of stage ``i - 1``). At step ``t + 1``
that input becomes

.. math::

    h_{i-1} \\leftarrow \\max\\big(0,\\; h_{i-1} + \\mathrm{BN}(W_i^\\top z_i)\\big).

Which map ``W_i^T`` is, per stage structure (decided by :meth:`RectifiedFeedback.bind` from the backbone's modules):

- ``tied``: a stage whose only linear layer comes first and is followed by point-wise modules only, i.e.
  ``[Flatten] + Conv2d|Linear + (ReLU, BatchNorm, Dropout, Identity, ... )*``, exact ``torch.nn`` types, zero
  padding (LeNet-5-ReLU's C1, C3, C5, F6). The
  message is ``F.conv_transpose2d(z, conv.weight, stride, padding, output_padding, groups, dilation)`` (or
  ``F.linear(z, linear.weight.t())``) with the stage's own ``weight`` Parameter, read at every call, never copied:
  gradients of the top-down pass reach the forward weights. ``output_padding`` makes the message exactly the stage
  input's size. No bias: ``b_i`` belongs to the bottom-up term.
- ``switches``: a ``MaxPool2d`` stage is not a QP layer but the routing of the layer below it: it sends no message
  of its own, and the message arriving at its output (from the stage above) is un-pooled at its stored switches
  (the arg-max positions of the pool on its actual input at step ``t``, recomputed from the previous stage's output
  and the previous messages that the state carries; overlapping windows sum) and delivered at
  the pool's input, i.e. *before* the pooling, as in the paper (LeNet-5-ReLU's S2, S4).
- ``learned``: any other stage (a residual stack such as ResNet's ``layer1..4``, several convolutions in one
  stage, an unknown module such as LeNet-5's ``ScaledTanh``) has no single ``W_i``: its message comes from a learned
  ``ConvTranspose2d`` with the stage's resolution change (``stride s = H_in / H_out``, kernel ``s + 2``,
  padding 1; otherwise the exact padding-free geometry of :func:`feedback.deconv.deconv_geometry`), or a linear map
  where the stage input or output is a vector. ``weights="learned"`` uses learned maps for every stage (the untied
  ablation; it needs no backbone).

The stem's output (stage 0's input) is the observed layer ``z_0 = x`` of the model: the loop runs the stem once and
it receives no message, so stage 0's message is dropped (a message that would be routed through a pooling stage 0
is delivered at stage 1's input instead).

**Choices where the paper is silent or the Staged view forces a deviation** (documented, tested):

- *Where the ReLU sits*: the QP rectifies the *pre-activation* plus the message; a stage boundary only exposes the
  rectified output ``h = max(0, a)``, so the kind computes ``max(0, h + m)``, equal to the QP update where
  ``a >= 0`` and larger where ``a < 0 < m``. The model assumes rectified (non-negative) stage outputs; on a stage
  whose output can be negative (LeNet-5's tanh) the combine also rectifies the bottom-up input from step 1 on.
- *Message normalisation*: ``message_norm="batch"`` (default) puts a BatchNorm on each message before it is
  un-pooled and added, as the official MatConvNet code (peiyunh/rg-mpii, ``initialize_qp2_fcn8s.m``) does; its
  affine parameters are the only parameters this kind adds on a fully tied backbone. Its running statistics are kept
  per step (:class:`StepBatchNorm`, affine shared), as ``FeedbackNet`` does for the backbone's own batch norms.
  ``"none"`` is the bare QP update.
- *Update order*: every message of step ``t + 1`` comes from step ``t``'s states (a Jacobi sweep, the framework's
  loop), whereas the paper's top-down pass updates layer ``i`` from layer ``i + 1`` already updated in the same pass.

Binding: a :class:`~feedback.core.Feedback` only sees stage shapes, so tying needs the backbone's modules:
``RectifiedFeedback(shapes=..., backbone=model)``, ``fb.bind(model)``, or, what the runner relies on,
``FeedbackNet(model, "rectified")``, which calls :meth:`RectifiedFeedback.bind` with its backbone (binding the same
backbone twice is a no-op). An unbound ``weights="tied"`` kind raises at its first forward. The kind keeps plain (unregistered) references to the stage modules, so the backbone's parameters are
neither duplicated in its ``state_dict`` nor counted as feedback parameters.

Shapes: ``feats[i]`` (B, C_i, H_i, W_i) or (B, C_i) -> ``topdown[i]`` with the shape of stage ``i``'s input, or
``None``. State: ``{"step": t, "topdown": [...]}``, the step that uses the messages and the messages themselves
(the next call recomputes the pooling switches from them), per sample.

Example:
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet, probe_shapes
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.head = nn.Identity(), nn.Linear(16, 3)
    ...         self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), nn.MaxPool2d(2),
    ...             nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Linear(8 * 9, 16))])
    >>> net = Net()
    >>> fb = RectifiedFeedback(shapes=probe_shapes(net, (1, 8, 8)), backbone=net)
    >>> fb.plan  # how each stage's message is made
    ('clamped', 'switches', 'tied', 'tied')
    >>> out = FeedbackNet(net, fb, steps=3)(torch.randn(2, 1, 8, 8))
    >>> [tuple(t.shape) if t is not None else None for t in out.state["topdown"]]
    [None, (2, 4, 6, 6), None, (2, 8, 3, 3)]
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .core import Feedback, StageShapes, register_feedback
from .deconv import deconv_geometry

__all__ = ["RectifiedFeedback", "StepBatchNorm", "stage_plan"]

WEIGHTS = ("tied", "learned")
MESSAGE_NORMS = ("batch", "none")

# parameter-free (or per-channel) point-wise modules that may follow a stage's linear layer
_POINTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.modules.batchnorm._BatchNorm,
)


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules a (nested) ``nn.Sequential`` runs in order; any other module is a leaf."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def stage_plan(stage: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[str, nn.Module | None]:
    """How a stage's transposed map is made: ``("tied", conv_or_linear)``, ``("switches", maxpool)`` or
    ``("learned", None)``.

    Example:
        >>> stage_plan(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), (3, 8, 8), (8, 6, 6))[0]
        'tied'
        >>> stage_plan(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)), (3, 8, 8), (8, 4, 4))[0]
        'learned'
    """
    leaves = _leaves(stage)
    if len(leaves) >= 1 and type(leaves[0]) is nn.MaxPool2d and len(in_shape) == 3 and len(out_shape) == 3:
        if all(isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d)) for m in leaves[1:]):
            return "switches", leaves[0]
        return "learned", None
    flatten = bool(leaves) and isinstance(leaves[0], nn.Flatten)
    rest = leaves[1:] if flatten else leaves
    if not rest or not all(isinstance(m, _POINTWISE) for m in rest[1:]):
        return "learned", None
    op = rest[0]  # exact types: a subclass (a CoordConv, say) may change what its weight sees
    if type(op) is nn.Conv2d and not flatten and len(in_shape) == 3 and len(out_shape) == 3:
        padding_ok = not isinstance(op.padding, str) or op.padding == "valid"
        if op.padding_mode == "zeros" and padding_ok:
            return "tied", op
    if type(op) is nn.Linear and len(out_shape) == 1:
        if (flatten and op.in_features == math.prod(in_shape)) or (not flatten and len(in_shape) == 1):
            return "tied", op
    return "learned", None


def _conv_transpose(z: Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> Tensor:
    """``W^T z`` for a Conv2d, with the conv's own weight, sized exactly ``size`` (H, W) of the conv's input."""
    pad = (0, 0) if isinstance(conv.padding, str) else conv.padding
    opad = []
    for d in range(2):
        full = (z.shape[2 + d] - 1) * conv.stride[d] - 2 * pad[d] + conv.dilation[d] * (conv.kernel_size[d] - 1) + 1
        opad.append(size[d] - full)
    return F.conv_transpose2d(z, conv.weight, None, conv.stride, pad, tuple(opad), conv.groups, conv.dilation)


def _unpool(m: Tensor, pool: nn.MaxPool2d, pool_input: Tensor) -> Tensor:
    """The transpose of max-pooling at the switches of ``pool_input``: each output value goes back to its arg-max."""
    _, idx = F.max_pool2d(
        pool_input, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, return_indices=True
    )
    b, c, h, w = pool_input.shape
    out = m.new_zeros(b, c, h * w).scatter_add_(2, idx.flatten(2), m.flatten(2))
    return out.view(b, c, h, w)


def _learned_geometry(source: int, target: int) -> tuple[int, int, int]:
    """(stride, kernel, padding) of a transposed convolution from size ``source`` to exactly ``target``."""
    if target % source == 0:
        s = target // source
        return s, s + 2, 1
    s, k = deconv_geometry(source, target)
    return s, k, 0


class _LearnedTranspose(nn.Module):
    """A learned top-down map from a stage's output shape to its input shape (the untied fallback)."""

    def __init__(self, source: tuple[int, ...], target: tuple[int, ...]) -> None:
        super().__init__()
        self.source, self.target = tuple(source), tuple(target)
        if len(target) == 1:
            self.op: nn.Module = nn.Linear(math.prod(source), target[0], bias=False)
        elif len(target) == 3:
            hs, ws = (source[1], source[2]) if len(source) == 3 else (1, 1)
            (sh, kh, ph), (sw, kw, pw) = _learned_geometry(hs, target[1]), _learned_geometry(ws, target[2])
            self.op = nn.ConvTranspose2d(source[0], target[0], (kh, kw), (sh, sw), (ph, pw), bias=False)
        else:
            raise ValueError(f"rectified feedback supports (C,) and (C, H, W) stage inputs, got {target}")

    def forward(self, z: Tensor) -> Tensor:
        if len(self.target) == 1:
            return self.op(z.flatten(1))
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.op(z)


class StepBatchNorm(nn.Module):
    """Batch normalisation with shared affine parameters and running statistics per step (recurrent batch norm).

    The messages of different steps have different distributions; one set of running statistics for all of them
    serves none in eval mode (a LeNet-5 trained with 4 steps and shared statistics fell to chance in eval mode while
    its accuracy with batch statistics rose with the steps). Step ``t`` (1-based) uses row ``min(t, steps) - 1`` of ``running_mean`` and
    ``running_var`` (steps beyond ``steps`` share the last row), as :class:`~feedback.core.FeedbackNet` does for the
    backbone's batch-norm layers (Cooijmans et al. 2017).

    Shapes: ``(B, C)`` or ``(B, C, H, W)`` and a step ``t >= 1`` -> the same shape.

    Example:
        >>> bn = StepBatchNorm(3, steps=4)
        >>> _ = bn(torch.randn(8, 3, 2, 2) + 5, 2)
        >>> bool(bn.running_mean[1].gt(0.4).all()), bool(bn.running_mean[0].eq(0).all())
        (True, True)
    """

    def __init__(self, num_features: int, *, steps: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.steps, self.momentum, self.eps = steps, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(steps, num_features))
        self.register_buffer("running_var", torch.ones(steps, num_features))

    def forward(self, x: Tensor, t: int) -> Tensor:
        k = min(max(t, 1), self.steps) - 1
        return F.batch_norm(
            x, self.running_mean[k], self.running_var[k], self.weight, self.bias, self.training, self.momentum, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, steps={self.steps}, momentum={self.momentum}, eps={self.eps}"


@register_feedback("rectified")
class RectifiedFeedback(Feedback):
    """Hierarchical rectified Gaussian feedback: ``h_{i-1} <- max(0, h_{i-1} + BN(W_i^T z_i))``, un-pooled at switches.

    Args:
        shapes: the backbone's stage shapes.
        weights: ``"tied"`` (each stage's own conv/linear weight, transposed, where the stage structure allows;
            needs the backbone: ``backbone=`` or :meth:`bind`) or ``"learned"`` (learned transposed maps everywhere).
        message_norm: ``"batch"`` (BatchNorm on every message, the official code) or ``"none"`` (the bare QP).
        norm_steps: steps with their own running statistics in the message BatchNorm (later steps share the last).
        backbone: the Staged backbone to tie to (same as calling :meth:`bind`).

    Attributes:
        plan: per stage, ``"tied"``, ``"switches"``, ``"learned"`` or ``"clamped"`` (stage 0 and any stage whose
            message would only reach the clamped input); ``None`` until bound when ``weights="tied"``.
    """

    def __init__(
        self,
        *,
        shapes: StageShapes,
        weights: str = "tied",
        message_norm: str = "batch",
        norm_steps: int = 16,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__(shapes=shapes)
        if weights not in WEIGHTS:
            raise ValueError(f"unknown weights '{weights}'; choose from: {', '.join(WEIGHTS)}")
        if message_norm not in MESSAGE_NORMS:
            raise ValueError(f"unknown message_norm '{message_norm}'; choose from: {', '.join(MESSAGE_NORMS)}")
        if shapes.num_stages < 2:
            raise ValueError(f"rectified feedback needs at least 2 stages, got {shapes.num_stages}")
        for s in shapes.inputs + shapes.outputs:
            if len(s) not in (1, 3):
                raise ValueError(f"rectified feedback supports (C,) and (C, H, W) stage shapes, got {s}")
        self.weights = weights
        self.message_norm = message_norm
        if not isinstance(norm_steps, int) or norm_steps < 1:
            raise ValueError(f"norm_steps must be an integer >= 1, got {norm_steps!r}")
        self.norm_steps = norm_steps
        self.learned = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        self.plan: tuple[str, ...] | None = None
        self._ops: list[nn.Module | None] = []  # plain list: the backbone's modules are referenced, not registered
        self._dest: list[int | None] = []
        self._bound_ref: weakref.ref | None = None
        if weights == "learned":
            self._build(["learned"] * shapes.num_stages, [None] * shapes.num_stages)
        elif backbone is not None:
            self.bind(backbone)

    def bind(self, backbone: nn.Module) -> RectifiedFeedback:
        """Tie to ``backbone``'s stage weights (``weights="tied"``; a no-op for ``"learned"``). Returns ``self``."""
        if self.weights == "learned":
            return self
        if self.plan is not None:
            if self._bound_ref is not None and self._bound_ref() is backbone:
                return self  # FeedbackNet binds again what backbone= already bound
            raise RuntimeError("this rectified feedback is already bound to a backbone")
        self._bound_ref = weakref.ref(backbone)
        stages = getattr(backbone, "stages", None)
        if not isinstance(stages, nn.ModuleList) or len(stages) != self.shapes.num_stages:
            n = len(stages) if isinstance(stages, nn.ModuleList) else "no"
            raise ValueError(f"cannot bind: the backbone has {n} stages, the shapes {self.shapes.num_stages}")
        kinds, ops = [], []
        for stage, i_shape, o_shape in zip(stages, self.shapes.inputs, self.shapes.outputs):
            kind, op = stage_plan(stage, i_shape, o_shape)
            kinds.append(kind)
            ops.append(op)
        self._build(kinds, ops)
        return self

    def _build(self, kinds: list[str], ops: list[nn.Module | None]) -> None:
        """Delivery index of every message, learned maps and message norms."""
        dest: list[int | None] = []
        for i, kind in enumerate(kinds):
            if kind == "switches" or i == 0:
                dest.append(None)
                continue
            j = i
            while j - 1 >= 1 and kinds[j - 1] == "switches":
                j -= 1  # route the message down through the pooling stage below
            dest.append(j)
            if kind == "learned":
                self.learned[str(i)] = _LearnedTranspose(self.shapes.outputs[i], self.shapes.inputs[i])
            if self.message_norm == "batch":
                self.norms[str(i)] = StepBatchNorm(self.shapes.inputs[i][0], steps=self.norm_steps)
        self._ops, self._dest = ops, dest
        self.plan = tuple("clamped" if (d is None and k != "switches") else k for k, d in zip(kinds, dest))

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        return h if topdown is None else F.relu(h + topdown)

    def init_state(self, x: Tensor) -> Any:
        return None

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        if self.plan is None:
            raise RuntimeError(
                "rectified feedback with weights='tied' is not bound to a backbone: attach it to a FeedbackNet "
                "(which binds it), pass backbone= or call bind(backbone), or use weights='learned'"
            )
        n = len(feats)
        t = 1 if state is None else state["step"] + 1  # the step that will use these messages
        prev: list[Tensor | None] = [None] * n if state is None else state["topdown"]
        topdown: list[Tensor | None] = [None] * n
        for i, d in enumerate(self._dest):
            if d is None:
                continue
            in_shape = self.shapes.inputs[i]
            if self.plan[i] == "learned":
                m = self.learned[str(i)](feats[i])
            elif isinstance(self._ops[i], nn.Conv2d):
                m = _conv_transpose(feats[i], self._ops[i], in_shape[1:])
            else:
                m = F.linear(feats[i].flatten(1), self._ops[i].weight.t())
            m = m.reshape(m.shape[0], *in_shape)
            if self.message_norm == "batch":
                m = self.norms[str(i)](m, t)
            for j in range(i - 1, d - 1, -1):  # un-pool through the pooling stages j = i-1 .. d
                pool_input = self.combine(j, feats[j - 1], prev[j])  # stage j's actual input at this step
                m = _unpool(m, self._ops[j], pool_input)
            topdown[d] = m
        return topdown, {"step": t, "topdown": topdown}, {}

    def extra_repr(self) -> str:
        return f"weights={self.weights}, message_norm={self.message_norm}, plan={self.plan}"
