"""The Staged contract, the feedback-kind registry and `FeedbackNet`, the T-step bottom-up/top-down loop.

A *Staged* model is any ``nn.Module`` with the attributes ``stem``, ``stages`` (an ``nn.ModuleList``) and ``head``
such that ``head(stages[-1](...stages[0](stem(x))))`` is the model's forward. This package never imports the
project's ``baselines``: any model with those attributes qualifies (a structural protocol, not a base class).

A *feedback kind* (:class:`Feedback`) turns what the network computed at step ``t`` (the stage outputs
``feats[i]``, the logits and its own state) into a top-down signal for each stage *input* at step ``t + 1``, and
says how the signal combines with the bottom-up input. :class:`FeedbackNet` runs the loop::

    state = feedback.init_state(x)
    s = stem(x)                                            # the stem sees only x, so it runs once
    for t in range(T):
        h = s
        for i, stage in enumerate(stages):
            h = stage(feedback.combine(i, h, topdown[i]))  # topdown[i] is None at t = 0
            feats[i] = h
        logits[t] = head(h)
        if t < T - 1:
            topdown, state, aux = feedback(feats, logits[t], state)

so ``steps=1`` never calls the feedback kind and is the backbone exactly, for every kind.

Batch normalisation in the unrolled loop: the input distribution of a stage changes from step to step once
feedback arrives, so one set of running statistics serves no step well (a network trained with feedback and
evaluated in eval mode then fails at every step). By default (``norm_stats="per_step"``) every batch-norm layer of
the stages and the head keeps separate running statistics for each step ``t >= 1``, as in recurrent batch
normalisation (Cooijmans et al. 2017, "Recurrent Batch Normalization", ICLR; Liao & Poggio 2016); the affine
parameters are shared. Step 0 uses the backbone's own buffers, so ``steps=1`` and the backbone's statistics are
untouched by the extra steps. ``norm_stats="shared"`` updates the backbone's buffers at every step instead.

Example:
    >>> import torch, torch.nn as nn
    >>> class Tiny(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem = nn.Conv2d(1, 4, 3, padding=1)
    ...         self.stages = nn.ModuleList([nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)])
    ...         self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    ...         self.input_size = (1, 16, 16)
    >>> net = FeedbackNet(Tiny(), "deconv", steps=3)
    >>> out = net(torch.randn(2, 1, 16, 16))
    >>> out.logits.shape, len(out.per_step)
    (torch.Size([2, 10]), 3)
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "STAGED_ATTRS",
    "Feedback",
    "FeedbackNet",
    "FeedbackOutput",
    "StageShapes",
    "check_staged",
    "create_feedback",
    "feedback_class",
    "is_staged",
    "list_feedback",
    "probe_shapes",
    "register_feedback",
    "staged_forward",
]

STAGED_ATTRS = ("stem", "stages", "head")
READOUTS = ("last", "mean")
NORM_STATS = ("per_step", "shared")


# --------------------------------------------------------------------------------------------------- staged


def is_staged(model: nn.Module) -> bool:
    """True if ``model`` has ``stem``, ``stages`` (an ``nn.ModuleList``) and ``head``."""
    return all(hasattr(model, a) for a in STAGED_ATTRS) and isinstance(model.stages, nn.ModuleList)


def check_staged(model: nn.Module) -> None:
    """Raise ``TypeError`` naming what is missing if ``model`` does not honour the Staged contract."""
    missing = [a for a in STAGED_ATTRS if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} is not Staged: missing attribute(s) {', '.join(missing)} "
            "(a Staged model has stem, stages (nn.ModuleList) and head; see DESIGN.md section 3.1)"
        )
    if not isinstance(model.stages, nn.ModuleList):
        raise TypeError(f"{type(model).__name__}.stages must be an nn.ModuleList, got {type(model.stages).__name__}")


def staged_forward(model: nn.Module, x: Tensor) -> Tensor:
    """``head(stages[-1](...stages[0](stem(x))))``: the model's forward as the Staged contract defines it."""
    h = model.stem(x)
    for stage in model.stages:
        h = stage(h)
    return model.head(h)


@dataclass(frozen=True)
class StageShapes:
    """Per-sample shapes (no batch dimension) of every stage input and output, and the number of classes.

    ``inputs[i]`` is what stage ``i`` receives (the stem output for ``i = 0``); ``outputs[i]`` is what it returns.
    """

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    num_classes: int

    @property
    def num_stages(self) -> int:
        return len(self.outputs)


