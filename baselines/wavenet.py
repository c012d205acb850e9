"""WaveNet (van den Oord et al. 2016): dilated causal convolutions over mu-law samples, with fast cached generation.

References: A. van den Oord, S. Dieleman, H. Zen, K. Simonyan, O. Vinyals, A. Graves, N. Kalchbrenner, A. Senior,
K. Kavukcuoglu, "WaveNet: A Generative Model for Raw Audio", arXiv:1609.03499, 2016. T. L. Paine, P. Khorrami,
S. Chang, Y. Zhang, P. Ramachandran, M. A. Hasegawa-Johnson, T. S. Huang, "Fast Wavenet Generation Algorithm",
arXiv:1611.09482, 2016 (the per-layer queues of :meth:`WaveNet.generate`).

The model is autoregressive over 8-bit mu-law classes (eq. 1 and section 2.2):

.. math::

    p(x) = \\prod_t p(x_t \\mid x_1, \\dots, x_{t-1}), \\qquad
    f(x) = \\mathrm{sign}(x) \\frac{\\ln(1 + \\mu |x|)}{\\ln(1 + \\mu)}, \\; \\mu = 255

Every residual layer ``k`` (dilation ``d_k``) applies a dilated causal convolution of width 2 and the gated unit
(eq. 2), then a 1x1 residual and a 1x1 skip convolution (Fig. 4):

.. math::

    z = \\tanh(W_{f,k} * h) \\odot \\sigma(W_{g,k} * h), \\qquad h \\leftarrow h + V_k z, \\qquad
    s \\leftarrow s + S_k z, \\qquad
    \\mathrm{logits} = U_2\\, \\mathrm{ReLU}(U_1\\, \\mathrm{ReLU}(s))

where ``(W * h)_t = W_0 h_{t-d} + W_1 h_t + b`` (zeros before the start). The input classes enter one-hot through
an initial causal convolution of width 2 (``embed``), so the output at ``t`` sees the inputs ``t - R + 1 .. t`` with
the receptive field ``R = 2 + blocks * sum(dilations)``.

Shapes: ``x`` int64 ``(B, T)`` mu-law classes in ``[0, num_classes)`` -> logits ``(B, T, num_classes)``; the logits at
``t`` predict ``x_{t+1}`` (the ``tokens`` task: inputs ``x[:, :-1]``, targets ``x[:, 1:]``).

Fast generation (Paine et al.): every layer keeps a queue of its last ``d_k`` inputs, so a new sample costs one
width-2 "convolution" (two matrix products) per layer: ``O(layers)`` instead of re-running the whole stack over the
receptive field. :meth:`WaveNet.generate` (queues) and :meth:`WaveNet.generate_naive` (full re-run) give the same
samples; the tests check it.

Configurations (the paper gives no widths):

- ``wavenet``: 5 blocks of dilations 1, 2, ..., 512 (50 layers), 32 residual and dilation channels, 512 skip
  channels, 256 classes (the layout of ibab/tensorflow-wavenet's defaults); receptive field 5,117 samples
  (0.32 s at 16 kHz). 1,514,944 parameters: ibab's count, 1,516,000, includes the last layer's residual 1x1
  convolution, whose output nothing reads; it is left out here.
- ``wavenet_tiny``: 2 blocks of dilations 1..32 (12 layers), 32/32/64 channels; receptive field 128.

Deviations: no global or local conditioning (unconditional model); the skip path starts from the residual layers
only (not the embedding); biases everywhere; PyTorch's default initialisation. The initial convolution on one-hot
input is computed in ``forward`` as a lookup of its weight columns (the same sum, without building one-hots; a test
checks it against the convolution).

Example:
    >>> import torch
    >>> net = wavenet_tiny()
    >>> net.receptive_field, sum(p.numel() for p in net.parameters())
    (128, 124096)
    >>> x = torch.randint(0, 256, (2, 50))
    >>> net(x).shape
    torch.Size([2, 50, 256])
    >>> out = net.eval().generate(x[:, :10], steps=5, greedy=True)
    >>> out.shape, bool((out[:, :10] == x[:, :10]).all())
    (torch.Size([2, 15]), True)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model

__all__ = ["WaveNet", "mu_law_decode", "mu_law_encode", "wavenet", "wavenet_tiny"]


def mu_law_encode(x: Tensor, num_classes: int = 256) -> Tensor:
    """Mu-law companding (eq. in section 2.2) and quantisation of ``x`` in ``[-1, 1]`` to int64 classes.

    ``q = floor((f(x) + 1) / 2 * mu + 1/2)`` with ``mu = num_classes - 1``: class 0 is -1, class ``mu`` is +1.

    Example:
        >>> mu_law_encode(torch.tensor([-1.0, 0.0, 1.0])).tolist()
        [0, 128, 255]
    """
    mu = num_classes - 1
    x = x.clamp(-1.0, 1.0)
    f = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return torch.floor((f + 1.0) / 2.0 * mu + 0.5).long()


def mu_law_decode(q: Tensor, num_classes: int = 256) -> Tensor:
    """The inverse of :func:`mu_law_encode` at the class centres: ``x = sign(y) ((1 + mu)^|y| - 1) / mu``.

    Example:
        >>> mu_law_decode(torch.tensor([0, 255])).tolist()
        [-1.0, 1.0]
    """
    mu = num_classes - 1
    y = 2.0 * q.double() / mu - 1.0
    return (torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu).float()


class _CausalConv(nn.Conv1d):
    """Width-2 dilated causal convolution: ``out_t = W_0 in_{t-d} + W_1 in_t + b`` (zeros before the start)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C', T)
        return super().forward(F.pad(x, (self.dilation[0], 0)))

    def step(self, past: Tensor, now: Tensor) -> Tensor:
        """One output from ``past = in_{t-d}`` and ``now = in_t``, both ``(B, C)``: the same sum as :meth:`forward`."""
        return F.linear(past, self.weight[:, :, 0]) + F.linear(now, self.weight[:, :, 1], self.bias)


