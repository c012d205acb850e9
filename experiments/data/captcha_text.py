"""Generated text CAPTCHAs (the optional ``captcha`` package), deterministic from a seed, for reading experiments.

George et al., "A generative vision model that trains with high data efficiency and breaks text-based CAPTCHAs",
Science 358 (2017), read text CAPTCHAs with the Recursive Cortical Network; this dataset is a small, offline stand-in:
strings of ``length`` characters from a named ``alphabet``, rendered with ``captcha.image.ImageCaptcha`` (its
built-in DroidSansMono font at sizes 42/50/56 on a 160x60 canvas, each character rotated by up to 30 degrees, warped,
shifted, the characters overlapping, random spaces, noise dots and one noise arc, a smoothing filter), converted to
greyscale and resized to ``height x width``.

The package draws its randomness from the ``secrets`` module (0.7) or the ``random`` module (0.5, 0.6), neither
seedable per image, so every image is rendered with that module name inside ``captcha.image`` bound, for the duration
of the call and under a lock, to a ``random.Random`` seeded from ``(seed, split, index)``: image ``i`` of a split
depends only on the seed, the split and ``i``.

Pixels: ink is bright. ``x = 1 - grey / 255``, resized (bilinear, antialiased), then stretched per image to span
``[0, 1]`` (the package's text colour is random, from dark to light grey).

Targets (the ``tokens`` task, docs/tasks.md): int64 ``(N, length)``, the alphabet index of each character, left to
right; metrics ``acc`` (share of characters right) and ``seq_acc`` (whole string right). Chance: ``1 / len(alphabet)``
per character and ``len(alphabet) ** -length`` per string.

``glyphs_per_class > 0`` replaces the training split by isolated characters (``glyphs_per_class`` per class) rendered
by the same generator without noise (``ImageCaptcha.create_captcha_image`` on one character, then the smoothing
filter) and cropped to a ``height x height`` window centred on the character's ink, with the horizontal scale of the
CAPTCHAs; their targets are ``(N, length)`` with the class at position 0 and ``-100`` (not scored) elsewhere. This is
the training set of a reader that learns characters, not strings (:mod:`baselines.rcn_reader`); the test split stays
the same CAPTCHAs.

Shapes: ``inputs`` float32 ``(N, 1, height, width)`` in [0, 1] (glyph training split: ``(N, 1, height, height)``);
``image_size = 0`` (the images are not square, so square-image corruptions and sample figures are off).

Example::

    from experiments.data import create_dataset

    splits = create_dataset("captcha", seed=0, num_train=8, num_test=4, length=4, alphabet="digits")
    splits.train.inputs.shape, splits.train.targets[0]      # (8, 1, 30, 80), tensor([8, 6, 5, 2])
    glyphs = create_dataset("captcha", num_train=8, num_test=4, glyphs_per_class=2).train
    glyphs.inputs.shape, glyphs.targets[:3, 0]               # (20, 1, 30, 30), tensor([0, 1, 2])
"""

from __future__ import annotations

import random
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ._registry import DatasetSplits, SampleSet, register_dataset

__all__ = ["ALPHABETS", "captcha", "render_captcha", "render_glyph"]

ALPHABETS: dict[str, str] = {
    "digits": "0123456789",
    "hex": "0123456789ABCDEF",
    "letters": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "alnum": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}
IGNORE = -100
_CANVAS_H, _CANVAS_W = 60, 160  # ImageCaptcha's default canvas; its default font sizes are made for it
_TRAIN, _TEST, _GLYPHS = 0, 1, 2  # independent random streams per split
_LOCK = threading.Lock()


def _module() -> Any:
    try:
        import captcha.image as module
    except ImportError:
        raise ValueError('the captcha dataset needs the optional package captcha: pip install -e ".[captcha]"') from None
    return module


class _SeededRandom(random.Random):
    """A seeded ``random.Random`` that also answers the ``secrets`` calls the package makes."""

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


@contextmanager
def _seeded(seed: int) -> Iterator[Any]:
    """``captcha.image`` with its random source (``secrets`` or ``random``) bound to a generator seeded by ``seed``."""
    module = _module()
    names = [n for n in ("secrets", "random") if hasattr(module, n)]
    if not names:
        raise ValueError("captcha.image has neither 'secrets' nor 'random' to seed; use captcha>=0.5,<0.8")
    rng = _SeededRandom(seed)
    with _LOCK:
        saved = {n: getattr(module, n) for n in names}
        try:
            for n in names:
                setattr(module, n, rng)
            yield module
        finally:
            for n, v in saved.items():
                setattr(module, n, v)


@lru_cache(maxsize=1)
def _generator() -> Any:
    return _module().ImageCaptcha(width=_CANVAS_W, height=_CANVAS_H)


def _ink(im: Any) -> torch.Tensor:
    """A PIL image -> float ink ``(H, W)`` in [0, 1] (bright where dark)."""
    return torch.from_numpy(1.0 - np.asarray(im.convert("L"), dtype=np.float32) / 255.0)


