r"""``latents``: a Perceiver-style latent array that reads every stage and writes back to every stage input.

Source. Jaegle, Gimeno, Brock, Zisserman, Vinyals, Carreira 2021, "Perceiver: General Perception with Iterative
Attention", ICML, arXiv 2103.03206 (the latent array, cross-attention from latents to inputs, the latent
self-attention block, Fourier position features, weights shared across repeats); the write-back by cross-attention
from output queries to the latents is Perceiver IO's decoder (Jaegle et al. 2022, "Perceiver IO", ICLR, arXiv
2107.14795). Re-implemented from the equations in ``reference/methods.md`` section 6.

The Perceiver re-reads its input conditioned on its latent state: the latents are the top-down analogue. Here the
input it reads is what the backbone computed at step ``t`` (all stage outputs), and what it writes is a top-down
signal for every stage input at step ``t + 1``. With ``z^{(t)}`` the latent array (N, D), ``y_j^{(t)}`` stage
``j``'s output as ``M_j`` tokens (positions of a map, one token for a vector, the tokens of a ViT) and ``P_j`` the
Fourier position features of a map (none otherwise, concatenated to the channels as in the Perceiver):

.. math::

    e_j &= E_j\big[\,y_j^{(t)} \,\Vert\, P_j\,\big] + s_j \qquad (\text{per-stage embedding } E_j,
        \text{ learned stage embedding } s_j),\\
    z &\leftarrow z^{(t-1)} + \mathrm{XAttn}\big(z, [e_0; \dots; e_{L-1}]\big),\quad z \leftarrow z + \mathrm{MLP}(z)
        \qquad (\text{read, bottom-up}),\\
    z^{(t)} &= z + \mathrm{SelfAttn}(z),\quad z^{(t)} \leftarrow z^{(t)} + \mathrm{MLP}(z^{(t)})
        \qquad (\text{process}),\\
    \tilde x_i^{(t+1)} &= x_i^{(t+1)} + W_i\,\mathrm{XAttn}_i\big(Q_i[\,x_i^{(t+1)} \Vert P_i\,],\; z^{(t)}\big)
        \qquad (\text{write, top-down}),

where ``XAttn(q, kv) = softmax(LN(q) W_q (LN(kv) W_k)^T / sqrt(d)) LN(kv) W_v`` (then an output projection;
:class:`~feedback._attention.CrossAttention`), ``z^{(-1)}`` is the learned initial array and ``x_i^{(t+1)}`` the
bottom-up input of stage ``i`` at step ``t + 1``: every position of a stage input queries the latents with its own
content and position (Perceiver IO's decoder queries). All weights are shared across steps (the Perceiver shares
them across all repeats but the first; here also the first: one module, any number of steps). The latent state is
returned, never stored: nothing leaks between batches. ``steps=1`` never calls the kind: it is the backbone.

Initialisation: the writes' output projections ``W_i`` start small (``write_init``, std 0.01; not zero, so
gradients reach every write parameter), as an O(1) write into every stage input at step 1 stopped LeNet-5 from
learning at all in a first run of ``routing_ablation`` (6.2 % accuracy, a constant prediction, on both seeds).

Deviations: one latent block (one self-attention layer) per step; linear frequency spacing as the official code
(the paper says log-linear); the write is added to the bottom-up input.

Parameters (``D`` = ``dim``, ``p`` = ``2 (2 bands + 1)`` position channels of a map): ``N D + L D`` (latents,
stage embeddings), per stage ``(C_j + p) D + D`` (read embedding) and ``(C_i + p) D + D + 4 D^2 + 4 D + C_i (D + 1)``
(write), and ``(4 D^2 + ...)`` for the read, the self-attention and two MLPs, independent of the number of steps.
Compute per step: ``O(N M D)`` with ``M`` all stage positions (read) plus ``O(N M_in D)`` (write).

Shapes: ``feats[j]`` (B, C_j, H_j, W_j), (B, N_j, D_j) or (B, C_j) -> ``topdown[i]`` is the latent array
(B, N, D) for every stage (its :meth:`combine` writes it into stage ``i``'s input); the state is the same array.

Example:
    >>> import torch, torch.nn as nn
    >>> from feedback.core import FeedbackNet
    >>> class Toy(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.input_size = nn.Conv2d(1, 4, 3, padding=1), (1, 16, 16)
    ...         self.stages = nn.ModuleList([nn.Conv2d(4, 8, 3, 2, 1), nn.Sequential(nn.Flatten(), nn.Linear(512, 12))])
    ...         self.head = nn.Linear(12, 10)
    >>> net = FeedbackNet(Toy(), "latents", steps=3, feedback_kwargs={"num_latents": 4, "dim": 16})
    >>> out = net(torch.randn(2, 1, 16, 16))
    >>> out.logits.shape, out.state.shape  # the latent array after the last read
    (torch.Size([2, 10]), torch.Size([2, 4, 16]))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._attention import CrossAttention, channels, fourier_positions, from_tokens, layout, to_tokens
from .core import Feedback, StageShapes, register_feedback

__all__ = ["LatentsFeedback"]


def _mlp(dim: int, ratio: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


@register_feedback("latents")
class LatentsFeedback(Feedback):
    """A latent array (N, D) that reads all stage outputs, processes itself and writes to every stage input.

    Args:
        shapes: the backbone's stage shapes (maps, vectors or tokens; any number of stages).
        num_latents: N, the number of latents.
        dim: D, their width (and the attention width).
        heads: heads of the latent self-attention (the cross-attentions use one head, as the Perceiver).
        bands: Fourier frequency bands per axis for map positions.
        mlp_ratio: hidden width of the MLPs, in multiples of D.
        write_init: standard deviation of the writes' output projections at initialisation (biases start at 0).

    Attributes:
        latents: the learned initial array (N, D).
        readers / writers: per-stage embeddings (read) and write cross-attentions.
    """

    def __init__(
        self,
        *,
        shapes: StageShapes,
        num_latents: int = 8,
        dim: int = 32,
        heads: int = 2,
        bands: int = 4,
        mlp_ratio: int = 2,
        write_init: float = 0.01,
    ) -> None:
        super().__init__(shapes=shapes)
        for name, v in (("num_latents", num_latents), ("dim", dim), ("heads", heads), ("bands", bands),
                        ("mlp_ratio", mlp_ratio)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        n = shapes.num_stages
        self.num_latents, self.dim, self.bands = num_latents, dim, bands
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.stage_embed = nn.Parameter(torch.randn(n, dim) * 0.02)
        self._pos_names: dict[tuple[int, ...], str] = {}
        for s in shapes.inputs + shapes.outputs:
            if layout(s) == "map" and s[1:] not in self._pos_names:
                name = f"pos_{s[1]}x{s[2]}"
                self._pos_names[s[1:]] = name
                self.register_buffer(name, fourier_positions(s[1], s[2], bands=bands), persistent=False)
        self.readers = nn.ModuleList(nn.Linear(channels(s) + self._pos_dim(s), dim) for s in shapes.outputs)
        self.read = CrossAttention(q_dim=dim, kv_dim=dim, dim=dim, heads=1)
        self.read_mlp = _mlp(dim, mlp_ratio)
        self.process = CrossAttention(q_dim=dim, kv_dim=None, dim=dim, heads=heads)
        self.process_mlp = _mlp(dim, mlp_ratio)
        self.queries = nn.ModuleList(nn.Linear(channels(s) + self._pos_dim(s), dim) for s in shapes.inputs)
        self.writers = nn.ModuleList(
            CrossAttention(q_dim=dim, kv_dim=dim, dim=dim, heads=1, out_dim=channels(s)) for s in shapes.inputs
        )
        for w in self.writers:  # small (not zero: gradients must reach the write) so the loop starts near its backbone
            nn.init.normal_(w.out.weight, std=write_init)
            nn.init.zeros_(w.out.bias)

    def _pos_dim(self, shape: tuple[int, ...]) -> int:
        return 2 * (2 * self.bands + 1) if layout(shape) == "map" else 0

    def _tokens(self, x: Tensor) -> Tensor:
        """Tokens (B, M, C [+ p]) of a stage tensor, with Fourier positions for maps."""
        t = to_tokens(x)
        if x.dim() == 4:
            pos = getattr(self, self._pos_names[tuple(x.shape[2:])]).to(t.dtype)
            t = torch.cat([t, pos.expand(t.shape[0], -1, -1)], -1)
        return t

    def read_and_process(self, feats: list[Tensor], z: Tensor | None) -> Tensor:
        """One step of the latent array: read all stage outputs, then self-attend. (B, N, D)."""
        b = feats[0].shape[0]
        if z is None:
            z = self.latents.unsqueeze(0).repeat(b, 1, 1)  # a copy: a view of a leaf made under no_grad trips hooks
        e = torch.cat([r(self._tokens(f)) + s for r, f, s in zip(self.readers, feats, self.stage_embed)], 1)
        z = z + self.read(z, e)
        z = z + self.read_mlp(z)
        z = z + self.process(z)
        return z + self.process_mlp(z)

    def write(self, i: int, h: Tensor, z: Tensor) -> Tensor:
        """The top-down signal for stage ``i``'s input ``h`` (same shape) read from the latents ``z``."""
        out = self.writers[i](self.queries[i](self._tokens(h)), z)
        return from_tokens(out, self.shapes.inputs[i])

    def combine(self, i: int, h: Tensor, topdown: Tensor | None) -> Tensor:
        if topdown is None:
            return h
        return h + self.write(i, h, topdown)

    def forward(
        self, feats: list[Tensor], logits: Tensor, state: Any
    ) -> tuple[list[Tensor | None], Any, dict[str, Tensor]]:
        z = self.read_and_process(feats, state)
        return [z] * len(feats), z, {}
