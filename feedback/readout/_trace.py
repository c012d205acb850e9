"""Readouts inside a forward pass: record one step of a :class:`~feedback.core.FeedbackNet`, replay it under rules.

A feedback kind sees only what ``FeedbackNet`` hands it (``combine(i, h, topdown)`` before every stage,
``forward(feats, logits, state)`` after the head), never the backbone's modules, so it cannot install hooks or
re-run layers. To compute a top-down readout of the step it has just watched (excitation backprop or selective
tuning of the predicted class, down to every stage input), the kind records the step:

1. ``combine(0, ...)`` starts a :class:`Trace` and returns the stage input as a :class:`TracedTensor`, a
   ``torch.Tensor`` subclass whose ``__torch_function__`` runs every op normally (the values, dtypes and the
   autograd graph of the real forward are unchanged) and appends it to the trace as a node ``(func, args,
   kwargs)``, with traced arguments replaced by references to the nodes that produced them. Outputs are traced
   too, so the record follows the data through the stages and the head to the logits. ``combine(i, ...)`` marks
   the input of stage ``i`` as a tap.
2. ``forward(feats, logits, state)`` calls :func:`replay`: the recorded ops that lead to the logits are executed
   again from a detached copy of the stage-0 input, inside :class:`~feedback.readout._rules.RuleMode`, in float32
   without autocast, with the model's parameters as constants; one ``autograd.grad`` from the logits (seeded with
   the one-hot of the predicted class) yields the signal at every tapped stage input. The trace is then closed:
   later ops on its tensors (the loss, metrics) are neither recorded nor traced.

Guarantees: no global state (the record lives on the step's tensors and dies with them), no hooks (nothing is
registered on any module), and it works in train mode: batch norm is replayed with the arguments it was called
with (the step's own running statistics in eval mode, the per-step statistics of ``FeedbackNet`` included) and,
in train mode, with batch statistics and no update of the running statistics (the replay never changes a buffer).
Deviation: dropout is replayed with a fresh mask (its rule passes the signal through unchanged), so with active
dropout the replayed values differ from the recorded step's.

The readout signal is detached: the top-down maps are a routing signal, not differentiated through.

Example:
    >>> import torch
    >>> from feedback.readout._rules import Rules
    >>> lin = torch.nn.Linear(3, 2)
    >>> trace = Trace()
    >>> x = trace.input(torch.rand(4, 3), tap=0)
    >>> logits = torch.relu(lin(x))
    >>> signals = replay(logits, Rules("excitation"), target=torch.zeros(4, dtype=torch.long))
    >>> sorted(signals), signals[0].shape, trace.closed
    ([0], torch.Size([4, 3]), True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from ._rules import Probe, RuleMode, Rules, Tap, mark_activation

__all__ = ["Trace", "TracedTensor", "replay", "trace_of"]


class _Ref:
    __slots__ = ("node", "key")

    def __init__(self, node: _Node, key: Any) -> None:
        self.node, self.key = node, key


class _Node:
    __slots__ = ("func", "args", "kwargs", "kind", "value", "tap")

    def __init__(self, func, args, kwargs, kind="op", value=None, tap=None) -> None:
        self.func, self.args, self.kwargs, self.kind, self.value, self.tap = func, args, kwargs, kind, value, tap


class Trace:
    """The record of one forward step: nodes in execution order, tapped stage inputs, open or closed."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.closed = False

    def input(self, h: Tensor, *, tap: int) -> TracedTensor:
        """Start the record at ``h`` (a detached copy is kept for the replay) and tap it as stage ``tap``'s input."""
        with torch._C.DisableTorchFunctionSubclass():
            root = _Node(None, (), {}, kind="input", value=h.detach().clone())
            self.nodes.append(root)
        return self._tap(h, _Ref(root, 0), tap)

    def tap(self, h: Tensor, *, tap: int) -> TracedTensor:
        """Mark ``h`` (traced by this trace, or not: then it becomes a new root) as stage ``tap``'s input."""
        ref = getattr(h, "_fb_ref", None) if isinstance(h, TracedTensor) else None
        if ref is None or getattr(h, "_fb_trace", None) is not self:
            return self.input(h, tap=tap)
        return self._tap(h, ref, tap)

    def _tap(self, h: Tensor, parent: _Ref, tap: int) -> TracedTensor:
        with torch._C.DisableTorchFunctionSubclass():
            node = _Node(None, (parent,), {}, kind="tap", tap=tap)
            self.nodes.append(node)
            out = h.view_as(h).as_subclass(TracedTensor)  # a new object aliasing h, on the real autograd graph
        out._fb_trace, out._fb_ref = self, _Ref(node, 0)
        return out

    def close(self) -> None:
        self.closed = True
        self.nodes = []


