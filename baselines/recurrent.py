"""Stacked recurrent networks (RNN, LSTM, GRU) run cell by cell, with truncated BPTT and a top-down hook.

References: J. L. Elman, "Finding structure in time", 1990; S. Hochreiter, J. Schmidhuber, "Long short-term
memory", 1997, with the forget gate of Gers et al. 2000; K. Cho et al., "Learning phrase representations using RNN
encoder-decoder", 2014; R. J. Williams, J. Peng, "An efficient gradient-based algorithm for on-line training of
recurrent network trajectories", 1990 (truncated backpropagation through time). The cells are
:mod:`baselines.recurrent_cells` (written from the equations, parity-tested against ``torch.nn.*Cell``); this
module stacks ``L`` of them and unrolls them one time step at a time (never the fused ``nn.LSTM``), so that a
signal can be injected into any layer at any step (DESIGN.md section 3.1):

.. math::

    h^0_t = e(x_t), \\qquad
    s^l_t = \\mathrm{cell}_l\\big(\\mathrm{drop}(h^{l-1}_t),\\; s^l_{t-1},\\; u^l_t\\big), \\; l = 1..L, \\qquad
    u^l_t = \\mathrm{topdown}\\big(l, h^{l+1}_{t-1}, h^{l-1}_t\\big) \\; (l < L; \\; u^L_t = 0)

where ``e`` embeds integer tokens (``embed=True``: ``nn.Embedding(in_chans, embed_dim)``), one-hot encodes them
(``embed=False``: vocabulary ``in_chans``) or passes float features through, ``s`` is the cell state (``h``, or
``(h, c)`` for the LSTM), and ``u`` is a **top-down term added to the input pre-activations** of layer ``l`` at step
``t``, computed from the layer above at the previous step. The output is ``head(drop(h^L_T))``, logits (B, K) of
the whole sequence (``output="last"``), or ``head(drop(h^L_t))`` at every step, (B, T, K) (``output="all"``).

**The top-down hook** (for routing feedback such as BRIMs; docs/tasks.md, DESIGN.md section 3.1):

- ``topdown=None`` (default): the plain stack, ``u = 0``; it equals ``torch.nn.LSTM``/``GRU``/``RNN`` with the same
  weights (a test checks it).
- ``topdown="linear"``: :class:`TopDownLinear`, a learned ``u^l_t = V_l h^{l+1}_{t-1}`` (no bias) per layer below
  the top, as in gated-feedback / hierarchical RNNs.
- ``topdown=f``: any callable or ``nn.Module`` ``f(layer: int, above: Tensor, below: Tensor) -> Tensor | None``,
  called for ``layer = 0..L-2`` at every step with ``above`` = that layer's upper neighbour's hidden state at
  ``t - 1`` (B, H) and ``below`` = the layer's bottom-up input at ``t`` (B, D_l); it returns ``u`` (B, G H) (``G``
  = 1, 4, 3 gate blocks for RNN, LSTM, GRU) or ``None`` for no signal. An ``nn.Module`` is registered, so its
  parameters train with the model.
- :meth:`RecurrentNet.step` runs one time step from an explicit state and, optionally, explicit per-layer terms
  ``topdown=[u^1, ..., u^L]``, for a module that drives the loop itself.

**Truncated BPTT** (``tbptt=k > 0``): the recurrent state is detached before steps ``k, 2k, ...``, so a loss at step
``t`` sends gradient only to the inputs of its own window ``[k floor(t / k), t]``; ``tbptt=0`` is full BPTT. The
forward values are unchanged (a test checks both the cut and the values).

Shapes: ``x`` int64 (B, T) tokens in ``[0, in_chans)``, or float (B, T, in_chans) (float (B, T) when ``in_chans =
1``) -> float (B, num_classes) (``output="last"``) or (B, T, num_classes) (``output="all"``).

Deviations: dropout (``dropout > 0``) acts between layers and before the head only, never on the recurrent
connections (Zaremba et al. 2014). Initialisation: PyTorch's, with the LSTM forget-gate bias raised by
``forget_bias`` (default 1).

Example:
    >>> import torch
    >>> net = lstm(num_classes=10, in_chans=2, hidden_size=16, num_layers=2, embed=True, embed_dim=8)
    >>> net(torch.randint(0, 2, (3, 20))).shape
    torch.Size([3, 10])
    >>> per_position = gru(num_classes=5, in_chans=5, hidden_size=8, output="all")
    >>> per_position(torch.randint(0, 5, (3, 7))).shape
    torch.Size([3, 7, 5])
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model
from .recurrent_cells import CELLS, LSTMCell, RecurrentCell, RNNCell, State

__all__ = ["RecurrentNet", "TopDownLinear", "detach_state", "gru", "lstm", "rnn"]

TopDown = Callable[[int, Tensor, Tensor], "Tensor | None"]
OUTPUTS = ("last", "all")


def detach_state(state: Sequence[State]) -> list[State]:
    """Every layer's state cut from the graph (the truncation of truncated BPTT)."""
    return [tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach() for st in state]  # type: ignore[misc]