@torch.no_grad()
def probe_shapes(backbone: nn.Module, input_size: Sequence[int]) -> StageShapes:
    """Run one zero image of ``input_size`` (C, H, W) through a Staged backbone and record the stage shapes.

    The probe runs in eval mode (batch-norm statistics are not touched) and restores the training flag.
    """
    check_staged(backbone)
    was_training = backbone.training
    backbone.eval()
    try:
        p = next(backbone.parameters(), None)
        x = torch.zeros(1, *input_size, device=p.device if p is not None else None)
        h = backbone.stem(x)
        ins, outs = [], []
        for stage in backbone.stages:
            ins.append(tuple(h.shape[1:]))
            h = stage(h)
            outs.append(tuple(h.shape[1:]))
        logits = backbone.head(h)
    finally:
        backbone.train(was_training)
    return StageShapes(inputs=tuple(ins), outputs=tuple(outs), num_classes=int(logits.shape[-1]))


# --------------------------------------------------------------------------------------------------- registry

_FEEDBACK: dict[str, type[Feedback]] = {}


def register_feedback(name: str) -> Callable[[type[Feedback]], type[Feedback]]:
    """Class decorator registering a feedback kind under ``name``; a duplicate name raises ``ValueError``."""

    def deco(cls: type[Feedback]) -> type[Feedback]:
        if name in _FEEDBACK:
            raise ValueError(f"feedback kind '{name}' is already registered (by {_FEEDBACK[name].__qualname__})")
        if not (isinstance(cls, type) and issubclass(cls, Feedback)):
            raise TypeError(f"register_feedback('{name}') expects a Feedback subclass, got {cls!r}")
        cls.kind = name
        _FEEDBACK[name] = cls
        return cls

    return deco


def list_feedback(pattern: str = "*") -> list[str]:
    """Registered feedback kinds whose name matches the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _FEEDBACK if fnmatch.fnmatch(n, pattern))


def feedback_class(name: str) -> type[Feedback]:
    """The class registered as ``name``; ``ValueError`` naming the valid choices otherwise."""
    if name not in _FEEDBACK:
        close = difflib.get_close_matches(name, list(_FEEDBACK), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown feedback kind '{name}'{hint}; choose from: {', '.join(list_feedback())}")
    return _FEEDBACK[name]


def create_feedback(name: str, *, shapes: StageShapes, **kwargs: Any) -> Feedback:
    """Build the feedback kind ``name`` for a backbone with the given stage ``shapes``."""
    return feedback_class(name)(shapes=shapes, **kwargs)


# --------------------------------------------------------------------------------------------------- kinds


class Feedback(nn.Module):
    """Base class of feedback kinds.

    Subclasses implement :meth:`forward` and may override :meth:`init_state` and :meth:`combine`.
    State is passed in and returned, never stored on the module, so nothing leaks between batches.

    Args:
        shapes: the backbone's stage shapes (see :func:`probe_shapes`).
    """

    kind: str = "?"

    def __init__(self, *, shapes: StageShapes) -> None:
        super().__init__()
        self.shapes = shapes

    def bind(self, backbone: nn.Module) -> None:
        """Called by :class:`FeedbackNet` with the backbone the kind is attached to (default: nothing to do).

        Kinds whose top-down pass reuses the backbone's own modules (tied weights: ``generative``, ``rectified``)
        build their plan here; they must not register the backbone as a submodule (its parameters are the
        backbone's, not the kind's).
        """
        return None

    def init_state(self, x: Tensor) -> Any:
        """The kind's state before step 0 (``None`` for stateless kinds)."""
        return None

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        """Combine the bottom-up input ``h`` of stage ``i`` with its top-down signal (default: addition)."""
        return h if topdown is None else h + topdown

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        """Map step ``t``'s stage outputs ``feats`` and ``logits`` to ``(topdown, state, aux_losses)``.

        ``topdown[i]`` has the shape of stage ``i``'s input (batch first) or is ``None`` (no signal).
        """
        raise NotImplementedError


@dataclass
class FeedbackOutput:
    """What :class:`FeedbackNet` returns.

    Attributes:
        logits: (B, K) the readout over steps ("last" or "mean" of ``per_step``).
        per_step: T tensors (B, K), the logits after each step.
        aux_losses: named scalar losses the feedback kind asks the trainer to add (summed over steps).
        state: the feedback kind's final state.
    """

    logits: Tensor
    per_step: list[Tensor]
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    state: Any = None