def _finish(ink: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(H, W)`` ink to ``size`` (antialiased) and stretch it to [0, 1]: ``(1, h, w)``."""
    x = F.interpolate(ink[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    lo, hi = x.min(), x.max()
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)


def render_captcha(text: str, *, seed: int, height: int = 30, width: int = 80) -> torch.Tensor:
    """One CAPTCHA of ``text`` as float32 ``(1, height, width)`` ink in [0, 1], a deterministic function of ``seed``."""
    gen = _generator()
    with _seeded(seed):
        im = gen.generate_image(text)
    return _finish(_ink(im), (height, width))


def render_glyph(char: str, *, seed: int, height: int = 30, width: int = 80) -> torch.Tensor:
    """One isolated character (no noise) as float32 ``(1, height, height)``: a window centred on its ink, spanning the
    canvas height and ``height * 160 / width`` canvas columns, so its scale matches a ``height x width`` CAPTCHA."""
    from PIL.ImageFilter import SMOOTH

    gen = _generator()
    with _seeded(seed):
        # mid grey: the package pastes a character through a mask made from its colour's brightness (black is invisible)
        im = gen.create_captcha_image(char, (128, 128, 128, 255), (255, 255, 255)).filter(SMOOTH)
    ink = _ink(im)
    cols = torch.nonzero(ink.amax(0) > 0.2).flatten()
    centre = int(cols.float().mean().round()) if len(cols) else ink.shape[1] // 2
    win = max(1, round(height * _CANVAS_W / width))
    padded = F.pad(ink, (win, win))
    left = centre + win - win // 2
    return _finish(padded[:, left:left + win], (height, height))


def _strings(rng: np.random.Generator, n: int, length: int, k: int, exclude: set[bytes]) -> np.ndarray:
    """``n`` distinct rows of ``length`` indices in ``[0, k)``, none in ``exclude`` (which is updated)."""
    capacity = k**length - len(exclude)
    if n > capacity:
        raise ValueError(f"asked for {n} distinct strings but only {capacity} are left; raise length or lower "
                         "num_train/num_test")  # fmt: skip
    rows = []
    while len(rows) < n:
        row = rng.integers(0, k, size=length, dtype=np.int64)
        key = row.tobytes()
        if key not in exclude:
            exclude.add(key)
            rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, length), dtype=np.int64)


def _render_split(labels: np.ndarray, chars: str, seeds: np.ndarray, height: int, width: int) -> torch.Tensor:
    images = [render_captcha("".join(chars[i] for i in row), seed=int(s), height=height, width=width)
              for row, s in zip(labels, seeds)]
    return torch.stack(images) if images else torch.zeros(0, 1, height, width)


@register_dataset
def captcha(
    *,
    seed: int = 0,
    num_train: int = 1000,
    num_test: int = 200,
    length: int = 4,
    alphabet: str = "digits",
    height: int = 30,
    width: int = 80,
    glyphs_per_class: int = 0,
) -> DatasetSplits:
    """Text CAPTCHAs rendered offline by the ``captcha`` package (module docstring).

    Args:
        seed: seed of the strings and of every image's rendering.
        num_train, num_test: number of CAPTCHAs per split (distinct strings, none shared between the splits).
        length: characters per CAPTCHA.
        alphabet: one of ``digits``, ``hex``, ``letters``, ``alnum``.
        height, width: output image size in pixels (the 60x160 canvas is resized to it).
        glyphs_per_class: if > 0, the training split is that many isolated characters per class instead of
            ``num_train`` CAPTCHAs (for a character-level reader such as ``rcn_reader``).
    """
    if alphabet not in ALPHABETS:
        raise ValueError(f"unknown alphabet {alphabet!r} (choices: {', '.join(ALPHABETS)})")
    for name, value, low in (("num_train", num_train, 0), ("num_test", num_test, 1), ("length", length, 1),
                             ("height", height, 8), ("width", width, 8), ("glyphs_per_class", glyphs_per_class, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    _module()  # the one-line install hint before any work
    chars = ALPHABETS[alphabet]
    k = len(chars)
    taken: set[bytes] = set()
    y_test = _strings(np.random.default_rng((seed, _TEST)), num_test, length, k, taken)
    test_seeds = np.random.default_rng((seed, _TEST, 1)).integers(0, 2**62, size=num_test)
    test = SampleSet(inputs=_render_split(y_test, chars, test_seeds, height, width), targets=torch.from_numpy(y_test))
    if glyphs_per_class:
        cls = np.tile(np.arange(k), glyphs_per_class)
        g_seeds = np.random.default_rng((seed, _GLYPHS)).integers(0, 2**62, size=len(cls))
        x = torch.stack([render_glyph(chars[c], seed=int(s), height=height, width=width) for c, s in zip(cls, g_seeds)])
        y = np.full((len(cls), length), IGNORE, dtype=np.int64)
        y[:, 0] = cls
        train = SampleSet(inputs=x, targets=torch.from_numpy(y))
        what = f"{glyphs_per_class} isolated glyphs per class"
    else:
        y_train = _strings(np.random.default_rng((seed, _TRAIN)), num_train, length, k, taken)
        tr_seeds = np.random.default_rng((seed, _TRAIN, 1)).integers(0, 2**62, size=num_train)
        train = SampleSet(inputs=_render_split(y_train, chars, tr_seeds, height, width),
                          targets=torch.from_numpy(y_train))
        what = f"{num_train} CAPTCHAs"
    return DatasetSplits(
        train=train,
        test=test,
        num_classes=k,
        in_chans=1,
        image_size=0,
        multilabel=False,
        class_names=list(chars),
        task="tokens",
        description=(
            f"text CAPTCHAs ({length} {alphabet} characters, {height}x{width} px; train: {what}, test: {num_test} "
            f"CAPTCHAs); chance {1 / k:.3f} per character, {k ** -length:.2g} per string, seed={seed}"
        ),
    )