def trace_of(t: Any) -> Trace | None:
    """The open trace that recorded ``t``, if any."""
    tr = getattr(t, "_fb_trace", None) if isinstance(t, TracedTensor) else None
    return tr if tr is not None and not tr.closed else None


class TracedTensor(torch.Tensor):
    """A tensor whose ops are recorded in its :class:`Trace` (the values and autograd graph are the ordinary ones)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            leaves, spec = tree_flatten((args, kwargs))
            traces = {id(tr): tr for t in leaves if (tr := trace_of(t)) is not None}
            versions = {i: t._version for i, t in enumerate(leaves) if isinstance(t, TracedTensor)}
            out = func(*args, **kwargs)
            out_leaves, out_spec = tree_flatten(out)
            if len(traces) != 1 or not any(isinstance(o, Tensor) for o in out_leaves):
                return out  # nothing to record (or tensors of two steps mixed): plain result
            (trace,) = traces.values()
            mutated = [i for i, v in versions.items() if leaves[i]._version != v]
            if not mutated and all(any(o is t for t in leaves) for o in out_leaves if isinstance(o, Tensor)):
                return out  # returned an argument untouched (e.g. requires_grad_): no new value
            rec = [t._fb_ref if isinstance(t, TracedTensor) and trace_of(t) is trace else t for t in leaves]
            rargs, rkwargs = tree_unflatten(rec, spec)
            node = _Node(func, rargs, rkwargs)
            trace.nodes.append(node)
            for i in mutated:
                leaves[i]._fb_ref = _Ref(node, ("arg", i))
            wrapped = []
            for k, o in enumerate(out_leaves):
                if isinstance(o, Tensor) and not any(o is t for t in leaves):
                    o = o.as_subclass(TracedTensor)
                    o._fb_trace, o._fb_ref = trace, _Ref(node, k)
                wrapped.append(o)
            return tree_unflatten(wrapped, out_spec)


def _ancestors(ref: _Ref) -> set[int]:
    seen: set[int] = set()
    stack = [ref.node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        for leaf in tree_flatten((n.args, n.kwargs))[0]:
            if isinstance(leaf, _Ref):
                stack.append(leaf.node)
    return seen


def replay(logits: Tensor, rules: Rules, *, target: Tensor) -> dict[int, Tensor]:
    """Replay the step that produced ``logits`` under ``rules``; the signal at every tapped stage input.

    Args:
        logits: (B, K) traced logits of the step (the trace must be open).
        rules: the propagation rules (``Rules("excitation")``, ``Rules("wta", ...)``).
        target: (B,) int64 classes whose one-hot seeds the top-down pass.

    Returns: ``{stage index: signal}`` (float32, detached, the shape of that stage's input). Closes the trace.
    """
    trace = trace_of(logits)
    if trace is None:
        raise RuntimeError("this readout reads the step recorded since combine(0, ...): the logits are not traced "
                           "(call the feedback kind through FeedbackNet)")
    try:
        with torch._C.DisableTorchFunctionSubclass():
            needed = _ancestors(logits._fb_ref)
            env: dict[tuple[int, Any], Tensor] = {}
            probes: dict[int, Probe] = {}
            device = logits.device
            anchor = torch.zeros((), device=device, requires_grad=True)

            def resolve(v):
                if isinstance(v, _Ref):
                    return env[(id(v.node), v.key)]
                return v.detach() if isinstance(v, Tensor) else v  # a constant (parameter, buffer, mask)

            with torch.enable_grad(), torch.autocast(device.type, enabled=False):
                with RuleMode(rules):
                    for node in trace.nodes:
                        if id(node) not in needed:
                            continue
                        if node.kind == "input":
                            v = (node.value.float() if node.value.is_floating_point() else node.value).clone()
                            env[(id(node), 0)] = mark_activation(v)
                            continue
                        if node.kind == "tap":
                            probe = probes.setdefault(node.tap, Probe(f"stage {node.tap} input"))
                            env[(id(node), 0)] = Tap.apply(resolve(node.args[0]), anchor, probe)
                            continue
                        rargs = tree_map(resolve, node.args, is_leaf=lambda v: isinstance(v, _Ref))
                        rkwargs = tree_map(resolve, node.kwargs, is_leaf=lambda v: isinstance(v, _Ref))
                        out = node.func(*rargs, **rkwargs)
                        for k, o in enumerate(tree_flatten(out)[0]):
                            env[(id(node), k)] = o
                        arg_leaves = tree_flatten((rargs, rkwargs))[0]
                        for i, a in enumerate(arg_leaves):
                            env[(id(node), ("arg", i))] = a
                top = env[(id(logits._fb_ref.node), logits._fb_ref.key)]
                seed = nn.functional.one_hot(target, top.shape[-1]).to(top.dtype)
                if top.requires_grad:
                    torch.autograd.grad(top, anchor, seed, allow_unused=True)
    finally:
        trace.close()
    return {i: p.signal for i, p in probes.items() if p.signal is not None}