class TopDownLinear(nn.Module):
    """The built-in top-down hook: ``u^l_t = V_l h^{l+1}_{t-1}`` for layers ``l = 0..L-2`` (no bias).

    ``V_l`` is ``nn.Linear(hidden_size, gates * hidden_size, bias=False)`` with PyTorch's default initialisation.

    Shapes: ``forward(layer, above (B, H), below)`` -> (B, G H); ``below`` is not used.

    Example:
        >>> td = TopDownLinear(hidden_size=4, gates=3, num_layers=2)
        >>> td(0, torch.zeros(2, 4), torch.zeros(2, 6)).shape
        torch.Size([2, 12])
    """

    def __init__(self, *, hidden_size: int, gates: int, num_layers: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(
            nn.Linear(hidden_size, gates * hidden_size, bias=False) for _ in range(max(num_layers - 1, 0))
        )

    def forward(self, layer: int, above: Tensor, below: Tensor) -> Tensor:
        return self.proj[layer](above)


class RecurrentNet(nn.Module):
    """``num_layers`` stacked RNN/LSTM/GRU cells unrolled step by step, a linear head (see the module docstring).

    Attributes: ``embed`` (``nn.Embedding`` or None), ``cells`` (``nn.ModuleList`` of
    :class:`~baselines.recurrent_cells.RecurrentCell`), ``head`` (``nn.Linear(hidden_size, num_classes)``),
    ``topdown`` (the hook or None), ``cell_type``, ``num_classes``, ``in_chans``, ``hidden_size``,
    ``num_layers``, ``gates``, ``tbptt``, ``output``, ``channels`` (the hidden size of each layer).

    Args:
        cell: ``rnn``, ``lstm`` or ``gru``.
        num_classes: output units (classes, vocabulary, or regression outputs).
        in_chans: input features per step, or the vocabulary of integer tokens.
        hidden_size: units per layer (H).
        num_layers: stacked layers (L).
        tbptt: truncated BPTT window in steps (0: full BPTT).
        output: ``"last"`` (B, K) or ``"all"`` (B, T, K).
        embed: embed integer tokens with ``nn.Embedding(in_chans, embed_dim)`` (else one-hot them).
        embed_dim: embedding width (0: ``hidden_size``).
        dropout: dropout between layers and before the head.
        topdown: ``None``, ``"linear"`` or a callable ``(layer, above, below) -> u`` (module docstring).
        forget_bias: LSTM only: added to the forget-gate bias at initialisation.
        nonlinearity: RNN only: ``tanh`` or ``relu``.

    Example:
        >>> net = RecurrentNet("rnn", num_classes=3, in_chans=2, hidden_size=5, num_layers=2, topdown="linear")
        >>> x = torch.randn(4, 2)                      # one step of float features
        >>> h, state = net.step(x)                     # zero state; h: the top layer's hidden state
        >>> h, state = net.step(x, state)              # layer 0 now hears layer 1's state from the step before
        >>> h.shape, len(state), net(torch.randn(4, 6, 2)).shape
        (torch.Size([4, 5]), 2, torch.Size([4, 3]))
    """

    def __init__(
        self,
        cell: str = "lstm",
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        hidden_size: int = 128,
        num_layers: int = 2,
        tbptt: int = 0,
        output: str = "last",
        embed: bool = False,
        embed_dim: int = 0,
        dropout: float = 0.0,
        topdown: str | TopDown | None = None,
        forget_bias: float = 1.0,
        nonlinearity: str = "tanh",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose from: {', '.join(CELLS)}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of: {', '.join(OUTPUTS)} (got {output!r})")
        for name, value, low in (("num_classes", num_classes, 1), ("in_chans", in_chans, 1),
                                 ("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                                 ("tbptt", tbptt, 0), ("embed_dim", embed_dim, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.cell_type = cell
        self.num_classes = int(num_classes)
        self.in_chans = int(in_chans)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.tbptt = int(tbptt)
        self.output = output
        self.channels = [self.hidden_size] * self.num_layers
        self.embed: nn.Embedding | None = None
        if embed:
            self.embed = nn.Embedding(self.in_chans, int(embed_dim) or self.hidden_size)
        first = self.embed.embedding_dim if self.embed is not None else self.in_chans
        cells: list[RecurrentCell] = []
        for layer in range(self.num_layers):
            d = first if layer == 0 else self.hidden_size
            if cell == "lstm":
                cells.append(LSTMCell(d, self.hidden_size, forget_bias=forget_bias))
            elif cell == "rnn":
                cells.append(RNNCell(d, self.hidden_size, nonlinearity=nonlinearity))
            else:
                cells.append(CELLS[cell](d, self.hidden_size))
        self.cells = nn.ModuleList(cells)
        self.gates = cells[0].gates
        self.drop = nn.Dropout(float(dropout))
        self.head = nn.Linear(self.hidden_size, self.num_classes)
        if topdown is None or topdown == "none":
            self.topdown: TopDown | None = None
        elif topdown == "linear":
            self.topdown = TopDownLinear(hidden_size=self.hidden_size, gates=self.gates, num_layers=self.num_layers)
        elif callable(topdown):
            self.topdown = topdown
        else:
            raise ValueError(f"topdown must be None, 'none', 'linear', or a callable (layer, above, below), got {topdown!r}")

    # ---- inputs and state -------------------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """The per-step features the first layer reads: (B, T) tokens or (B, T, in_chans) floats -> (B, T, D)."""
        if not torch.is_floating_point(x):
            if x.dim() != 2:
                raise ValueError(f"integer tokens must be (B, T), got shape {tuple(x.shape)}")
            if self.embed is not None:
                return self.embed(x)
            return F.one_hot(x, self.in_chans).to(self.cells[0].weight_ih.dtype)
        if self.embed is not None:
            raise ValueError(f"embed=True expects int64 tokens (B, T), got {x.dtype} {tuple(x.shape)}")
        if x.dim() == 2 and self.in_chans == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[-1] != self.in_chans:
            raise ValueError(f"float inputs must be (B, T, in_chans={self.in_chans}), got {tuple(x.shape)}")
        return x

    def init_state(
        self, batch: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> list[State]:
        """The zero state of every layer (``h`` or ``(h, c)``, each (B, H))."""
        return [c.init_state(batch, device=device, dtype=dtype) for c in self.cells]

    # ---- one step ---------------------------------------------------------------------------------------------

    def step(
        self,
        x_t: Tensor,
        state: Sequence[State] | None = None,
        topdown: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, list[State]]:
        """One time step of the whole stack.

        Args:
            x_t: the first layer's input at step ``t``, (B, D): one step of :meth:`encode`'s output.
            state: every layer's state at ``t - 1`` (:meth:`init_state`'s layout); ``None``: zeros.
            topdown: explicit per-layer top-down terms ``[u^1_t, ..., u^L_t]`` (each (B, G H) or None), used
                instead of the model's own hook for this step; ``None``: the hook (if any) computes them from
                ``state``.

        Returns:
            ``(h, state)``: the top layer's hidden state at ``t`` (B, H) and every layer's new state.
        """
        return self._step(x_t, self.cells[0].input_proj(x_t), state, topdown)

    def _step(
        self, x_t: Tensor, xp0: Tensor, state: Sequence[State] | None, topdown: Sequence[Tensor | None] | None
    ) -> tuple[Tensor, list[State]]:
        if state is None:
            state = self.init_state(x_t.shape[0], device=x_t.device, dtype=xp0.dtype)
        if topdown is not None and len(topdown) != self.num_layers:
            raise ValueError(f"topdown must hold one term (or None) per layer: {self.num_layers}, got {len(topdown)}")
        new: list[State] = []
        below = x_t
        for layer, cell in enumerate(self.cells):
            if layer > 0:
                below = self.drop(below)
            xp = xp0 if layer == 0 else cell.input_proj(below)
            if topdown is not None:
                u = topdown[layer]
            elif self.topdown is not None and layer < self.num_layers - 1:
                u = self.topdown(layer, cell.hidden(state[layer + 1]), below)
            else:
                u = None
            s = cell.recur(xp, state[layer], u)
            new.append(s)
            below = cell.hidden(s)
        return below, new

    # ---- the sequence -----------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) after the last step (``output="last"``) or (B, T, num_classes) (``"all"``)."""
        feats = self.encode(x)
        batch, steps = feats.shape[0], feats.shape[1]
        if steps < 1:
            raise ValueError("the input sequence is empty (T = 0)")
        xp0 = self.cells[0].input_proj(feats)  # every step's first-layer projection in one matmul
        state: list[State] = self.init_state(batch, device=feats.device, dtype=xp0.dtype)
        outs: list[Tensor] = []
        h = feats.new_zeros(())
        for t in range(steps):
            if self.tbptt and t and t % self.tbptt == 0:
                state = detach_state(state)
            h, state = self._step(feats[:, t], xp0[:, t], state, None)
            if self.output == "all":
                outs.append(h)
        if self.output == "all":
            h = torch.stack(outs, dim=1)
        return self.head(self.drop(h))




def _small() -> dict[str, Any]:
    return {"hidden_size": 16, "num_layers": 2}


@register_model(family="recurrent", staged=False, paper="Elman 1990", source="hand-written (paper equations)",
                small=_small())
def rnn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    hidden_size: int = 128,
    num_layers: int = 2,
    tbptt: int = 0,
    output: str = "last",
    embed: bool = False,
    embed_dim: int = 0,
    dropout: float = 0.0,
    topdown: str | TopDown | None = None,
    nonlinearity: str = "tanh",
) -> RecurrentNet:
    """Stacked Elman RNN (tanh), cell by cell: :class:`RecurrentNet` with :class:`~baselines.recurrent_cells.RNNCell`.

    Parameters: ``H(D + H + 2) + (L - 1) H(2H + 2) + (H + 1) K``; 51,082 at the defaults (D = 1, H = 128, L = 2,
    K = 10). ``nonlinearity``: ``tanh`` or ``relu``.

    The options are :class:`RecurrentNet`'s.

    Example:
        >>> sum(p.numel() for p in rnn().parameters())
        51082
        >>> rnn(hidden_size=8)(torch.randn(2, 5, 1)).shape
        torch.Size([2, 10])
    """
    return RecurrentNet("rnn", num_classes=num_classes, in_chans=in_chans, hidden_size=hidden_size,
                        num_layers=num_layers, tbptt=tbptt, output=output, embed=embed, embed_dim=embed_dim,
                        dropout=dropout, topdown=topdown, nonlinearity=nonlinearity)


@register_model(family="recurrent", staged=False, paper="Hochreiter & Schmidhuber 1997; Gers et al. 2000",
                source="hand-written (paper equations)", small=_small())
def lstm(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    hidden_size: int = 128,
    num_layers: int = 2,
    tbptt: int = 0,
    output: str = "last",
    embed: bool = False,
    embed_dim: int = 0,
    dropout: float = 0.0,
    topdown: str | TopDown | None = None,
    forget_bias: float = 1.0,
) -> RecurrentNet:
    """Stacked LSTM with forget gates, cell by cell: :class:`RecurrentNet` with :class:`~baselines.recurrent_cells.LSTMCell`.

    Parameters: ``4H(D + H + 2) + (L - 1) 4H(2H + 2) + (H + 1) K``; 200,458 at the defaults (D = 1, H = 128,
    L = 2, K = 10), as ``nn.LSTM(1, 128, 2)`` plus the head. ``forget_bias`` is added to the forget-gate bias at
    initialisation.

    The options are :class:`RecurrentNet`'s.

    Example:
        >>> sum(p.numel() for p in lstm().parameters())
        200458
        >>> lstm(hidden_size=8, output="all")(torch.randn(2, 5, 1)).shape
        torch.Size([2, 5, 10])
    """
    return RecurrentNet("lstm", num_classes=num_classes, in_chans=in_chans, hidden_size=hidden_size,
                        num_layers=num_layers, tbptt=tbptt, output=output, embed=embed, embed_dim=embed_dim,
                        dropout=dropout, topdown=topdown, forget_bias=forget_bias)


@register_model(family="recurrent", staged=False, paper="Cho et al. 2014", source="hand-written (paper equations)",
                small=_small())
def gru(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    hidden_size: int = 128,
    num_layers: int = 2,
    tbptt: int = 0,
    output: str = "last",
    embed: bool = False,
    embed_dim: int = 0,
    dropout: float = 0.0,
    topdown: str | TopDown | None = None,
) -> RecurrentNet:
    """Stacked GRU, cell by cell: :class:`RecurrentNet` with :class:`~baselines.recurrent_cells.GRUCell`.

    Parameters: ``3H(D + H + 2) + (L - 1) 3H(2H + 2) + (H + 1) K``; 150,666 at the defaults (D = 1, H = 128,
    L = 2, K = 10), as ``nn.GRU(1, 128, 2)`` plus the head.

    The options are :class:`RecurrentNet`'s.

    Example:
        >>> sum(p.numel() for p in gru().parameters())
        150666
        >>> gru(num_classes=1, in_chans=2, hidden_size=8)(torch.randn(2, 5, 2)).shape
        torch.Size([2, 1])
    """
    return RecurrentNet("gru", num_classes=num_classes, in_chans=in_chans, hidden_size=hidden_size,
                        num_layers=num_layers, tbptt=tbptt, output=output, embed=embed, embed_dim=embed_dim,
                        dropout=dropout, topdown=topdown)


