r"""``layer_attention``: every stage attends to the next stage, to itself and to the previous stage.

Motivation. The project notes (``reference/notes.txt``, next to the BRIMs entry) sketch the idea: "each layer passes
attention (1) to next layer (2) to itself (3) to previous layer". This kind is that idea for Staged backbones: at
step ``t + 1`` the input of stage ``i`` is a learned convex combination of three *routes*:

- ``prev``: the bottom-up input ``x_i^{(t+1)}`` (stage ``i - 1``'s output at this step; the stem's for ``i = 0``);
- ``self``: stage ``i``'s own output at the previous step, ``R^{self}_i(y_i^{(t)})``;
- ``next``: stage ``i + 1``'s output at the previous step (top-down), ``R^{next}_i(y_{i+1}^{(t)})``;

where ``R`` resamples a stage output to stage ``i``'s input shape (:class:`~feedback._attention.Resample`: a 1x1
projection, then average pooling or nearest upsampling). With ``v_r`` the route values,

.. math::

    \tilde x_i = \sum_{r \in \mathcal R_i} w_{i,r}\, v_r, \qquad
    w_{i,\cdot} = \mathrm{softmax}_{r \in \mathcal R_i}\big(\ell_{i,r}\big) \quad (\texttt{weights="stage"}),

    w_{i,r}(p) = \mathrm{softmax}_{r \in \mathcal R_i}\big(g_{i,r}^\top v_r(p) + \ell_{i,r}\big)
    \quad (\texttt{weights="spatial"}),

so the weights over the routes sum to 1 (per stage, or per position ``p`` for spatial attention: a 1x1 score map
per route). ``\mathcal R_i`` is the set of routes switched on (constructor ``routes``) that exist for stage ``i``:
the top stage has no ``next`` route. The route logits ``\ell`` start at 0 (equal weights). Switching ``prev`` off
leaves later steps without bottom-up drive (the image enters at step 0 only); a stage with no ``self`` or ``next``
route gets no signal. ``steps=1`` never calls the kind: it is the backbone.

Related work: attention over the layers of a network (e.g. Fang et al. 2023, "Cross-Layer Retrospective Retrieving
via Layer Attention", ICLR) and the gated top-down connections of Chung et al. 2015 ("Gated Feedback Recurrent
Neural Networks", ICML); neither is reproduced here: this is the notes' own idea.

Parameters: per stage and route ``self``/``next`` ``C_src C_i + C_i``; ``3`` route logits per stage; ``spatial``
adds ``C_i`` per route and stage.

Shapes: ``feats[j]`` (B, C_j, H_j, W_j), (B, N, D) or (B, C_j) -> ``topdown[i]`` of shape ``(B, R_i, *S_i)``: the
``self``/``next`` route values of stage ``i`` (in that order, those switched on) stacked on dim 1, ``S_i`` stage
``i``'s input shape; ``None`` where a stage has neither route.

Example:
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Toy(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.input_size = nn.Conv2d(1, 4, 3, padding=1), (1, 16, 16)
    ...         self.stages = nn.ModuleList([nn.Conv2d(4, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1)])
    ...         self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    >>> net = FeedbackNet(Toy(), "layer_attention", steps=3, feedback_kwargs={"routes": ("next", "prev")})
    >>> net(torch.randn(2, 1, 16, 16)).logits.shape
    torch.Size([2, 10])
    >>> net.feedback.stage_routes
    (('next', 'prev'), ())
    >>> net.feedback.route_weights(0).tolist()  # softmax over the routes on: equal at initialisation
    [0.5, 0.5]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ._attention import Resample, channels, layout
from .core import Feedback, StageShapes, register_feedback

__all__ = ["ROUTES", "WEIGHTS", "LayerAttentionFeedback"]

ROUTES = ("next", "self", "prev")
WEIGHTS = ("stage", "spatial")


@register_feedback("layer_attention")
class LayerAttentionFeedback(Feedback):
    """Learned weights over the routes next (top-down), self (recurrent) and prev (bottom-up) for each stage input.

    Args:
        shapes: the backbone's stage shapes.
        routes: the routes switched on, a subset of ``("next", "self", "prev")`` holding ``next`` or ``self``.
        weights: ``"stage"`` (a softmax over route logits per stage) or ``"spatial"`` (a softmax over per-position
            route scores from a 1x1 projection of each route's value plus the route logit).

    Attributes:
        stage_routes: per stage, the routes combined at its input (in ``ROUTES`` order).
        maps: ``maps["<route>_<i>"]`` resamples the route's source to stage ``i``'s input shape.
        logits: (L, 3) route logits in ``ROUTES`` order (unused entries stay 0).
        scores: with ``weights="spatial"``, ``scores["<route>_<i>"]`` the per-position score projection.
    """

    def __init__(self, *, shapes: StageShapes, routes: Sequence[str] = ROUTES, weights: str = "stage") -> None:
        super().__init__(shapes=shapes)
        routes = (routes,) if isinstance(routes, str) else tuple(routes)
        bad = [r for r in routes if r not in ROUTES]
        if bad or not routes:
            raise ValueError(f"unknown layer_attention route(s) {bad or '()'}; choose a subset of: {', '.join(ROUTES)}")
        if not {"next", "self"} & set(routes):
            raise ValueError("layer_attention needs route 'next' or 'self' (with 'prev' alone it is the backbone)")
        if weights not in WEIGHTS:
            raise ValueError(f"unknown layer_attention weights '{weights}'; choose from: {', '.join(WEIGHTS)}")
        for s in shapes.inputs + shapes.outputs:
            layout(s)
        self.routes = tuple(r for r in ROUTES if r in routes)
        self.weights = weights
        n = shapes.num_stages
        stage_routes, maps = [], {}
        for i in range(n):
            sources = {"self": i, "next": i + 1}
            on = [r for r in self.routes if r == "prev" or sources[r] < n]
            if not [r for r in on if r != "prev"]:
                on = []
            stage_routes.append(tuple(on))
            for r in on:
                if r != "prev":
                    maps[f"{r}_{i}"] = Resample(shapes.outputs[sources[r]], shapes.inputs[i])
        if not maps:
            raise ValueError(f"layer_attention routes {self.routes} give no stage a signal (the top stage has no 'next')")
        self.stage_routes = tuple(stage_routes)
        self.maps = nn.ModuleDict(maps)
        self.logits = nn.Parameter(torch.zeros(n, len(ROUTES)))
        self.scores = nn.ModuleDict(
            {
                f"{r}_{i}": nn.Linear(channels(shapes.inputs[i]), 1, bias=False)
                for i, on in enumerate(stage_routes)
                for r in on
                if weights == "spatial"
            }
        )

    def _logits(self, i: int) -> Tensor:
        return self.logits[i, [ROUTES.index(r) for r in self.stage_routes[i]]]

    def route_weights(self, i: int, values: Sequence[Tensor] | None = None) -> Tensor:
        """Stage ``i``'s weights over ``stage_routes[i]``: (R,) for ``"stage"``; for ``"spatial"`` the per-position
        weights (B, R, *positions) of the route ``values`` (as :meth:`combine` sees them). They sum to 1 over R."""
        logit = self._logits(i)
        if self.weights == "stage":
            return torch.softmax(logit, 0)
        s = []
        for r, v, b in zip(self.stage_routes[i], values, logit):
            w = self.scores[f"{r}_{i}"].weight[0]
            if v.dim() == 4:
                s.append(torch.einsum("bchw,c->bhw", v, w.to(v.dtype)) + b)
            else:
                s.append(v @ w.to(v.dtype) + b)  # (B,) for vectors, (B, N) for tokens
        return torch.softmax(torch.stack(s, 1).float(), 1)

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        values = list(topdown.unbind(1))
        if "prev" in self.stage_routes[i]:
            values.append(h)
        w = self.route_weights(i, values)
        out = 0
        for k, v in enumerate(values):
            wk = w[k] if self.weights == "stage" else w[:, k]
            if self.weights == "spatial":
                wk = wk[:, None] if v.dim() == 4 else (wk[:, :, None] if v.dim() == 3 else wk[:, None])
            out = out + wk.to(v.dtype) * v
        return out

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        topdown: list[Tensor | None] = []
        for i, on in enumerate(self.stage_routes):
            sources = {"self": i, "next": i + 1}
            vals = [self.maps[f"{r}_{i}"](feats[sources[r]]) for r in on if r != "prev"]
            topdown.append(torch.stack(vals, 1) if vals else None)
        return topdown, state, {}
