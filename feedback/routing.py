"""Routing among recurrent modules: grouped cells, input attention with a null row, top-k competition,
communication between modules (pairwise or through a shared workspace).

References:

- A. Goyal, A. Lamb, J. Hoffmann, S. Sodhani, S. Levine, Y. Bengio, B. Schölkopf, "Recurrent Independent
  Mechanisms", arXiv 1909.10893, ICLR 2021 (RIMs);
- S. Mittal, A. Lamb, A. Goyal, V. Voleti, M. Shanahan, G. Lajoie, M. Mozer, Y. Bengio, "Learning to combine top-down
  and bottom-up signals in recurrent neural networks with attention over modules", ICML 2020 (BRIMs; the extra
  top-down row is just one more input source here);
- A. Goyal et al., "Coordination among neural modules through a shared global workspace", ICLR 2022
  (arXiv 2103.01197; the ``communication="workspace"`` option).

Written from the equations (reference/methods.md section 5); no code is taken from the unlicensed reference
repositories. One step of a layer of ``K`` modules, each with hidden size ``H`` and state ``h_k`` (and ``c_k`` for the
LSTM), reading ``S`` input sources ``x^1..x^S`` (each (B, D_s) or (B, R_s, D_s) rows):

.. math::

    q_k = W^q_k h_{k,t-1}, \\qquad K_r = W^K_{s(r)} x_r, \\qquad V_r = W^V_{s(r)} x_r \\quad
    (\\text{no biases; the null row } \\varnothing \\text{ has } K_\\varnothing = V_\\varnothing = 0)

    a_k = \\mathrm{softmax}_r\\big([0, q_k K_1^\\top, \\dots, q_k K_R^\\top] / \\sqrt{d_k}\\big), \\qquad
    \\mathrm{read}_k = \\textstyle\\sum_{r \\ge 1} a_{k,r} V_r

    \\mathcal{A}_t = \\text{the } k_A \\text{ modules with the smallest head-averaged } a_{k,\\varnothing}
    \\quad (\\text{softmax first, then rank: the official code's order})

    \\tilde h_k = \\mathrm{cell}_k(\\mathrm{read}_k, h_{k,t-1}) \\;\\; (\\text{its own weights } W_k), \\qquad
    h_{k,t} = \\tilde h_k \\text{ if } k \\in \\mathcal{A}_t \\text{ else } h_{k,t-1} \\;\\; (\\text{same for } c)

    \\text{pairwise communication:}\\; h_{k,t} \\leftarrow h_{k,t} + [k \\in \\mathcal{A}_t]\\,
    \\sigma(G\\,m_k) \\odot \\tanh(F\\,m_k), \\quad m_k = \\mathrm{MHA}(Q_k h_k; \\{K_j h_j, V_j h_j\\}_j)

Every per-module map (``W^q_k``, the cell weights, the communication projections ``Q_k, K_k, V_k``) is a
:class:`GroupLinear`: one ``(K, in, out)`` weight applied with one batched matmul (``torch.bmm``), never a dense
block-diagonal matrix masked on every call (the reference code's choice, about 40x slower than an LSTM: BRIMs #1).

Shapes: hidden states ``(B, K, H)``; null attention ``(B, heads, K)`` (head-averaged: (B, K)); the active mask ``(B, K)`` bool with exactly ``top_k`` True per row.

Choices where paper and code differ (pinned by tests in tests/test_rims.py):

- Null row: zeros through bias-free key/value maps, so its score is exactly 0 and it contributes nothing to the
  read. A zero *input* is a different thing only if the encoder makes it one: the sequence models embed tokens
  (``nn.Embedding``) or use a linear map with a bias (a raw 0 pixel would equal the null row: dido1998 #6).
- Ranking: by the soft-maxed, head-averaged null attention (sarthmit/anirudh9119 code), not by raw scores
  (dido1998; PR #3).
- Communication: 4 heads, ``d_k = d_v = 16`` (RIMs code; the paper's Table 3 says 32: RIMs #8). Queries from the
  active modules only matter (only they are updated); keys/values from all modules (``comm_from="all"``, the
  paper: "active RIMs read from all RIMs") or only the active ones (``comm_from="active"``). The output maps
  ``F, G`` are shared across modules (one ``nn.Linear``). The sparse top-(k+1) attention of the code is omitted
  (a no-op at the code's settings).
- Workspace (``communication="workspace"``): ``M`` slots; the active modules compete to write (the
  ``workspace_topk`` with the largest slot-attention scores write, softmax over them per slot, gated residual slot
  update), then every active module reads all slots (gated residual, as pairwise). A simplification of Goyal et
  al. 2022 (no relational-memory MLP on the slots).

Example:
    >>> import torch
    >>> layer = RIMCell([8], hidden_size=5, num_modules=4, top_k=2)
    >>> state = layer.init_state(3)
    >>> state, mask, null = layer([torch.randn(3, 8)], state)
    >>> state["h"].shape, mask.sum(1).tolist(), null.shape
    (torch.Size([3, 4, 5]), [2, 2, 2], torch.Size([3, 4]))
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "COMMUNICATION",
    "Communication",
    "GroupGRUCell",
    "GroupLSTMCell",
    "GroupLinear",
    "InputAttention",
    "RIMCell",
    "Workspace",
    "detach_rim_state",
    "top_k_mask",
]

COMMUNICATION = ("pairwise", "workspace", "none")
RIMState = dict[str, Tensor]


def _uniform_(p: Tensor, fan: int) -> None:
    bound = 1.0 / math.sqrt(max(fan, 1))
    nn.init.uniform_(p, -bound, bound)


def _group_mm(x: Tensor, weight: Tensor) -> Tensor:
    """``(B, K, I) x (K, I, O) -> (B, K, O)``: one batched matmul over modules."""
    return torch.bmm(x.transpose(0, 1), weight).transpose(0, 1)


class GroupLinear(nn.Module):
    """``K`` independent linear maps applied at once: ``y_k = x_k W_k + b_k``.

    Shapes: ``x`` (B, K, in_features) -> (B, K, out_features); ``weight`` (K, in, out), ``bias`` (K, out) or None.
    Initialisation: ``U(-1/sqrt(in), 1/sqrt(in))`` (``nn.Linear``'s bound).

    Example:
        >>> lin = GroupLinear(3, 2, num_groups=4)
        >>> lin(torch.randn(5, 4, 3)).shape, lin.weight.shape
        (torch.Size([5, 4, 2]), torch.Size([4, 3, 2]))
    """

    def __init__(self, in_features: int, out_features: int, num_groups: int, *, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.num_groups = int(in_features), int(out_features), int(num_groups)
        self.weight = nn.Parameter(torch.empty(self.num_groups, self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.empty(self.num_groups, self.out_features)) if bias else None
        _uniform_(self.weight, self.in_features)
        if self.bias is not None:
            _uniform_(self.bias, self.in_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, num_groups={self.num_groups}, bias={self.bias is not None}"

    def forward(self, x: Tensor) -> Tensor:
        y = _group_mm(x, self.weight)
        return y if self.bias is None else y + self.bias


class _GroupCell(nn.Module):
    """Shared parameters of the grouped cells: ``gates`` blocks of ``H`` pre-activations per module.

    ``weight_ih`` (K, D, G H), ``weight_hh`` (K, H, G H), ``bias_ih``, ``bias_hh`` (K, G H): module ``k``'s slice is
    the transpose of a PyTorch cell's ``weight_ih`` / ``weight_hh`` (same gate order), so weights copy one-to-one.
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_modules: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_modules = int(input_size), int(hidden_size), int(num_modules)
        g = self.gates * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(self.num_modules, self.input_size, g))
        self.weight_hh = nn.Parameter(torch.empty(self.num_modules, self.hidden_size, g))
        self.bias_ih = nn.Parameter(torch.empty(self.num_modules, g))
        self.bias_hh = nn.Parameter(torch.empty(self.num_modules, g))
        for p in self.parameters():
            _uniform_(p, self.hidden_size)  # PyTorch's cell initialisation

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_modules={self.num_modules}"

    def _pre(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return _group_mm(x, self.weight_ih) + self.bias_ih, _group_mm(h, self.weight_hh) + self.bias_hh


class GroupLSTMCell(_GroupCell):
    """``K`` LSTM cells with their own weights, one batched matmul each for input and recurrence.

    Per module (gate order i, f, g, o as ``torch.nn.LSTMCell``): ``(i, f, g, o) = x_k W^{ih}_k + b^{ih}_k + h_k
    W^{hh}_k + b^{hh}_k``, ``c'_k = sigma(f) c_k + sigma(i) tanh(g)``, ``h'_k = sigma(o) tanh(c'_k)``. ``forget_bias``
    is added to the forget block of ``bias_ih`` at initialisation (as :class:`baselines.recurrent_cells.LSTMCell`).

    Shapes: ``x`` (B, K, D), ``(h, c)`` each (B, K, H) -> ``(h', c')``.

    Example:
        >>> cell = GroupLSTMCell(3, 4, num_modules=2)
        >>> h, c = cell(torch.randn(5, 2, 3), (torch.zeros(5, 2, 4), torch.zeros(5, 2, 4)))
        >>> h.shape, cell.weight_ih.shape
        (torch.Size([5, 2, 4]), torch.Size([2, 3, 16]))
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, num_modules: int, *, forget_bias: float = 1.0) -> None:
        super().__init__(input_size, hidden_size, num_modules)
        with torch.no_grad():
            self.bias_ih[:, self.hidden_size : 2 * self.hidden_size] += float(forget_bias)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        a, s = self._pre(x, h)
        i, f, g, o = (a + s).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GroupGRUCell(_GroupCell):
    """``K`` GRU cells with their own weights (reset gate after the recurrent matrix, as ``torch.nn.GRUCell``).

    ``r = sigma(a_r + s_r)``, ``z = sigma(a_z + s_z)``, ``n = tanh(a_n + r s_n)``, ``h' = (1 - z) n + z h`` with
    ``a = x W^{ih} + b^{ih}``, ``s = h W^{hh} + b^{hh}`` per module. Shapes: ``x`` (B, K, D), ``h`` (B, K, H).

    Example:
        >>> GroupGRUCell(3, 4, num_modules=2)(torch.randn(5, 2, 3), torch.zeros(5, 2, 4)).shape
        torch.Size([5, 2, 4])
    """

    gates = 3

    def forward(self, x: Tensor, state: Tensor) -> Tensor:
        a, s = self._pre(x, state)
        a_r, a_z, a_n = a.chunk(3, dim=-1)
        s_r, s_z, s_n = s.chunk(3, dim=-1)
        r = torch.sigmoid(a_r + s_r)
        z = torch.sigmoid(a_z + s_z)
        n = torch.tanh(a_n + r * s_n)
        return n + z * (state - n)


def top_k_mask(null_attention: Tensor, k: int) -> Tensor:
    """The ``k`` modules paying the least attention to the null row: (B, K) float -> (B, K) bool, k True per row.

    Example:
        >>> top_k_mask(torch.tensor([[0.9, 0.1, 0.5, 0.2]]), 2).tolist()
        [[False, True, False, True]]
    """
    if k >= null_attention.shape[-1]:
        return torch.ones_like(null_attention, dtype=torch.bool)
    idx = null_attention.topk(k, dim=-1, largest=False).indices
    return torch.zeros_like(null_attention, dtype=torch.bool).scatter_(-1, idx, True)


class InputAttention(nn.Module):
    """Per-module attention over ``[null, rows of source 1, ..., rows of source S]`` (module docstring).

    Args:
        source_sizes: feature width ``D_s`` of each input source (each gets its own key and value maps).
        hidden_size: module hidden size ``H`` (the query is ``GroupLinear(H, heads d_k)`` of the module's state).
        num_modules: ``K``.
        key_size, value_size: ``d_k``, ``d_v`` per head.
        heads: attention heads (the read concatenates them: ``heads * d_v`` features per module).
        dropout: dropout on the attention probabilities.

    ``project(s, x)``: keys and values of source ``s`` for any leading shape, ``(..., D_s) -> (..., heads, d)``
    (so a whole sequence can be projected at once). ``forward(h, keys, values)``: ``h`` (B, K, H), keys (B, R, heads,
    d_k), values (B, R, heads, d_v) -> ``(read (B, K, heads d_v), null (B, heads, K))``: the read and the
    attention each head pays to the null row.

    Example:
        >>> att = InputAttention([6], hidden_size=4, num_modules=3, key_size=8, value_size=5, heads=2)
        >>> k, v = att.project(0, torch.randn(2, 1, 6))
        >>> read, null = att(torch.randn(2, 3, 4), k, v)
        >>> read.shape, null.shape
        (torch.Size([2, 3, 10]), torch.Size([2, 2, 3]))
    """

    def __init__(
        self,
        source_sizes: Sequence[int],
        *,
        hidden_size: int,
        num_modules: int,
        key_size: int = 64,
        value_size: int = 64,
        heads: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads, self.key_size, self.value_size = int(heads), int(key_size), int(value_size)
        self.query = GroupLinear(hidden_size, self.heads * self.key_size, num_modules, bias=False)
        self.keys = nn.ModuleList(nn.Linear(d, self.heads * self.key_size, bias=False) for d in source_sizes)
        self.values = nn.ModuleList(nn.Linear(d, self.heads * self.value_size, bias=False) for d in source_sizes)
        self.drop = nn.Dropout(float(dropout))

    @property
    def read_size(self) -> int:
        return self.heads * self.value_size

    def project(self, source: int, x: Tensor) -> tuple[Tensor, Tensor]:
        k = self.keys[source](x)
        v = self.values[source](x)
        return k.unflatten(-1, (self.heads, self.key_size)), v.unflatten(-1, (self.heads, self.value_size))

    def forward(self, h: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        q = self.query(h).unflatten(-1, (self.heads, self.key_size))  # (B, K, heads, dk)
        scale = 1.0 / math.sqrt(self.key_size)
        if keys.shape[1] == 1 and not (self.training and self.drop.p > 0):
            # one input row: softmax([0, s]) = [1 - sigmoid(s), sigmoid(s)] (same values, fewer kernels per step)
            p_in = torch.sigmoid((q * keys).sum(-1) * scale)  # (B, K, heads)
            read = p_in.unsqueeze(-1) * values  # values (B, 1, heads, dv) broadcast over modules
            return read.flatten(2), (1.0 - p_in).transpose(1, 2)
        scores = torch.einsum("bkhd,brhd->bhkr", q, keys) * scale
        scores = F.pad(scores, (1, 0))  # the null row's score: exactly 0
        probs = torch.softmax(scores, dim=-1)
        read = torch.einsum("bhkr,brhd->bkhd", self.drop(probs)[..., 1:], values)
        return read.flatten(2), probs[..., 0]


class Communication(nn.Module):
    """Multi-head attention among modules with a gated residual write into the active ones (module docstring).

    ``h_k <- h_k + [k active] sigmoid(G m_k) * tanh(F m_k)``, ``m_k = sum_j softmax_j(q_k . k_j / sqrt(d_k)) v_j``
    over modules ``j`` (all, or active only with ``comm_from="active"``); ``q, k, v`` per module
    (:class:`GroupLinear`), ``F, G`` shared. Shapes: ``h`` (B, K, H), ``mask`` (B, K) bool -> (B, K, H).

    Example:
        >>> comm = Communication(hidden_size=4, num_modules=3)
        >>> h = torch.randn(2, 3, 4)
        >>> mask = torch.tensor([[True, False, True], [False, True, True]])
        >>> out = comm(h, mask)
        >>> bool((out[0, 1] == h[0, 1]).all()), out.shape
        (True, torch.Size([2, 3, 4]))
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        num_modules: int,
        heads: int = 4,
        key_size: int = 16,
        value_size: int = 16,
        dropout: float = 0.0,
        comm_from: str = "all",
    ) -> None:
        super().__init__()
        if comm_from not in ("all", "active"):
            raise ValueError(f"comm_from must be one of: all, active (got {comm_from!r})")
        self.heads, self.key_size, self.value_size, self.comm_from = int(heads), int(key_size), int(value_size), comm_from
        self.qkv = GroupLinear(hidden_size, self.heads * (2 * self.key_size + self.value_size), num_modules, bias=False)
        self.out = nn.Linear(self.heads * self.value_size, 2 * hidden_size)
        self.drop = nn.Dropout(float(dropout))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        hk, dk, dv = self.heads, self.key_size, self.value_size
        q, k, v = self.qkv(h).split((hk * dk, hk * dk, hk * dv), dim=-1)
        q, k, v = q.unflatten(-1, (hk, dk)), k.unflatten(-1, (hk, dk)), v.unflatten(-1, (hk, dv))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dk)
        if self.comm_from == "active":
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        probs = self.drop(torch.softmax(scores, dim=-1))
        m = torch.einsum("bhqk,bkhd->bqhd", probs, v).flatten(2)
        f, g = self.out(m).chunk(2, dim=-1)
        return torch.where(mask.unsqueeze(-1), h + torch.sigmoid(g) * torch.tanh(f), h)


