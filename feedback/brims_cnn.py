r"""``brims``: Bidirectional Recurrent Independent Mechanisms as a feedback kind for Staged (CNN) backbones.

Source. Mittal, Lamb, Goyal, Voleti, Shanahan, Lajoie, Mozer, Bengio 2020, "Learning to Combine Top-Down and
Bottom-Up Signals in Recurrent Neural Networks with Attention over Modules" (BRIMs), ICML, arXiv 2006.16981; built on
the RIMs of Goyal et al. 2021, "Recurrent Independent Mechanisms", ICLR, arXiv 1909.10893. Re-implemented from the
equations in ``reference/methods.md`` section 5 (the reference code has no licence and was not used).

BRIMs in one paragraph: a layer is a set of ``K`` modules; each module attends over the rows ``[null, bottom-up,
top-down]`` (the null row is zeros), the ``k`` modules that pay the *least* attention to the null row are active and
update from what they read, the others keep their state. So every module decides, per sample and step, whether to
listen to the input, to the layer above at the previous step, or to nothing.

As a feedback kind. The input of stage ``i`` (``C_i`` channels; ``D`` for tokens) is split along channels into
``K_i`` module groups of ``c = C_i / K_i`` channels (``K_i`` is the largest divisor of ``C_i`` not above
``num_modules``). With ``x_{i,k}`` the bottom-up input of group ``k`` at step ``t`` and
``r_i = R_i(y_{i+1}^{(t-1)})`` the top-down row (stage ``i + 1``'s output at the previous step, resampled to stage
``i``'s input shape by :class:`~feedback._attention.Resample`: a 1x1 projection and a change of resolution):

.. math::

    u_k = \mathrm{pool}(x_{i,k}),\quad d_k = \mathrm{pool}(r_{i,k}),\quad q_k = W^q_k u_k,\quad
    s_k = \big[\,b_{k,\varnothing},\; q_k^\top W^k_k u_k / \sqrt{d_k} + b_{k,\uparrow},\;
    q_k^\top W^k_k d_k / \sqrt{d_k} + b_{k,\downarrow}\big],\quad a_k = \mathrm{softmax}(s_k),

    A = \text{the } k_i \text{ groups with the smallest } a_{k,\varnothing} \text{ (per sample)},\qquad
    \tilde x_{i,k} = \begin{cases} a_{k,\uparrow}\, x_{i,k} + a_{k,\downarrow}\, r_{i,k} & k \in A \\
    x_{i,k} & k \notin A \end{cases}

(``pool`` averages over positions; the null row's key and value are zeros, so its score is its bias alone and it
contributes nothing to the read). Ranking uses the *soft-maxed* null attention, as the BRIMs/RIMs code does (the
reference notes: rank after the softmax). ``W^q_k, W^k_k`` are per-group ``(c, d)`` matrices
(:class:`~feedback._attention.GroupLinear`), ``b`` a learned ``(K_i, 3)`` row bias initialised to
``(0, bottom_up_bias, 0)`` so that, at initialisation, active groups mostly read the bottom-up row.
Inactive groups pass the bottom-up input unchanged, and ``steps=1`` never calls the kind: it is the backbone.
The top stage receives no top-down row (nothing is above it).

Deviations from BRIMs: there is no recurrent cell per module (the stage's own layers are the modules' dynamics,
shared across groups and run on the combined input) and so no communication attention among modules (the stage's
convolution mixes the groups); the query comes from the group's current bottom-up input (BRIMs: the module's state at
``t - 1``); one attention head; a module is a channel group of a whole stage input, and the selection is per sample
(not per position).

Parameters per receiving stage ``i``: ``C_{i+1} C_i + C_i`` (resampling) ``+ 2 K_i (c d + d)`` (queries, keys)
``+ 3 K_i``. Compute per step: the 1x1 projection at stage ``i + 1``'s resolution and element-wise work.

Shapes: ``feats[j]`` (B, C_j, H_j, W_j), (B, N, D) or (B, C_j) -> ``topdown[i]`` with the shape of stage ``i``'s
input for ``i < L - 1``; ``topdown[L - 1]`` is ``None``.

Example:
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Toy(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.input_size = nn.Conv2d(1, 8, 3, padding=1), (1, 16, 16)
    ...         self.stages = nn.ModuleList([nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1)])
    ...         self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    >>> net = FeedbackNet(Toy(), "brims", steps=3, feedback_kwargs={"num_modules": 4, "top_k": 2})
    >>> out = net(torch.randn(2, 1, 16, 16))
    >>> out.logits.shape
    torch.Size([2, 10])
    >>> h, r = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    >>> mixed, attn, active = net.feedback.attend(0, h, r)
    >>> attn.shape, active.sum(1).tolist()  # (B, K, [null, bottom-up, top-down]); 2 of 4 groups active per sample
    (torch.Size([2, 4, 3]), [2, 2])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._attention import GroupLinear, Resample, channels, layout, pool
from .core import Feedback, StageShapes, register_feedback

__all__ = ["BRIMsFeedback", "module_groups"]


def module_groups(c: int, num_modules: int) -> int:
    """The largest divisor of ``c`` not above ``num_modules`` (so ``c`` channels split evenly)."""
    return max(k for k in range(1, min(c, num_modules) + 1) if c % k == 0)


class _StageRouter(nn.Module):
    """The module groups of one stage input: null / bottom-up / top-down attention and top-k selection."""

    def __init__(self, shape: tuple[int, ...], groups: int, top_k: int, key_dim: int, bottom_up_bias: float) -> None:
        super().__init__()
        self.shape, self.groups, self.top_k, self.key_dim = shape, groups, top_k, key_dim
        self.width = channels(shape) // groups
        self.query = GroupLinear(groups, self.width, key_dim)
        self.key = GroupLinear(groups, self.width, key_dim)
        self.row_bias = nn.Parameter(torch.tensor([0.0, bottom_up_bias, 0.0]).repeat(groups, 1))

    def _grouped_summary(self, x: Tensor) -> Tensor:
        return pool(x).reshape(x.shape[0], self.groups, self.width)  # (B, K, c)

    def _per_channel(self, v: Tensor, like: Tensor) -> Tensor:
        """(B, K) -> broadcastable against ``like`` on its channel axis."""
        v = v.repeat_interleave(self.width, dim=1)  # (B, C)
        if like.dim() == 4:
            return v[:, :, None, None]
        if like.dim() == 3:
            return v[:, None, :]
        return v

    def forward(self, x: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u, d = self._grouped_summary(x), self._grouped_summary(r)
        q = self.query(u)
        scale = 1.0 / math.sqrt(self.key_dim)
        s_up = (q * self.key(u)).sum(-1) * scale
        s_down = (q * self.key(d)).sum(-1) * scale
        s = torch.stack([torch.zeros_like(s_up), s_up, s_down], -1) + self.row_bias  # (B, K, 3)
        attn = torch.softmax(s.float(), -1)
        keep = torch.topk(-attn[..., 0], self.top_k, dim=1).indices  # least attention to the null row
        active = torch.zeros_like(attn[..., 0], dtype=torch.bool).scatter(1, keep, True)
        a_up = self._per_channel(attn[..., 1], x).to(x.dtype)
        a_down = self._per_channel(attn[..., 2], x).to(x.dtype)
        mixed = torch.where(self._per_channel(active, x), a_up * x + a_down * r, x)
        return mixed, attn, active


@register_feedback("brims")
class BRIMsFeedback(Feedback):
    """BRIMs-style attention over modules with a null row and top-k selection, per stage input.

    Args:
        shapes: the backbone's stage shapes (at least 2 stages).
        num_modules: module groups per stage input (at most; the largest divisor of its channels not above it).
        top_k: active groups per sample (capped at the stage's number of groups).
        key_dim: width ``d`` of queries and keys.
        bottom_up_bias: initial score bias of the bottom-up row (null and top-down rows start at 0).

    Attributes:
        topdown_maps: ``topdown_maps[i]`` resamples stage ``i + 1``'s output to stage ``i``'s input shape.
        routers: ``routers[i]`` holds stage ``i``'s queries, keys and row biases.
    """

    def __init__(
        self,
        *,
        shapes: StageShapes,
        num_modules: int = 4,
        top_k: int = 2,
        key_dim: int = 16,
        bottom_up_bias: float = 2.0,
    ) -> None:
        super().__init__(shapes=shapes)
        n = shapes.num_stages
        if n < 2:
            raise ValueError("brims feedback needs at least 2 stages (a stage above another to send a top-down row)")
        for name, v in (("num_modules", num_modules), ("top_k", top_k), ("key_dim", key_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if top_k > num_modules:
            raise ValueError(f"top_k={top_k} exceeds num_modules={num_modules}")
        for s in shapes.inputs + shapes.outputs:
            layout(s)
        self.num_modules, self.top_k = num_modules, top_k
        self.topdown_maps = nn.ModuleList(Resample(shapes.outputs[i + 1], shapes.inputs[i]) for i in range(n - 1))
        routers = []
        for i in range(n - 1):
            k = module_groups(channels(shapes.inputs[i]), num_modules)
            routers.append(_StageRouter(shapes.inputs[i], k, min(top_k, k), key_dim, bottom_up_bias))
        self.routers = nn.ModuleList(routers)

    def attend(self, i: int, h: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Stage ``i``'s combined input, attention ``(B, K_i, 3)`` over [null, bottom-up, top-down] and the
        boolean ``(B, K_i)`` mask of active groups."""
        return self.routers[i](h, r)

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        return self.attend(i, h, topdown)[0]

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        topdown: list[Tensor | None] = [m(feats[i + 1]) for i, m in enumerate(self.topdown_maps)]
        return topdown + [None], state, {}
