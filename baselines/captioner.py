"""Image describer: a CNN encoder and an LSTM decoder (Vinyals et al. 2015 "Show and Tell"; Karpathy & Fei-Fei 2015).

References: O. Vinyals, A. Toshev, S. Bengio, D. Erhan, "Show and tell: a neural image caption generator", CVPR
2015; A. Karpathy, L. Fei-Fei, "Deep visual-semantic alignments for generating image descriptions", CVPR 2015.
Written from the papers' equations.

**Encoder**: any Staged image backbone of this package, by name (``encoder``, built with ``encoder_args``); its
stem and stages run, its classification head is dropped. The last stage output is pooled to a vector ``v = CNN(I)``:
``pool="avg"`` (global average, the papers' fc-layer feature) or ``pool="flatten"`` (the whole last map, which keeps
*where* things are: the captions here name spatial relations).

**Decoder**: an LSTM run cell by cell (:class:`baselines.recurrent.RecurrentNet`, ``num_layers`` layers, hidden
``hidden_size``) over word embeddings ``x_t = W_e S_t`` (``nn.Embedding(V, embed_dim)``); ``p_{t+1} =
softmax(W_o h_t)`` (the RecurrentNet's linear head). The image enters in one of two ways (``image_feed``):

- ``"first"`` (Show and Tell): ``x_{-1} = W_i v`` is the LSTM's input at an extra step before the start token,
  whose output is not scored: ``h_{-1} = LSTM(x_{-1}, 0)``, ``h_t = LSTM(x_t, h_{t-1})``;
- ``"bias"`` (Karpathy & Fei-Fei): ``b_v = W_hi v`` is added to the first layer's input pre-activations at
  ``t = 0`` only (through the RecurrentNet's per-step top-down term ``u``).

**Training** (teacher forcing): ``forward(images=..., tokens_in=...)`` with ``tokens_in`` = BOS followed by the
caption shifted right returns logits ``(B, T, V)`` for the ``tokens`` / ``caption`` tasks (cross-entropy of every
next word).

**Inference**: :meth:`Captioner.greedy` (the arg-max word at each step, fed back) and :meth:`Captioner.beam_search`
(keep the ``beam_size`` prefixes with the highest total log-probability; a prefix that emitted EOS is finished and
keeps its score; the result is the highest-scoring sequence, without length normalisation; beam 1 equals greedy).
In **eval mode** ``forward`` decodes instead of teacher-forcing (``eval_decode="greedy"``, the default; ``"teacher"``
keeps teacher forcing), for ``T = tokens_in.shape[1]`` steps, and returns ``(B, T, V)`` scores whose argmax is the
decoded word: with greedy decoding the free-running log-probabilities ``log p(. | image, own previous words)``;
with ``beam_size > 1`` the decoded sequence as log-softmax of one-hot scores (``log p = 0`` for the chosen word,
about ``-20`` for the others, so the ``nll`` metric is not a likelihood there). The ``caption`` task
(:mod:`experiments.tasks_caption`) reads the argmax up to the first EOS as the generated caption and scores BLEU.

Token ids: ``0`` padding, ``1`` start (BOS), ``2`` end (EOS) (as :mod:`experiments.data.captions`).

Deviations: small widths for CPU; the encoder is trained from scratch with the decoder (the papers use an
ImageNet-pretrained CNN); no dropout or ensembling by default; Karpathy & Fei-Fei's decoder is a plain RNN (here the
same LSTM for both feeds).

Shapes: ``images`` (B, C, H, W) float, ``tokens_in`` (B, T) int64 -> (B, T, V); ``greedy`` / ``beam_search`` ->
tokens (B, max_len) int64 (EOS included, padding after) and scores (B,) (total log-probability).

Example:
    >>> import torch
    >>> net = captioner(num_classes=12, in_chans=1, encoder_args={"stn": False}, image_size=16, hidden_size=16,
    ...                 embed_dim=8)
    >>> images, tokens_in = torch.rand(2, 1, 16, 16), torch.randint(3, 12, (2, 5))
    >>> net(images=images, tokens_in=tokens_in).shape
    torch.Size([2, 5, 12])
    >>> tokens, scores = net.beam_search(images, max_len=4, beam_size=3)
    >>> tokens.shape, scores.shape
    (torch.Size([2, 4]), torch.Size([2]))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import create_model, register_model
from .recurrent import RecurrentNet

__all__ = ["BOS", "EOS", "PAD", "Captioner", "captioner"]

PAD, BOS, EOS = 0, 1, 2
POOLS = ("avg", "flatten")
FEEDS = ("first", "bias")
DECODES = ("greedy", "teacher")
_ONE_HOT = 20.0  # the logit gap of the one-hot scores returned for beam-search decoding


class Captioner(nn.Module):
    """CNN encoder + LSTM decoder with teacher forcing, greedy and beam-search decoding (module docstring).

    Attributes: ``encoder`` (the Staged backbone, head replaced by an identity), ``img_proj`` (``W_i`` or
    ``W_hi``), ``embed`` (``W_e``), ``decoder`` (:class:`~baselines.recurrent.RecurrentNet`; its ``head`` is
    ``W_o``), ``num_classes`` (V), ``feature_dim``.
    """

    def __init__(self, *, num_classes: int, in_chans: int = 3, encoder: str = "stn_classifier",
                 encoder_args: dict[str, Any] | None = None, image_size: int = 32, pool: str = "flatten",
                 embed_dim: int = 64, hidden_size: int = 128, num_layers: int = 1, image_feed: str = "first",
                 eval_decode: str = "greedy", beam_size: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value, choices in (("pool", pool, POOLS), ("image_feed", image_feed, FEEDS),
                                     ("eval_decode", eval_decode, DECODES)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose from: {', '.join(choices)}")
        if int(num_classes) < 4:
            raise ValueError(f"num_classes (the vocabulary, with PAD, BOS, EOS) must be >= 4, got {num_classes}")
        if int(beam_size) < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.num_classes = int(num_classes)
        self.pool, self.image_feed, self.eval_decode, self.beam_size = pool, image_feed, eval_decode, int(beam_size)
        enc = create_model(encoder, num_classes=2, in_chans=in_chans, **dict(encoder_args or {}))
        if not all(hasattr(enc, a) for a in ("stem", "stages", "head")):
            raise ValueError(f"encoder {encoder!r} is not a Staged image backbone (stem, stages, head)")
        enc.head = nn.Identity()
        self.encoder = enc
        was = enc.training
        enc.eval()
        with torch.no_grad():
            feat = self._features(torch.zeros(1, int(in_chans), int(image_size), int(image_size)))
        enc.train(was)
        self.feature_dim = int(feat.shape[-1])
        self.image_size = int(image_size)
        self.decoder = RecurrentNet("lstm", num_classes=self.num_classes, in_chans=int(embed_dim),
                                    hidden_size=int(hidden_size), num_layers=int(num_layers), dropout=float(dropout))
        self.embed = nn.Embedding(self.num_classes, int(embed_dim))
        out = int(embed_dim) if image_feed == "first" else self.decoder.gates * int(hidden_size)
        self.img_proj = nn.Linear(self.feature_dim, out)

    # ---- pieces ----------------------------------------------------------------------------------------------

    def _features(self, images: Tensor) -> Tensor:
        h = self.encoder.stem(images)
        for stage in self.encoder.stages:
            h = stage(h)
        if h.dim() == 2:
            return h
        if h.dim() == 3:  # tokens (B, L, D)
            return h.mean(1) if self.pool == "avg" else h.flatten(1)
        return h.mean(dim=(2, 3)) if self.pool == "avg" else h.flatten(1)

    def start(self, images: Tensor) -> tuple[list, Tensor | None]:
        """The decoder state before the start token and the first step's extra input term: ``(state, u0)``."""
        v = self.img_proj(self._features(images))
        if self.image_feed == "first":
            _, state = self.decoder.step(v)
            return state, None
        return self.decoder.init_state(images.shape[0], device=v.device, dtype=v.dtype), v

    def _step(self, tokens: Tensor, state: list, u0: Tensor | None) -> tuple[Tensor, list]:
        """Log-probabilities (B, V) of the next word after ``tokens`` (B,) and the new state."""
        td = None if u0 is None else [u0] + [None] * (self.decoder.num_layers - 1)
        h, state = self.decoder.step(self.embed(tokens), state, td)
        return F.log_softmax(self.decoder.head(self.decoder.drop(h)).float(), dim=-1), state

    # ---- teacher forcing -------------------------------------------------------------------------------------

    def teacher_forced(self, images: Tensor, tokens_in: Tensor) -> Tensor:
        """Logits (B, T, V) of every next word given the true previous ones."""
        state, u0 = self.start(images)
        x = self.embed(tokens_in)
        outs = []
        for t in range(tokens_in.shape[1]):
            td = None if (u0 is None or t > 0) else [u0] + [None] * (self.decoder.num_layers - 1)
            h, state = self.decoder.step(x[:, t], state, td)
            outs.append(h)
        return self.decoder.head(self.decoder.drop(torch.stack(outs, 1)))

    def forward(self, images: Tensor, tokens_in: Tensor) -> Tensor:
        if images.dim() != 4 or tokens_in.dim() != 2 or images.shape[0] != tokens_in.shape[0]:
            raise ValueError(f"Captioner expects images (B, C, H, W) and tokens_in (B, T), got "
                             f"{tuple(images.shape)} and {tuple(tokens_in.shape)}")
        if self.training or self.eval_decode == "teacher":
            return self.teacher_forced(images, tokens_in)
        steps = tokens_in.shape[1]
        if self.beam_size == 1:
            _, _, logp = self._greedy(images, steps)
            return logp
        tokens, _ = self.beam_search(images, max_len=steps, beam_size=self.beam_size)
        return F.log_softmax(F.one_hot(tokens, self.num_classes).float() * _ONE_HOT, dim=-1)

    # ---- decoding --------------------------------------------------------------------------------------------

    def _greedy(self, images: Tensor, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
        state, u0 = self.start(images)
        b = images.shape[0]
        word = torch.full((b,), BOS, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        score = torch.zeros(b, device=images.device)
        tokens, logps = [], []
        for t in range(int(max_len)):
            logp, state = self._step(word, state, u0 if t == 0 else None)
            word = logp.argmax(-1)
            score = score + torch.where(done, torch.zeros_like(score), logp.gather(1, word[:, None])[:, 0])
            tokens.append(torch.where(done, torch.full_like(word, PAD), word))
            logps.append(logp)
            done = done | (word == EOS)
        return torch.stack(tokens, 1), score, torch.stack(logps, 1)

    @torch.no_grad()
    def greedy(self, images: Tensor, *, max_len: int) -> tuple[Tensor, Tensor]:
        """Greedy decoding: tokens (B, max_len) (EOS, then padding) and their total log-probabilities (B,)."""
        tokens, score, _ = self._greedy(images, max_len)
        return tokens, score

    @torch.no_grad()
    def beam_search(self, images: Tensor, *, max_len: int, beam_size: int = 3) -> tuple[Tensor, Tensor]:
        """Beam search: the highest-scoring of the ``beam_size`` kept sequences, tokens (B, max_len) and scores (B,).

        At every step each unfinished beam is extended by every word; finished beams (after EOS) extend only by
        padding at no cost; the ``beam_size`` best of all extensions are kept (ties: lower beam and word index).
        """
        k, b, v = int(beam_size), images.shape[0], self.num_classes
        if k < 1 or int(max_len) < 1:
            raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size}, {max_len}")
        state, u0 = self.start(images)
        rep = lambda s: s.repeat_interleave(k, 0)  # noqa: E731  (B, ...) -> (B k, ...)
        state = [tuple(rep(x) for x in st) if isinstance(st, tuple) else rep(st) for st in state]
        u0 = None if u0 is None else rep(u0)
        device = images.device
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live beam at the start
        seqs = torch.zeros(b, k, 0, dtype=torch.long, device=device)
        word = torch.full((b * k,), BOS, dtype=torch.long, device=device)
        done = torch.zeros(b, k, dtype=torch.bool, device=device)
        finished_row = torch.full((v,), float("-inf"), device=device)
        finished_row[PAD] = 0.0
        for t in range(int(max_len)):
            logp, state = self._step(word, state, u0 if t == 0 else None)
            logp = torch.where(done.reshape(-1, 1), finished_row, logp).view(b, k, v)
            cand = (scores[:, :, None] + logp).view(b, k * v)
            scores, idx = cand.topk(k, dim=1)
            beam, word2 = idx // v, idx % v
            seqs = torch.cat([seqs.gather(1, beam[:, :, None].expand(-1, -1, seqs.shape[2])), word2[:, :, None]], 2)
            done = done.gather(1, beam) | (word2 == EOS)
            flat = (beam + torch.arange(b, device=device)[:, None] * k).view(-1)
            state = [tuple(x[flat] for x in st) if isinstance(st, tuple) else st[flat] for st in state]
            word = word2.view(-1)
            if done.all():
                pad = torch.full((b, k, int(max_len) - t - 1), PAD, dtype=torch.long, device=device)
                seqs = torch.cat([seqs, pad], 2)
                break
        best = scores.argmax(1)
        return seqs[torch.arange(b, device=device), best], scores[torch.arange(b, device=device), best]

    @torch.no_grad()
    def sequence_score(self, images: Tensor, tokens: Tensor) -> Tensor:
        """Total log-probability (B,) of given output sequences ``tokens`` (B, L): the words up to and including the
        first EOS (the quantity beam search maximises)."""
        bos = torch.full_like(tokens[:, :1], BOS)
        logp = F.log_softmax(self.teacher_forced(images, torch.cat([bos, tokens[:, :-1]], 1)).float(), -1)
        lp = logp.gather(2, tokens[:, :, None])[:, :, 0]
        after = torch.cumsum((tokens == EOS).long(), 1) - (tokens == EOS).long() > 0  # positions after the first EOS
        return lp.masked_fill(after, 0.0).sum(1)


@register_model(family="Captioner", paper="Vinyals et al. 2015; Karpathy & Fei-Fei 2015", source="hand-written (paper)",
                staged=False)
def captioner(*, num_classes: int = 20, in_chans: int = 3, encoder: str = "stn_classifier",
              encoder_args: dict[str, Any] | None = None, image_size: int = 32, pool: str = "flatten",
              embed_dim: int = 64, hidden_size: int = 128, num_layers: int = 1, image_feed: str = "first",
              eval_decode: str = "greedy", beam_size: int = 1, dropout: float = 0.0) -> Captioner:
    """CNN encoder (a Staged backbone by name) + LSTM decoder; ``num_classes`` is the vocabulary (module docstring)."""
    return Captioner(num_classes=num_classes, in_chans=in_chans, encoder=encoder, encoder_args=encoder_args,
                     image_size=image_size, pool=pool, embed_dim=embed_dim, hidden_size=hidden_size,
                     num_layers=num_layers, image_feed=image_feed, eval_decode=eval_decode, beam_size=beam_size,
                     dropout=dropout)