class Workspace(nn.Module):
    """A shared workspace of ``M`` slots: active modules compete to write, then read it back (Goyal et al. 2022).

    Write: slot queries ``Q^w s_m``, module keys/values ``K^w_k h_k``, ``V^w_k h_k``; among the active modules the
    ``write_topk`` with the largest (max over slots) score write; per slot a softmax over the writers gives
    ``u_m``, and ``s_m <- s_m + sigmoid(G^w u_m) * tanh(F^w u_m)``. Broadcast: every active module attends over the
    slots (``Q^r_k h_k``, ``K^r s_m``, ``V^r s_m``) and adds ``sigmoid(G^r r_k) * tanh(F^r r_k)`` to its state.

    State: the slots ``(B, M, S)``, initialised from a learned ``(M, S)`` parameter (:meth:`init_state`).
    Shapes: ``forward(h (B, K, H), mask (B, K), slots (B, M, S)) -> (h', slots')``.

    Example:
        >>> ws = Workspace(hidden_size=4, num_modules=3, slots=2, slot_size=6, write_topk=1)
        >>> h, s = ws(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), ws.init_state(2))
        >>> h.shape, s.shape
        (torch.Size([2, 3, 4]), torch.Size([2, 2, 6]))
    """

    def __init__(
        self, *, hidden_size: int, num_modules: int, slots: int = 2, slot_size: int = 32, key_size: int = 16,
        write_topk: int = 0,
    ) -> None:
        super().__init__()
        self.slots, self.slot_size, self.key_size = int(slots), int(slot_size), int(key_size)
        self.write_topk = int(write_topk)
        self.init_slots = nn.Parameter(torch.randn(self.slots, self.slot_size) / math.sqrt(self.slot_size))
        self.write_q = nn.Linear(self.slot_size, self.key_size, bias=False)
        self.write_kv = GroupLinear(hidden_size, self.key_size + self.slot_size, num_modules, bias=False)
        self.write_out = nn.Linear(self.slot_size, 2 * self.slot_size)
        self.read_q = GroupLinear(hidden_size, self.key_size, num_modules, bias=False)
        self.read_kv = nn.Linear(self.slot_size, self.key_size + hidden_size, bias=False)
        self.read_out = nn.Linear(hidden_size, 2 * hidden_size)

    def init_state(self, batch: int) -> Tensor:
        return self.init_slots.unsqueeze(0).expand(batch, -1, -1)

    def forward(self, h: Tensor, mask: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
        scale = 1.0 / math.sqrt(self.key_size)
        k, v = self.write_kv(h).split((self.key_size, self.slot_size), dim=-1)
        scores = torch.einsum("bmd,bkd->bmk", self.write_q(slots), k) * scale
        writers = mask
        if 0 < self.write_topk < h.shape[1]:
            best = scores.detach().amax(dim=1).masked_fill(~mask, float("-inf"))
            idx = best.topk(min(self.write_topk, h.shape[1]), dim=-1).indices
            writers = mask & torch.zeros_like(mask).scatter_(-1, idx, True)
        u = torch.softmax(scores.masked_fill(~writers[:, None, :], float("-inf")), dim=-1) @ v
        f, g = self.write_out(u).chunk(2, dim=-1)
        slots = slots + torch.sigmoid(g) * torch.tanh(f)
        rk, rv = self.read_kv(slots).split((self.key_size, h.shape[-1]), dim=-1)
        r = torch.softmax(torch.einsum("bkd,bmd->bkm", self.read_q(h), rk) * scale, dim=-1) @ rv
        f, g = self.read_out(r).chunk(2, dim=-1)
        return torch.where(mask.unsqueeze(-1), h + torch.sigmoid(g) * torch.tanh(f), h), slots


def detach_rim_state(state: RIMState) -> RIMState:
    """A layer state cut from the graph."""
    return {name: t.detach() for name, t in state.items()}


class RIMCell(nn.Module):
    """One layer of ``K`` recurrent independent mechanisms: read, compete, update, communicate (module docstring).

    Args:
        source_sizes: width of each input source (RIMs: ``[D]``; BRIMs: ``[D_below, D_above]``).
        hidden_size: units per module ``H``.
        num_modules: ``K``.
        top_k: active modules per step ``k_A`` (``1 <= k_A <= K``).
        cell: ``lstm`` or ``gru`` (grouped: :class:`GroupLSTMCell`, :class:`GroupGRUCell`).
        input_heads, input_key_size, input_value_size, input_dropout: :class:`InputAttention`'s options.
        communication: ``pairwise`` (:class:`Communication`), ``workspace`` (:class:`Workspace`) or ``none``.
        comm_heads, comm_key_size, comm_value_size, comm_dropout, comm_from: :class:`Communication`'s options.
        workspace_slots, workspace_slot_size, workspace_topk: :class:`Workspace`'s options (0 slot size: ``H``;
            0 top-k: all active modules write).
        forget_bias: LSTM only, added to the forget-gate bias at initialisation.

    Submodules (their names are what :meth:`feedback.rims.MetaRIMs.lr_scales` keys on): ``input_attn``, ``cell``,
    ``comm`` (None with ``communication="none"``).

    ``forward(sources, state, kv=None) -> (state', mask (B, K) bool, null (B, K))``: ``sources`` is one tensor per
    source ((B, D_s) or (B, R_s, D_s) rows; ``None`` leaves a source out this step), or ``kv = (keys, values)``
    already projected (:meth:`project`). ``state`` is ``{"h", "c" (LSTM), "slots" (workspace)}``; ``null`` is the
    head-averaged attention to the null row.
    """

    def __init__(
        self,
        source_sizes: Sequence[int],
        *,
        hidden_size: int,
        num_modules: int,
        top_k: int,
        cell: str = "lstm",
        input_heads: int = 1,
        input_key_size: int = 64,
        input_value_size: int = 64,
        input_dropout: float = 0.0,
        communication: str = "pairwise",
        comm_heads: int = 4,
        comm_key_size: int = 16,
        comm_value_size: int = 16,
        comm_dropout: float = 0.0,
        comm_from: str = "all",
        workspace_slots: int = 2,
        workspace_slot_size: int = 0,
        workspace_topk: int = 0,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"unknown cell {cell!r}; choose from: lstm, gru")
        if communication not in COMMUNICATION:
            raise ValueError(f"unknown communication {communication!r}; choose from: {', '.join(COMMUNICATION)}")
        for name, value in (("hidden_size", hidden_size), ("num_modules", num_modules), ("top_k", top_k)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if top_k > num_modules:
            raise ValueError(f"top_k must be <= num_modules ({num_modules}), got {top_k}")
        self.hidden_size, self.num_modules, self.top_k = int(hidden_size), int(num_modules), int(top_k)
        self.cell_type, self.communication = cell, communication
        self.source_sizes = [int(d) for d in source_sizes]
        self.input_attn = InputAttention(self.source_sizes, hidden_size=hidden_size, num_modules=num_modules,
                                         key_size=input_key_size, value_size=input_value_size, heads=input_heads,
                                         dropout=input_dropout)
        d = self.input_attn.read_size
        if cell == "lstm":
            self.cell: nn.Module = GroupLSTMCell(d, hidden_size, num_modules, forget_bias=forget_bias)
        else:
            self.cell = GroupGRUCell(d, hidden_size, num_modules)
        self.comm: nn.Module | None = None
        if communication == "pairwise":
            self.comm = Communication(hidden_size=hidden_size, num_modules=num_modules, heads=comm_heads,
                                      key_size=comm_key_size, value_size=comm_value_size, dropout=comm_dropout,
                                      comm_from=comm_from)
        elif communication == "workspace":
            self.comm = Workspace(hidden_size=hidden_size, num_modules=num_modules, slots=workspace_slots,
                                  slot_size=workspace_slot_size or hidden_size, key_size=comm_key_size,
                                  write_topk=workspace_topk)

    @property
    def output_size(self) -> int:
        return self.num_modules * self.hidden_size

    def init_state(self, batch: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> RIMState:
        """Zeros ``(B, K, H)`` for ``h`` (and ``c``), and the learned initial slots for a workspace."""
        z = torch.zeros(batch, self.num_modules, self.hidden_size, device=device, dtype=dtype)
        state = {"h": z}
        if self.cell_type == "lstm":
            state["c"] = z.clone()
        if isinstance(self.comm, Workspace):
            state["slots"] = self.comm.init_state(batch)
        return state

    def project(self, sources: Sequence[Tensor | None]) -> tuple[Tensor, Tensor]:
        """Keys and values of the present sources, concatenated along the rows: (B, R, heads, d)."""
        ks, vs = [], []
        for s, x in enumerate(sources):
            if x is None:
                continue
            k, v = self.input_attn.project(s, x if x.dim() == 3 else x.unsqueeze(1))
            ks.append(k)
            vs.append(v)
        if not ks:
            raise ValueError("at least one input source must be given")
        return (torch.cat(ks, 1), torch.cat(vs, 1)) if len(ks) > 1 else (ks[0], vs[0])

    def forward(
        self, sources: Sequence[Tensor | None] | None, state: RIMState,
        kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[RIMState, Tensor, Tensor]:
        keys, values = kv if kv is not None else self.project(sources or [])
        h = state["h"]
        read, null = self.input_attn(h, keys, values)
        null = null.mean(dim=1)  # (B, K): head-averaged null attention
        mask = top_k_mask(null.detach(), self.top_k)
        m = mask.unsqueeze(-1)
        new: RIMState = {}
        if self.cell_type == "lstm":
            h_new, c_new = self.cell(read, (h, state["c"]))
            new["c"] = torch.where(m, c_new, state["c"])
        else:
            h_new = self.cell(read, h)
        h_new = torch.where(m, h_new, h)
        if isinstance(self.comm, Workspace):
            h_new, new["slots"] = self.comm(h_new, mask, state["slots"])
        elif self.comm is not None:
            h_new = self.comm(h_new, mask)
        new["h"] = h_new
        return new, mask, null
