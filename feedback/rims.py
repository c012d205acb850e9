"""Sequence models built from routed recurrent modules: RIMs, BRIMs and Meta-RIMs.

References:

- A. Goyal et al., "Recurrent Independent Mechanisms", arXiv 1909.10893, ICLR 2021 (RIMs);
- S. Mittal et al., "Learning to combine top-down and bottom-up signals in recurrent neural networks with attention
  over modules", ICML 2020, arXiv 2006.16981 (BRIMs);
- K. Madan, N. R. Ke, A. Goyal, B. Schölkopf, Y. Bengio, "Fast and slow learning of recurrent independent
  mechanisms", ICLR 2021, OpenReview Lc28QAB4ypz (Meta-RIMs).

Re-implemented from the equations of :mod:`feedback.routing` (reference/methods.md section 5). With ``L`` layers of
:class:`~feedback.routing.RIMCell` (layer ``l``: ``K_l`` modules of ``H_l`` units, ``k_l`` active):

.. math::

    e_t = \\mathrm{enc}(x_t), \\qquad
    s^l_t = \\mathrm{RIM}_l\\big([\\varnothing,\\; b^l_t,\\; \\tau^l_t],\\; s^l_{t-1}\\big), \\qquad
    b^0_t = e_t, \\; b^l_t = h^{l-1}_t, \\qquad
    \\tau^l_t = h^{l+1}_{t-1} \\;(\\text{BRIMs}, l < L - 1), \\text{ absent otherwise}

    y_T = W_o\\, \\mathrm{drop}(h^{L-1}_T) \\;(\\text{output="last"}) \\quad\\text{or}\\quad
    y_t = W_o\\, \\mathrm{drop}(h^{L-1}_t) \\;\\forall t \\;(\\text{output="all"})

where ``h^l_t`` is layer ``l``'s hidden state flattened to (B, K_l H_l). Each input source is one row with its own
key and value maps, so the null competition decides, per module and step, whether to listen to the bottom-up
row, the top-down row, or nothing. ``enc`` embeds integer tokens (``nn.Embedding``) or, with ``embed=False``, maps
one-hot tokens or float features with ``nn.Linear`` (with a bias): a raw 0 is never the null row (dido1998 #6).

- :class:`RIMs` (``topdown=False``): one or more layers, each reading only the layer below.
- :class:`BRIMs` (``topdown=True``): every layer but the top also reads the layer above at ``t - 1``. The official
  code adds the top-down row to layer 0 only (from the top layer); with 2 layers (the paper's setting) the two
  agree. ``topdown=False`` gives hierarchical RIMs exactly (a test checks it).
- :class:`MetaRIMs`: RIMs whose module parameters and attention parameters learn at different rates. The paper
  meta-learns them: module (RNN) parameters adapt **fast** in an inner loop, the input- and
  communication-attention parameters are **slow** meta-parameters (reversed roles "not nearly as well"). This
  implementation keeps one optimiser and gives the two groups different learning-rate multipliers through
  :meth:`MetaRIMs.lr_scales` (which ``experiments.train.make_optimizer`` honours): ``fast="modules"`` (default,
  the paper) scales ``cell`` by ``fast_lr_scale`` and ``input_attn``/``comm`` by ``slow_lr_scale``;
  ``fast="attention"`` swaps them. Deviation: no bi-level inner loop (the paper's RL episodes have no analogue
  in a supervised run); the two-timescale part is what is kept. Encoder and decoder train at the base rate.

Shapes: ``x`` int64 (B, T) tokens, or float (B, T, in_chans) -> (B, num_classes) (``output="last"``) or
(B, T, num_classes) (``output="all"``). :meth:`RoutingNet.run` also returns every step's active masks and null
attentions per layer.

Example:
    >>> import torch
    >>> net = RIMs(num_classes=10, in_chans=2, hidden_size=24, num_modules=4, top_k=2)
    >>> net(torch.randint(0, 2, (3, 12))).shape
    torch.Size([3, 10])
    >>> brims = BRIMs(num_classes=5, in_chans=5, hidden_size=[24, 12], num_modules=[4, 2], top_k=[2, 1],
    ...               output="all")
    >>> brims(torch.randint(0, 5, (3, 7))).shape
    torch.Size([3, 7, 5])
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .routing import RIMCell, RIMState, detach_rim_state

__all__ = ["BRIMs", "MetaRIMs", "RIMs", "RoutingNet", "RoutingRun"]

OUTPUTS = ("last", "all")


def _per_layer(name: str, value: int | Sequence[int], layers: int) -> list[int]:
    vals = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * layers
    if len(vals) != layers:
        raise ValueError(f"{name} must be one integer or one per layer ({layers}), got {value!r}")
    return vals


class RoutingRun(NamedTuple):
    """What :meth:`RoutingNet.run` returns: outputs (B, num_classes) or (B, T, num_classes), final per-layer states,
    active masks and null attentions per layer, each (B, T, K_l)."""

    logits: Tensor
    state: list[RIMState]
    masks: list[Tensor]
    null: list[Tensor]


class RoutingNet(nn.Module):
    """Encoder, ``L`` layers of :class:`~feedback.routing.RIMCell` unrolled over time, a linear decoder.

    Args:
        num_classes: output units. in_chans: input features per step, or the vocabulary of integer tokens.
        hidden_size: total units per layer ``K_l H_l`` (one integer or one per layer; divisible by ``num_modules``).
        num_modules, top_k: ``K_l`` and ``k_l`` (one integer or one per layer).
        num_layers: ``L`` (inferred from list arguments when they are lists).
        topdown: BRIMs' top-down row (layer ``l`` reads layer ``l + 1`` at ``t - 1``).
        output: ``"last"`` or ``"all"``. embed: ``nn.Embedding`` for tokens (else a linear map of one-hot tokens
            or float features). embed_dim: encoder width (0 -> ``hidden_size[0]``).
        dropout: on the encoder output, between layers and before the decoder.
        tbptt: truncated BPTT window (0: full BPTT).
        **cell_kwargs: :class:`~feedback.routing.RIMCell` options (cell, communication, input_*/comm_*/workspace_*).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        hidden_size: int | Sequence[int] = 120,
        num_modules: int | Sequence[int] = 6,
        top_k: int | Sequence[int] = 4,
        num_layers: int = 0,
        topdown: bool = False,
        output: str = "last",
        embed: bool = True,
        embed_dim: int = 0,
        dropout: float = 0.0,
        tbptt: int = 0,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of: {', '.join(OUTPUTS)} (got {output!r})")
        lists = [len(v) for v in (hidden_size, num_modules, top_k) if isinstance(v, (list, tuple))]
        layers = int(num_layers) or (lists[0] if lists else 1)
        sizes = _per_layer("hidden_size", hidden_size, layers)
        mods = _per_layer("num_modules", num_modules, layers)
        ks = _per_layer("top_k", top_k, layers)
        for s, m in zip(sizes, mods):
            if m < 1 or s % m:
                raise ValueError(f"hidden_size ({s}) must be a positive multiple of num_modules ({m})")
        if int(in_chans) < 1 or int(num_classes) < 1:
            raise ValueError(f"in_chans and num_classes must be >= 1, got {in_chans} and {num_classes}")
        self.num_classes, self.in_chans, self.num_layers = int(num_classes), int(in_chans), layers
        self.hidden_sizes, self.topdown, self.output, self.tbptt = sizes, bool(topdown), output, int(tbptt)
        self.channels = list(sizes)
        edim = int(embed_dim) or sizes[0]
        # tokens: an embedding (embed=True) or one-hot codes through a linear map with a bias; floats: that map
        self.embed: nn.Embedding | None = nn.Embedding(self.in_chans, edim) if embed else None
        self.proj: nn.Linear | None = None if embed else nn.Linear(self.in_chans, edim)
        first = edim
        cells = []
        for layer in range(layers):
            src = [first if layer == 0 else sizes[layer - 1]]
            if self.topdown and layer < layers - 1:
                src.append(sizes[layer + 1])
            cells.append(RIMCell(src, hidden_size=sizes[layer] // mods[layer], num_modules=mods[layer],
                                 top_k=ks[layer], **cell_kwargs))
        self.layers = nn.ModuleList(cells)
        self.drop = nn.Dropout(float(dropout))
        self.head = nn.Linear(sizes[-1], self.num_classes)

    def encode(self, x: Tensor) -> Tensor:
        """(B, T) tokens or (B, T, in_chans) floats -> (B, T, D) features for the first layer."""
        if not torch.is_floating_point(x):
            if x.dim() != 2:
                raise ValueError(f"integer tokens must be (B, T), got shape {tuple(x.shape)}")
            if self.embed is not None:
                return self.embed(x)
            return self.proj(F.one_hot(x, self.in_chans).to(self.head.weight.dtype))
        if self.proj is None:
            raise ValueError(f"embed=True expects int64 tokens (B, T), got {x.dtype} {tuple(x.shape)}")
        if x.dim() == 2 and self.in_chans == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[-1] != self.in_chans:
            raise ValueError(f"float inputs must be (B, T, in_chans={self.in_chans}), got {tuple(x.shape)}")
        return self.proj(x)

    def init_state(self, batch: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> list[RIMState]:
        return [cell.init_state(batch, device=device, dtype=dtype) for cell in self.layers]

    def step(
        self, e_t: Tensor, state: Sequence[RIMState], kv0: tuple[Tensor, Tensor] | None = None
    ) -> tuple[list[RIMState], list[Tensor], list[Tensor]]:
        """One step of every layer from the encoded input ``e_t`` (B, D) and the states at ``t - 1``.

        Returns the new states, the active masks and the null attentions, one per layer.
        """
        new, masks, nulls = [], [], []
        below = e_t
        for layer, cell in enumerate(self.layers):
            above = None
            if self.topdown and layer < self.num_layers - 1:
                above = state[layer + 1]["h"].flatten(1)  # layer l + 1 at t - 1
            if layer == 0 and kv0 is not None:
                kv = kv0
                if above is not None:
                    ka, va = cell.input_attn.project(1, above.unsqueeze(1))
                    kv = (torch.cat([kv0[0], ka], 1), torch.cat([kv0[1], va], 1))
                s, m, n = cell(None, state[layer], kv=kv)
            else:
                s, m, n = cell([self.drop(below) if layer else below, above], state[layer])
            new.append(s)
            masks.append(m)
            nulls.append(n)
            below = s["h"].flatten(1)
        return new, masks, nulls

    def run(self, x: Tensor, state: Sequence[RIMState] | None = None) -> RoutingRun:
        """The whole sequence: outputs, the final states, and per layer the masks and null attentions (B, T, K)."""
        feats = self.drop(self.encode(x))
        batch, steps = feats.shape[0], feats.shape[1]
        if steps < 1:
            raise ValueError("the input sequence is empty (T = 0)")
        # layer 0's bottom-up keys and values for every step at once: (B, T, heads, d)
        k0, v0 = self.layers[0].input_attn.project(0, feats)
        st = list(state) if state is not None else self.init_state(batch, device=feats.device, dtype=feats.dtype)
        outs, masks, nulls = [], [], []
        for t in range(steps):
            if self.tbptt and t and t % self.tbptt == 0:
                st = [detach_rim_state(s) for s in st]
            st, m, n = self.step(feats[:, t], st, kv0=(k0[:, t : t + 1], v0[:, t : t + 1]))
            masks.append(m)
            nulls.append(n)
            if self.output == "all":
                outs.append(st[-1]["h"].flatten(1))
        h = torch.stack(outs, dim=1) if self.output == "all" else st[-1]["h"].flatten(1)
        per_layer_masks = [torch.stack([m[layer] for m in masks], 1) for layer in range(self.num_layers)]
        per_layer_null = [torch.stack([n[layer] for n in nulls], 1) for layer in range(self.num_layers)]
        return RoutingRun(self.head(self.drop(h)), st, per_layer_masks, per_layer_null)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) after the last step (``output="last"``) or (B, T, num_classes) (``"all"``)."""
        return self.run(x).logits


class RIMs(RoutingNet):
    """RIMs (Goyal et al. 2019): :class:`RoutingNet` without the top-down row (see the module docstring).

    Example:
        >>> net = RIMs(num_classes=3, in_chans=1, hidden_size=12, num_modules=3, top_k=1, embed=False)
        >>> out = net.run(torch.randn(2, 5, 1))
        >>> out.logits.shape, out.masks[0].shape, out.masks[0].sum(-1).unique().tolist()
        (torch.Size([2, 3]), torch.Size([2, 5, 3]), [1])
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("topdown", False)
        super().__init__(**kwargs)