class WaveNet(nn.Module):
    """Stack of gated residual layers with dilations ``dilations * blocks`` (see the module docstring).

    Attributes: ``embed`` (the initial causal convolution on one-hot input), ``filters``, ``gates``, ``residuals``,
    ``skips`` (one per layer; no residual after the last layer), ``out1``, ``out2`` (the 1x1 output convolutions),
    ``dilations`` (one per layer), ``receptive_field``, ``num_classes``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 256,
        in_chans: int = 256,
        dilations: Sequence[int] = tuple(2**i for i in range(10)),
        blocks: int = 5,
        residual_channels: int = 32,
        dilation_channels: int = 32,
        skip_channels: int = 512,
    ) -> None:
        super().__init__()
        if blocks < 1 or not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"need blocks >= 1 and positive dilations, got blocks={blocks}, dilations={dilations}")
        self.num_classes = int(num_classes)
        self.in_chans = int(in_chans)
        self.dilations: list[int] = [int(d) for d in dilations] * int(blocks)
        self.receptive_field = 2 + sum(self.dilations)
        r, g, s = int(residual_channels), int(dilation_channels), int(skip_channels)
        self.embed = _CausalConv(self.in_chans, r, 1)
        self.filters = nn.ModuleList(_CausalConv(r, g, d) for d in self.dilations)
        self.gates = nn.ModuleList(_CausalConv(r, g, d) for d in self.dilations)
        self.residuals = nn.ModuleList(nn.Conv1d(g, r, 1) for _ in self.dilations[:-1])
        self.skips = nn.ModuleList(nn.Conv1d(g, s, 1) for _ in self.dilations)
        self.out1 = nn.Conv1d(s, s, 1)
        self.out2 = nn.Conv1d(s, self.num_classes, 1)

    def _one_hot(self, x: Tensor) -> Tensor:
        if x.dtype not in (torch.int64, torch.int32) or x.dim() != 2:
            raise ValueError(f"WaveNet takes int64 (B, T) mu-law classes, got {x.dtype} {tuple(x.shape)}")
        return F.one_hot(x.long(), self.in_chans).to(self.embed.weight.dtype).transpose(1, 2)  # (B, C, T)

    def _stack(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Run the residual layers on ``h`` ``(B, r, T)``: the logits ``(B, K, T)`` and every layer's input."""
        inputs, skip = [], 0
        for k in range(len(self.dilations)):
            inputs.append(h)
            z = torch.tanh(self.filters[k](h)) * torch.sigmoid(self.gates[k](h))
            skip = skip + self.skips[k](z)
            if k < len(self.residuals):
                h = h + self.residuals[k](z)
        return self.out2(F.relu(self.out1(F.relu(skip)))), inputs

    def _embed(self, x: Tensor) -> Tensor:
        """``embed`` on one-hot ``x`` ``(B, T)`` as a lookup of its weight columns (the same sum, without one-hots)."""
        if x.dtype not in (torch.int64, torch.int32) or x.dim() != 2:
            raise ValueError(f"WaveNet takes int64 (B, T) mu-law classes, got {x.dtype} {tuple(x.shape)}")
        w = self.embed.weight  # (r, C, 2)
        now = F.embedding(x.long(), w[:, :, 1].t())  # (B, T, r)
        past = F.pad(F.embedding(x.long(), w[:, :, 0].t())[:, :-1], (0, 0, 1, 0))
        return (now + past + self.embed.bias).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, T, num_classes)`` for int64 classes ``x`` ``(B, T)``; position ``t`` predicts ``x_{t+1}``."""
        logits, _ = self._stack(self._embed(x))
        return logits.transpose(1, 2)

    @staticmethod
    def _draw(logits: Tensor, greedy: bool, temperature: float, generator: torch.Generator | None) -> Tensor:
        if greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits.double() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    @torch.no_grad()
    def generate_naive(
        self,
        prime: Tensor,
        *,
        steps: int,
        greedy: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample ``steps`` classes after ``prime`` ``(B, T0)`` by re-running the full stack each step (the slow way).

        Only the last ``receptive_field`` samples are fed each step (older ones cannot reach the output).
        Returns ``(B, T0 + steps)`` (and the logits ``(B, steps, K)`` each draw used if ``return_logits``).
        """
        seq, all_logits = prime.long(), []
        window = self.receptive_field
        for _ in range(int(steps)):
            logits = self.forward(seq[:, -window:])[:, -1]
            all_logits.append(logits)
            seq = torch.cat([seq, self._draw(logits, greedy, temperature, generator)[:, None]], dim=1)
        out_logits = torch.stack(all_logits, 1) if all_logits else prime.new_zeros(prime.shape[0], 0).float()
        return (seq, out_logits) if return_logits else seq

    @torch.no_grad()
    def generate(
        self,
        prime: Tensor,
        *,
        steps: int,
        greedy: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample ``steps`` classes after ``prime`` ``(B, T0)``, ``T0 >= 1``, with per-layer queues (Paine et al.).

        The prime runs once through the full stack; each layer's queue is filled with its last ``d_k`` inputs
        (zeros where the prime is shorter, as the convolution's padding). Each new sample then pushes one vector
        through every layer: ``out = W_0 queue.pop() + W_1 now + b``. Same arguments and result as
        :meth:`generate_naive`.
        """
        prime = prime.long()
        if prime.dim() != 2 or prime.shape[1] < 1:
            raise ValueError(f"prime must be (B, T0) with T0 >= 1, got {tuple(prime.shape)}")
        x = self._one_hot(prime)
        logits, layer_inputs = self._stack(self.embed(x))

        def queue(seq: Tensor, d: int) -> Tensor:  # (B, C, T) -> the last d columns, zero-padded: (B, C, d)
            return F.pad(seq, (d, 0))[:, :, -d:].clone()

        # queues[k][:, :, pos[k]] holds the layer's input d_k steps ago; queues[-1] is the embedding's (d = 1).
        queues = [queue(inp, d) for inp, d in zip(layer_inputs, self.dilations)] + [x[:, :, -1:].clone()]
        pos = [0] * len(queues)
        last_logits = logits[:, :, -1]
        seq, all_logits = [prime], []
        for _ in range(int(steps)):
            all_logits.append(last_logits)
            sample = self._draw(last_logits, greedy, temperature, generator)
            seq.append(sample[:, None])
            now = F.one_hot(sample, self.in_chans).to(x.dtype)
            h = self.embed.step(queues[-1][:, :, 0], now)
            queues[-1][:, :, 0] = now
            skip = 0
            for k, d in enumerate(self.dilations):
                past = queues[k][:, :, pos[k]]
                z = torch.tanh(self.filters[k].step(past, h)) * torch.sigmoid(self.gates[k].step(past, h))
                queues[k][:, :, pos[k]] = h
                pos[k] = (pos[k] + 1) % d
                skip = skip + F.linear(z, self.skips[k].weight[:, :, 0], self.skips[k].bias)
                if k < len(self.residuals):
                    h = h + F.linear(z, self.residuals[k].weight[:, :, 0], self.residuals[k].bias)
            hidden = F.relu(F.linear(F.relu(skip), self.out1.weight[:, :, 0], self.out1.bias))
            last_logits = F.linear(hidden, self.out2.weight[:, :, 0], self.out2.bias)
        out = torch.cat(seq, 1)
        out_logits = torch.stack(all_logits, 1) if all_logits else logits.new_zeros(prime.shape[0], 0, self.num_classes)
        return (out, out_logits) if return_logits else out


def _check_classes(num_classes: int, in_chans: int) -> None:
    if int(num_classes) < 2 or int(in_chans) < 2:
        raise ValueError(
            f"WaveNet needs num_classes >= 2 output classes and in_chans >= 2 input classes (the mu-law vocabulary, "
            f"256), got num_classes={num_classes}, in_chans={in_chans}"
        )


@register_model(
    family="wavenet",
    source="hand-written (paper)",
    paper="van den Oord et al. 2016; Paine et al. 2016",
    staged=False,
    small={"blocks": 1, "dilations": (1, 2, 4, 8), "skip_channels": 64},
)
def wavenet(
    *,
    num_classes: int = 256,
    in_chans: int = 256,
    dilations: Sequence[int] = tuple(2**i for i in range(10)),
    blocks: int = 5,
    residual_channels: int = 32,
    dilation_channels: int = 32,
    skip_channels: int = 512,
) -> WaveNet:
    """WaveNet with 5 blocks of dilations 1..512 and 32/32/512 channels; receptive field 5,117 samples.

    Args:
        num_classes: output classes (256 mu-law levels).
        in_chans: input vocabulary (the one-hot width; 256).
        dilations: one block's dilations; the stack repeats them ``blocks`` times.
        blocks: repeats of ``dilations``.
        residual_channels, dilation_channels, skip_channels: the widths of the residual stream, of the gated unit
            and of the skip sum.

    Example:
        >>> net = wavenet()
        >>> net.receptive_field, len(net.dilations), sum(p.numel() for p in net.parameters())
        (5117, 50, 1514944)
    """
    _check_classes(num_classes, in_chans)
    return WaveNet(
        num_classes=num_classes,
        in_chans=in_chans,
        dilations=dilations,
        blocks=blocks,
        residual_channels=residual_channels,
        dilation_channels=dilation_channels,
        skip_channels=skip_channels,
    )


@register_model(family="wavenet", source="hand-written (paper)", paper="van den Oord et al. 2016", staged=False)
def wavenet_tiny(
    *,
    num_classes: int = 256,
    in_chans: int = 256,
    dilations: Sequence[int] = (1, 2, 4, 8, 16, 32),
    blocks: int = 2,
    residual_channels: int = 32,
    dilation_channels: int = 32,
    skip_channels: int = 64,
) -> WaveNet:
    """A small WaveNet for CPU runs: 2 blocks of dilations 1..32, 32/32/64 channels; receptive field 128."""
    _check_classes(num_classes, in_chans)
    return WaveNet(
        num_classes=num_classes,
        in_chans=in_chans,
        dilations=dilations,
        blocks=blocks,
        residual_channels=residual_channels,
        dilation_channels=dilation_channels,
        skip_channels=skip_channels,
    )