class _StepStats(nn.Module):
    """Running statistics of one batch-norm layer at one step."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())


def _stage_norms(backbone: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Batch-norm layers with running statistics in the stages and the head (the stem runs once)."""
    seen: set[int] = set()
    out = []
    for part in (backbone.stages, backbone.head):
        for m in part.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


class FeedbackNet(nn.Module):
    """A Staged backbone run for ``steps`` bottom-up passes, with top-down feedback between them.

    Args:
        backbone: any Staged model (``stem``, ``stages``, ``head``).
        feedback: a :class:`Feedback` module, or the registered name of a kind (then ``input_size`` or
            ``backbone.input_size`` is used to probe the stage shapes, and ``feedback_kwargs`` go to its constructor).
        steps: number of bottom-up passes T (>= 1). ``steps=1`` is the backbone exactly.
        readout: ``"last"`` (logits of the last step) or ``"mean"`` (average of the logits over steps, as CNN-F's
            ``run_average``).
        input_size: (C, H, W) used to probe the stage shapes when ``feedback`` is a name.
        feedback_kwargs: keyword arguments of the feedback kind.
        norm_stats: ``"per_step"`` (batch-norm running statistics per step, the default) or ``"shared"``.

    Shapes: x (B, C, H, W) -> FeedbackOutput with logits (B, K).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feedback: Feedback | str = "none",
        *,
        steps: int = 1,
        readout: str = "last",
        input_size: Sequence[int] | None = None,
        feedback_kwargs: dict[str, Any] | None = None,
        norm_stats: str = "per_step",
    ) -> None:
        super().__init__()
        check_staged(backbone)
        if norm_stats not in NORM_STATS:
            raise ValueError(f"unknown norm_stats '{norm_stats}'; choose from: {', '.join(NORM_STATS)}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout '{readout}'; choose from: {', '.join(READOUTS)}")
        if isinstance(feedback, str):
            size = input_size if input_size is not None else getattr(backbone, "input_size", None)
            if size is None:
                raise ValueError("pass input_size=(C, H, W): the backbone has no input_size attribute to probe shapes")
            feedback = create_feedback(feedback, shapes=probe_shapes(backbone, size), **(feedback_kwargs or {}))
        elif feedback_kwargs:
            raise ValueError("feedback_kwargs only apply when feedback is given by name")
        self.backbone = backbone
        self.feedback = feedback
        feedback.bind(backbone)
        self.steps = steps
        self.readout = readout
        self.norm_stats = norm_stats
        self._norms = _stage_norms(backbone) if norm_stats == "per_step" else []  # a plain list: not re-registered
        self.step_stats = nn.ModuleList(
            nn.ModuleList(_StepStats(bn) for bn in self._norms) for _ in range(steps - 1) if self._norms
        )

    @contextlib.contextmanager
    def _norm_step(self, t: int):
        """Point every stage batch-norm layer at its step-``t`` running statistics (step 0: its own)."""
        if t == 0 or not self._norms:
            yield
            return
        names = ("running_mean", "running_var", "num_batches_tracked")
        saved = [tuple(getattr(bn, n) for n in names) for bn in self._norms]
        try:
            for bn, stats in zip(self._norms, self.step_stats[t - 1]):
                for n in names:
                    setattr(bn, n, getattr(stats, n))
            yield
        finally:
            for bn, old in zip(self._norms, saved):
                for n, v in zip(names, old):
                    setattr(bn, n, v)

    def forward(self, x: Tensor) -> FeedbackOutput:
        bb, fb = self.backbone, self.feedback
        state = fb.init_state(x)
        stem_out = bb.stem(x)
        topdown: list[Tensor | None] = [None] * len(bb.stages)
        per_step: list[Tensor] = []
        aux_total: dict[str, Tensor] = {}
        for t in range(self.steps):
            h = stem_out
            feats = []
            with self._norm_step(t):
                for i, stage in enumerate(bb.stages):
                    h = stage(fb.combine(i, h, topdown[i]))
                    feats.append(h)
                logits = bb.head(h)
            per_step.append(logits)
            if t < self.steps - 1:
                topdown, state, aux = fb(feats, logits, state)
                for k, v in aux.items():
                    aux_total[k] = aux_total[k] + v if k in aux_total else v
        out = per_step[-1] if self.readout == "last" else torch.stack(per_step).mean(0)
        return FeedbackOutput(logits=out, per_step=per_step, aux_losses=aux_total, state=state)
