"""The ``caption`` task: the ``tokens`` task's loss and per-sample metrics plus corpus BLEU as a set-level metric.

BLEU (Papineni, Roukos, Ward and Zhu 2002, "BLEU: a method for automatic evaluation of machine translation"),
corpus level, written from the paper's formula: over all hypotheses ``c`` and their references ``r``,

.. math::

    p_n = \\frac{\\sum_c \\sum_{g \\in n\\text{-grams}(c)} \\min(\\#_c(g), \\max_r \\#_r(g))}
               {\\sum_c |n\\text{-grams}(c)|}, \\qquad
    \\mathrm{BP} = \\begin{cases} 1 & C > R \\\\ e^{1 - R / C} & C \\le R \\end{cases}, \\qquad
    \\mathrm{BLEU}\\text{-}N = \\mathrm{BP} \\exp\\Big(\\frac{1}{N} \\sum_{n=1}^{N} \\log p_n\\Big),

with ``C`` the total hypothesis length and ``R`` the sum over sentences of the reference length closest to the
hypothesis' (ties: the shorter). Clipped counts are summed over the corpus *before* dividing (the paper's corpus
BLEU, not an average of sentence BLEUs); any ``p_n = 0`` gives BLEU 0 (no smoothing). The running state is these
sufficient statistics (clipped matches and totals per ``n``, ``C``, ``R``), so ``merge`` across ranks is a sum and
is exact. torchmetrics' ``BLEUScore`` computes the same numbers (tests/test_captioner.py checks it).

**What is scored.** The runner hands the task the model's eval-mode output ``(B, T, V)``; the hypothesis is its
argmax per position, cut before the first end token (``EOS = 2``); the reference is the target's scored positions,
cut before EOS; padding (``0``) and start (``1``) tokens are dropped from both. Token ids are the n-gram symbols.
:class:`baselines.captioner.Captioner` in eval mode *decodes* (greedy by default, beam search with ``beam_size >
1``) and returns per-position scores whose argmax is the decoded token, so ``bleu4`` is the BLEU of real generated
captions, not of teacher-forced next-word guesses. A model whose eval output is teacher-forced logits gets the
(optimistic) teacher-forced BLEU instead: this task cannot tell the two apart.

Metrics: per sample (averaged) ``acc``, ``seq_acc`` and ``nll`` as the ``tokens`` task (on the eval output: for
the Captioner, the share of positions where the decoded word is right, the whole caption right, and the free-running
negative log-likelihood); set level ``bleu1`` .. ``bleu4``. Primary metric: ``bleu4``; per-step curve: ``acc``.

Examples (the optional task hook of docs/tasks.md section 8, :mod:`experiments.examples`): :meth:`CaptionTask.examples`
gives a table row per image: the image (input ``images``, scaled up to about 128 px), its reference caption(s) and
the predicted caption, words decoded with the dataset's ``class_names`` (the vocabulary by token id).

Example:
    >>> import torch
    >>> task = CaptionTask()
    >>> state = task.init_state()
    >>> hyp = torch.nn.functional.one_hot(torch.tensor([[5, 6, 7, 8, 2]]), 10).float()
    >>> task.update(state, hyp, torch.tensor([[5, 6, 7, 8, 2]]))
    >>> task.compute(state)["bleu4"]
    1.0
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["CaptionTask", "bleu_from_stats", "bleu_stats", "corpus_bleu", "strip_tokens"]

PAD, BOS, EOS, IGNORE = 0, 1, 2, -100


def strip_tokens(row: Sequence[int]) -> list[int]:
    """The words of a token row: everything before the first EOS (or IGNORE), without PAD and BOS."""
    out = []
    for t in row:
        if t in (EOS, IGNORE):
            break
        if t not in (PAD, BOS):
            out.append(int(t))
    return out


def _ngrams(seq: Sequence[Any], n: int) -> Counter:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def bleu_stats(hypothesis: Sequence[Any], references: Sequence[Sequence[Any]], max_n: int = 4) -> list[float]:
    """One sentence's sufficient statistics ``[C, R, match_1, total_1, ..., match_N, total_N]`` (module docstring).

    Example:
        >>> bleu_stats("the the the the".split(), ["the cat is here".split()], max_n=2)
        [4.0, 4.0, 1.0, 4.0, 0.0, 3.0]
    """
    c = len(hypothesis)
    r = min((abs(len(ref) - c), len(ref)) for ref in references)[1] if references else 0
    stats = [float(c), float(r)]
    for n in range(1, max_n + 1):
        hyp = _ngrams(hypothesis, n)
        best: Counter = Counter()
        for ref in references:
            best |= _ngrams(ref, n)  # per n-gram, the maximum count over the references
        stats += [float(sum(min(k, best[g]) for g, k in hyp.items())), float(max(c - n + 1, 0))]
    return stats


def bleu_from_stats(stats: Sequence[float], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` from summed :func:`bleu_stats` (geometric mean of ``p_1..p_N`` times the brevity
    penalty); 0 if any ``p_n`` is 0 or the corpus is empty."""
    c, r = stats[0], stats[1]
    if c == 0:
        return 0.0
    logs = []
    for n in range(max_n):
        match, total = stats[2 + 2 * n], stats[3 + 2 * n]
        if match == 0 or total == 0:
            return 0.0
        logs.append(math.log(match / total))
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return bp * math.exp(sum(logs) / max_n)


