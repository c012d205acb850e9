"""Recurrent cells written from their equations: Elman's RNN, the LSTM with a forget gate, and the GRU.

References:

- J. L. Elman, "Finding structure in time", Cognitive Science 14, 1990 (the simple recurrent network);
- S. Hochreiter, J. Schmidhuber, "Long short-term memory", Neural Computation 9, 1997, with the forget gate of
  F. A. Gers, J. Schmidhuber, F. Cummins, "Learning to forget: continual prediction with LSTM", Neural Computation
  12, 2000;
- K. Cho et al., "Learning phrase representations using RNN encoder-decoder for statistical machine translation",
  EMNLP 2014 (the gated recurrent unit).

With input ``x`` (B, D), previous hidden state ``h`` (B, H) and an optional top-down term ``u`` (B, G H) added to
the input pre-activations (``G`` = 1, 4, 3 gates for RNN, LSTM, GRU; ``u = 0`` when absent):

.. math::

    \\text{RNN:}\\quad h' = \\tanh(W_{ih} x + b_{ih} + u + W_{hh} h + b_{hh})

    \\text{LSTM:}\\quad (i, f, g, o) = W_{ih} x + b_{ih} + u + W_{hh} h + b_{hh}, \\quad
    c' = \\sigma(f) \\odot c + \\sigma(i) \\odot \\tanh(g), \\quad h' = \\sigma(o) \\odot \\tanh(c')

    \\text{GRU:}\\quad (a_r, a_z, a_n) = W_{ih} x + b_{ih} + u, \\quad (s_r, s_z, s_n) = W_{hh} h + b_{hh},
    \\quad r = \\sigma(a_r + s_r), \\; z = \\sigma(a_z + s_z), \\; n = \\tanh(a_n + r \\odot s_n), \\;
    h' = (1 - z) \\odot n + z \\odot h

The parameters have PyTorch's layout (``weight_ih`` (G H, D), ``weight_hh`` (G H, H), ``bias_ih``, ``bias_hh``
(G H), gates stacked in the orders above), so weights copy one-to-one from and to ``torch.nn.RNNCell``,
``LSTMCell`` and ``GRUCell``, and the outputs match them (a test checks it).

Deviations, all stated:

- Elman's network used logistic units; the RNN here uses ``tanh`` (``nonlinearity="relu"`` is also accepted), as
  ``torch.nn.RNNCell`` does.
- Cho et al. apply the reset gate before the recurrent matrix, ``n = tanh(W x + U (r * h))``; this GRU applies it
  after, ``r * (U h + b)``, as ``torch.nn.GRUCell`` and cuDNN do (same expressiveness, one fused matmul per step).
- Two bias vectors per gate (``b_ih``, ``b_hh``), as PyTorch, where the papers have one; the LSTM's forget-gate
  bias starts at ``forget_bias`` (default 1.0: Gers et al. 2000; Jozefowicz et al. 2015) added to PyTorch's
  uniform initialisation ``U(-1/sqrt(H), 1/sqrt(H))`` of every weight and bias.
- The optional top-down term ``u`` is this project's addition (see :mod:`baselines.recurrent`).

Each cell splits its step in two so a sequence model can project all inputs of a layer at once:
``input_proj(x) = W_ih x + b_ih`` (any leading shape) and ``recur(xp, state, topdown)``; ``forward(x, state,
topdown)`` is ``recur(input_proj(x), state, topdown)``. The state is ``h`` (RNN, GRU) or ``(h, c)`` (LSTM), each
(B, H); ``state=None`` means zeros.

Example:
    >>> import torch
    >>> cell = LSTMCell(3, 5)
    >>> h, c = cell(torch.randn(2, 3))
    >>> h.shape, c.shape, sum(p.numel() for p in cell.parameters())
    (torch.Size([2, 5]), torch.Size([2, 5]), 200)
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CELLS", "GRUCell", "LSTMCell", "RNNCell", "RecurrentCell", "State"]

# A cell's state: h (RNN, GRU) or (h, c) (LSTM).
State = Union[Tensor, tuple[Tensor, Tensor]]


class RecurrentCell(nn.Module):
    """Shared parameters and helpers of the three cells: ``gates`` blocks of ``hidden_size`` pre-activations.

    Attributes: ``input_size`` (D), ``hidden_size`` (H), ``gates`` (G), ``weight_ih`` (G H, D), ``weight_hh``
    (G H, H), ``bias_ih`` and ``bias_hh`` (G H, or None with ``bias=False``). Each subclass defines
    ``recur(xp, state, topdown)``: one step from the projected input ``xp`` (B, G H), ``topdown`` (B, G H) added to it.
    """

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True) -> None:
        super().__init__()
        if int(input_size) < 1 or int(hidden_size) < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        g = self.gates * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, self.hidden_size))
        if bias:
            self.bias_ih: nn.Parameter | None = nn.Parameter(torch.empty(g))
            self.bias_hh: nn.Parameter | None = nn.Parameter(torch.empty(g))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: every weight and bias ``U(-1/sqrt(H), 1/sqrt(H))``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            if p.device.type != "meta":
                nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"

    def input_proj(self, x: Tensor) -> Tensor:
        """``W_ih x + b_ih``: (..., D) -> (..., G H)."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def init_state(self, batch: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """The zero state for ``batch`` sequences."""
        return torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)

    @staticmethod
    def hidden(state: State) -> Tensor:
        """The hidden output ``h`` (B, H) of a state."""
        return state[0] if isinstance(state, tuple) else state

    def _pre(self, xp: Tensor, topdown: Tensor | None) -> Tensor:
        return xp if topdown is None else xp + topdown

    def forward(self, x: Tensor, state: State | None = None, topdown: Tensor | None = None) -> State:
        """One step: ``x`` (B, D), ``state`` (zeros if None), optional ``topdown`` (B, G H) -> the new state."""
        return self.recur(self.input_proj(x), state, topdown)


class RNNCell(RecurrentCell):
    """Elman's simple recurrent unit: ``h' = tanh(W_ih x + b_ih + u + W_hh h + b_hh)`` (Elman 1990).

    Shapes: ``x`` (B, D), ``h`` (B, H) -> ``h'`` (B, H). ``nonlinearity``: ``tanh`` (default) or ``relu``.

    Example:
        >>> cell = RNNCell(3, 4)
        >>> cell(torch.randn(2, 3)).shape
        torch.Size([2, 4])
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose from: tanh, relu")
        super().__init__(input_size, hidden_size, bias=bias)
        self.nonlinearity = nonlinearity

    def recur(self, xp: Tensor, state: State | None = None, topdown: Tensor | None = None) -> Tensor:
        h = self.init_state(xp.shape[0], device=xp.device, dtype=xp.dtype) if state is None else state
        a = self._pre(xp, topdown) + F.linear(h, self.weight_hh, self.bias_hh)
        return torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)


