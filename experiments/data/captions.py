"""Captioning data: shape scenes (experiments/data/shapes.py) with their grammar captions as token sequences.

``shapes_caption`` builds the ``shapes`` scenes and turns each caption (e.g. ``"a red circle above a blue square"``)
into token ids for a captioner trained with teacher forcing (the ``caption`` task,
:mod:`experiments.tasks_caption`):

- vocabulary: ``0`` = padding, ``1`` = start (BOS), ``2`` = end (EOS), then the grammar's words
  (:func:`experiments.data.shapes.caption_vocabulary`, sorted) from id ``3``; ``class_names`` lists the words by
  id, so ``class_names[i]`` decodes token ``i``;
- inputs ``{"images": (N, 3, H, W) float32, "tokens_in": (N, T) int64}``: ``tokens_in`` is BOS followed by the
  caption's words, then padding (the caption shifted right);
- targets ``(N, T)`` int64: the caption's words followed by EOS, ``-100`` after it (not scored);
- ``T = max_len`` (0: the longest caption of either split plus one, for EOS).

Trivial baseline for BLEU-4: always emitting the train split's most frequent caption (see
experiments/configs/caption_shapes.yaml for its measured score).

Example::

    from experiments.data import create_dataset

    d = create_dataset("shapes_caption", num_train=8, num_test=4, max_objects=2)
    d.train.inputs["images"].shape, d.train.inputs["tokens_in"].shape, d.train.targets.shape
    # (8, 3, 32, 32), (8, 10), (8, 10)
    " ".join(d.class_names[i] for i in d.train.targets[0].tolist() if i >= 3)   # the first caption
"""

from __future__ import annotations

import torch

from ._registry import DatasetSplits, SampleSet, register_dataset
from .shapes import SHAPES, caption_vocabulary, shapes

__all__ = ["BOS", "EOS", "IGNORE", "PAD", "caption_tokens", "shapes_caption"]

PAD, BOS, EOS, IGNORE = 0, 1, 2, -100
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def caption_tokens(captions: list[str], words: list[str], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens_in, targets)`` int64 ``(N, width)`` for ``captions`` over the vocabulary ``SPECIALS + words``.

    Example:
        >>> tin, tgt = caption_tokens(["a b", "b"], ["a", "b"], 4)
        >>> tin.tolist(), tgt.tolist()
        ([[1, 3, 4, 0], [1, 4, 0, 0]], [[3, 4, 2, -100], [4, 2, -100, -100]])
    """
    ids = {w: i + len(SPECIALS) for i, w in enumerate(words)}
    tokens_in = torch.full((len(captions), width), PAD, dtype=torch.int64)
    targets = torch.full((len(captions), width), IGNORE, dtype=torch.int64)
    for i, text in enumerate(captions):
        seq = [ids[w] for w in text.replace(",", " ,").split()]
        if len(seq) + 1 > width:
            raise ValueError(f"caption {text!r} has {len(seq)} words: needs max_len >= {len(seq) + 1}")
        tokens_in[i, : len(seq) + 1] = torch.tensor([BOS, *seq])
        targets[i, : len(seq) + 1] = torch.tensor([*seq, EOS])
    return tokens_in, targets


@register_dataset
def shapes_caption(
    *,
    seed: int = 0,
    image_size: int = 32,
    num_train: int = 4000,
    num_test: int = 500,
    min_objects: int = 1,
    max_objects: int = 2,
    classes: tuple[str, ...] = SHAPES,
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow"),
    object_scale: tuple[float, float] = (0.3, 0.5),
    occlusion: float = 0.3,
    min_visible: float = 0.4,
    texture: float = 0.4,
    noise: float = 0.02,
    max_len: int = 0,
) -> DatasetSplits:
    """Shape scenes and their captions as tokens (module docstring); the options are ``shapes``' plus ``max_len``.

    Args:
        max_len: token positions per caption (0: the longest caption plus one for EOS).
    """
    base = shapes(seed=seed, image_size=image_size, num_train=num_train, num_test=num_test, min_objects=min_objects,
                  max_objects=max_objects, classes=classes, colors=colors, object_scale=object_scale,
                  occlusion=occlusion, min_visible=min_visible, texture=texture, noise=noise)
    words = caption_vocabulary(classes, colors)
    caps = {"train": base.train.captions, "test": base.test.captions}  # type: ignore[union-attr]
    longest = max(len(c.replace(",", " ,").split()) for c in caps["train"] + caps["test"])
    width = int(max_len) or longest + 1
    if width < longest + 1:
        raise ValueError(f"max_len={max_len} is too short: the longest caption has {longest} words (need >= "
                         f"{longest + 1})")

    def split(name: str) -> SampleSet:
        images = getattr(base, name).images
        tokens_in, targets = caption_tokens(caps[name], words, width)
        return SampleSet(inputs={"images": images, "tokens_in": tokens_in}, targets=targets)

    return DatasetSplits(
        train=split("train"), test=split("test"), num_classes=len(SPECIALS) + len(words), in_chans=3, image_size=0,
        multilabel=False, class_names=SPECIALS + words, task="caption",
        description=f"captions of {base.description}; {len(SPECIALS) + len(words)} tokens, {width} positions",
    )