def corpus_bleu(hypotheses: Sequence[Sequence[Any]], references: Sequence[Sequence[Sequence[Any]]],
                max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` of tokenised ``hypotheses``, each with a list of tokenised ``references``.

    Example (the hand-computed case of tests/test_captioner.py):
        >>> round(corpus_bleu([["a", "b", "c", "d"]], [[["a", "b", "c", "e"]]], max_n=2), 6)  # sqrt(3/4 * 2/3)
        0.707107
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    total = [0.0] * (2 + 2 * max_n)
    for h, refs in zip(hypotheses, references):
        total = [a + b for a, b in zip(total, bleu_stats(h, refs, max_n))]
    return bleu_from_stats(total, max_n)


class CaptionTask:
    """Teacher-forced cross-entropy, per-position metrics, and corpus BLEU-1..4 (module docstring)."""

    metric_names = ("acc", "seq_acc", "nll")
    primary = "bleu4"
    step_metric = "acc"
    max_n = 4

    def __init__(self) -> None:
        from experiments.tasks import TokensTask  # late import: experiments.tasks may register this class

        self._tokens = TokensTask()

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._tokens.loss(logits, target)

    @torch.no_grad()
    def correct(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        return self._tokens.correct(logits, target)

    def finalize(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    # ---- set-level: BLEU -------------------------------------------------------------------------------------

    def init_state(self) -> list[float]:
        return [0.0] * (2 + 2 * self.max_n)

    def update(self, state: list[float], output: Tensor, target: Tensor) -> None:
        if output.dim() != 3 or output.shape[:2] != target.shape:
            raise ValueError(f"caption task: output {tuple(output.shape)} must be (B, T, V) with the targets' "
                             f"(B, T) = {tuple(target.shape)}")
        for hyp, ref in zip(output.argmax(-1).tolist(), target.tolist()):
            s = bleu_stats(strip_tokens(hyp), [strip_tokens(ref)], self.max_n)
            for i, v in enumerate(s):
                state[i] += v

    def merge(self, states: list[list[float]]) -> list[float]:
        return [sum(col) for col in zip(*states)]

    def compute(self, state: list[float]) -> dict[str, float]:
        return {f"bleu{n}": bleu_from_stats(state[: 2 + 2 * n], n) for n in range(1, self.max_n + 1)}

    # ---- examples (docs/tasks.md section 8) -------------------------------------------------------------------

    def examples(self, output: Tensor, inputs: Any, target: Tensor, *, class_names: list[str]) -> list[dict[str, Any]]:
        """One record per sample: ``image`` (the input image scaled up by
        :func:`~experiments.examples.example_scale`), ``title`` (the prediction), ``references`` (a list with the
        target caption), ``prediction`` and ``correct`` (prediction equals a reference). Needs dict inputs with an
        ``images`` entry (``shapes_caption``)."""
        from experiments.examples import example_scale, to_rgb, upscale

        if not isinstance(inputs, dict) or "images" not in inputs:
            raise ValueError("caption task: examples need dict inputs with an 'images' entry (as shapes_caption's); "
                             "set log.examples=0 for other data")
        if output.dim() != 3 or output.shape[:2] != target.shape:
            raise ValueError(f"caption task: output {tuple(output.shape)} must be (B, T, V) with the targets' "
                             f"(B, T) = {tuple(target.shape)}")

        def words(row: list[int]) -> str:
            return " ".join(class_names[t] if t < len(class_names) else f"<{t}>" for t in strip_tokens(row))

        images = inputs["images"]
        s = example_scale(*images.shape[-2:])
        records = []
        for i, (hyp, ref) in enumerate(zip(output.argmax(-1).tolist(), target.tolist())):
            pred, refs = words(hyp), [words(ref)]
            records.append({"image": upscale(to_rgb(images[i]), s), "title": pred, "references": refs,
                            "prediction": pred, "correct": pred in refs})
        return records