class LSTMCell(RecurrentCell):
    """Long short-term memory with a forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000).

    ``(i, f, g, o) = W_ih x + b_ih + u + W_hh h + b_hh``, ``c' = sigma(f) c + sigma(i) tanh(g)``,
    ``h' = sigma(o) tanh(c')``. No peepholes (Gers & Schmidhuber 2000 added them later; PyTorch has none).

    Shapes: ``x`` (B, D), state ``(h, c)`` each (B, H) -> ``(h', c')``. ``forget_bias`` is added to the forget
    block of ``bias_ih`` at initialisation (0 gives PyTorch's initialisation exactly).

    Example:
        >>> cell = LSTMCell(3, 4)
        >>> h, c = cell(torch.randn(2, 3))
        >>> h.shape, cell.weight_ih.shape
        (torch.Size([2, 4]), torch.Size([16, 3]))
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True, forget_bias: float = 1.0) -> None:
        self.forget_bias = float(forget_bias)
        super().__init__(input_size, hidden_size, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias_ih is not None and self.bias_ih.device.type != "meta" and self.forget_bias:
            with torch.no_grad():
                self.bias_ih[self.hidden_size : 2 * self.hidden_size] += self.forget_bias

    def init_state(
        self, batch: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        z = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return z, z.clone()

    def recur(
        self, xp: Tensor, state: State | None = None, topdown: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        h, c = self.init_state(xp.shape[0], device=xp.device, dtype=xp.dtype) if state is None else state
        i, f, g, o = (self._pre(xp, topdown) + F.linear(h, self.weight_hh, self.bias_hh)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRUCell(RecurrentCell):
    """Gated recurrent unit (Cho et al. 2014), reset gate applied after the recurrent matrix (as PyTorch/cuDNN).

    ``r = sigma(a_r + s_r)``, ``z = sigma(a_z + s_z)``, ``n = tanh(a_n + r * s_n)``, ``h' = (1 - z) n + z h`` with
    ``a = W_ih x + b_ih + u`` and ``s = W_hh h + b_hh`` split into (r, z, n) blocks.

    Shapes: ``x`` (B, D), ``h`` (B, H) -> ``h'`` (B, H).

    Example:
        >>> cell = GRUCell(3, 4)
        >>> cell(torch.randn(2, 3)).shape, cell.weight_hh.shape
        (torch.Size([2, 4]), torch.Size([12, 4]))
    """

    gates = 3

    def recur(self, xp: Tensor, state: State | None = None, topdown: Tensor | None = None) -> Tensor:
        h = self.init_state(xp.shape[0], device=xp.device, dtype=xp.dtype) if state is None else state
        a_r, a_z, a_n = self._pre(xp, topdown).chunk(3, dim=-1)
        s_r, s_z, s_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(a_r + s_r)
        z = torch.sigmoid(a_z + s_z)
        n = torch.tanh(a_n + r * s_n)
        return n + z * (h - n)


CELLS: dict[str, type[RecurrentCell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