class BRIMs(RoutingNet):
    """BRIMs (Mittal et al. 2020): stacked RIM layers with the top-down row (default 2 layers, K = [6, 3], k = [4, 2]).

    Example:
        >>> net = BRIMs(num_classes=3, in_chans=2, hidden_size=[12, 6], num_modules=[3, 2], top_k=[2, 1])
        >>> [len(cell.source_sizes) for cell in net.layers]      # layer 0: [below, above]; the top layer: [below]
        [2, 1]
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("topdown", True)
        if not kwargs.get("num_layers") and not any(isinstance(kwargs.get(k), (list, tuple))
                                                    for k in ("hidden_size", "num_modules", "top_k")):
            kwargs["num_layers"] = 2  # one integer for all layers: still two layers (a one-layer BRIMs is RIMs)
        kwargs.setdefault("hidden_size", [120, 60])
        kwargs.setdefault("num_modules", [6, 3])
        kwargs.setdefault("top_k", [4, 2])
        super().__init__(**kwargs)


class MetaRIMs(RoutingNet):
    """Meta-RIMs (Madan et al. 2021): RIMs with fast module parameters and slow attention parameters.

    Args:
        fast: ``"modules"`` (the paper: cells fast, attention slow) or ``"attention"`` (the reversed roles).
        fast_lr_scale, slow_lr_scale: learning-rate multipliers of the fast and the slow group.
        **kwargs: :class:`RoutingNet`'s (``topdown`` defaults to False).

    Example:
        >>> net = MetaRIMs(num_classes=3, in_chans=2, hidden_size=12, num_modules=3, top_k=2, slow_lr_scale=0.1)
        >>> net.lr_scales()
        {'layers.0.cell': 1.0, 'layers.0.input_attn': 0.1, 'layers.0.comm': 0.1}
    """

    def __init__(self, *, fast: str = "modules", fast_lr_scale: float = 1.0, slow_lr_scale: float = 0.1,
                 **kwargs: Any) -> None:
        if fast not in ("modules", "attention"):
            raise ValueError(f"fast must be one of: modules, attention (got {fast!r})")
        if fast_lr_scale <= 0 or slow_lr_scale <= 0:
            raise ValueError(f"learning-rate scales must be > 0, got {fast_lr_scale} and {slow_lr_scale}")
        kwargs.setdefault("topdown", False)
        super().__init__(**kwargs)
        self.fast, self.fast_lr_scale, self.slow_lr_scale = fast, float(fast_lr_scale), float(slow_lr_scale)

    def lr_scales(self) -> dict[str, float]:
        """``{parameter-name prefix: learning-rate multiplier}`` for the runner's optimiser (names relative to self)."""
        cell, attn = (self.fast_lr_scale, self.slow_lr_scale)
        if self.fast == "attention":
            cell, attn = attn, cell
        out: dict[str, float] = {}
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.cell"] = cell
            out[f"layers.{i}.input_attn"] = attn
            if layer.comm is not None:
                out[f"layers.{i}.comm"] = attn
        return out
