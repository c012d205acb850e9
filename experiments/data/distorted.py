"""Distorted digits: scikit-learn's digits under random affine maps and clutter (the spatial-transformer benchmark).

After Jaderberg et al. 2015 (section 4.1, "distorted MNIST": rotated, rotated-translated-scaled, cluttered), on
the bundled 8x8 sklearn digits. Each image is a ``canvas x canvas`` single-channel picture of one digit:

1. the digit is upscaled (bilinear, antialiased) to ``digit_size`` px and centred on the canvas;
2. a random similarity map moves it: rotation ``a ~ U[-rotate, rotate]`` degrees, scale ``s ~ U[scale]``,
   translation ``t ~ U[-translate, translate]^2`` in normalised coordinates (the canvas spans ``[-1, 1]``), i.e.
   output pixel ``p`` reads the centred digit at ``(s R(a))^{-1} (p - t)`` (bilinear, ``F.grid_sample``);
3. ``clutter`` fragments, random ``clutter_size``-px crops of *other* digits of the same source pool, are pasted
   anywhere by pixel-wise maximum; then Gaussian noise of std ``noise``; values clipped to ``[0, 1]``.

Train and test images come from disjoint sklearn digit sources (a stratified split, as in ``cluttered_digits``),
so test accuracy measures generalisation to unseen handwriting; every image draws its source digit (uniformly in
its pool), its map and its clutter independently, so a source digit appears in many poses. Everything is
deterministic in ``seed``. Single-label, 10 classes; trivial baseline 10% (balanced in expectation).

Example::

    from experiments.data import create_dataset

    splits = create_dataset("distorted_digits", seed=0, canvas=32, num_train=100, num_test=20)
    splits.train.images.shape, splits.train.labels.shape     # (100, 1, 32, 32), (100,)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._registry import DatasetSplits, ImageSet, register_dataset
from .cluttered import _patch_index, _upscaled
from .digits import CLASS_NAMES, load_sklearn_digits, stratified_split

__all__ = ["distorted_digits"]


def _distort(rng: np.random.Generator, pool: np.ndarray, labels: np.ndarray, n: int, *, canvas: int,
             digit_size: int, rotate: float, scale: tuple[float, float], translate: float, clutter: int,
             clutter_size: int, noise: float) -> ImageSet:
    src = pool[rng.integers(0, len(pool), size=n)]
    angle = np.deg2rad(rng.uniform(-rotate, rotate, size=n))
    s = rng.uniform(scale[0], scale[1], size=n)
    t = rng.uniform(-translate, translate, size=(n, 2))
    # --- the centred digit, then the inverse map: theta = M^-1 [I | -t] with M = s R(a).
    base = np.zeros((n, 1, canvas, canvas), dtype=np.float32)
    o = (canvas - digit_size) // 2
    base[:, 0, o:o + digit_size, o:o + digit_size] = _upscaled(digit_size)[src]
    cos, sin = np.cos(angle) / s, np.sin(angle) / s
    inv = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)  # (n, 2, 2) = (s R(a))^-1
    theta = np.concatenate([inv, -(inv @ t[:, :, None])], axis=2).astype(np.float32)
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, canvas, canvas], align_corners=False)
    img = F.grid_sample(torch.from_numpy(base), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    img = img[:, 0].numpy().copy()
    # --- clutter: crops of other pool digits (never the image's own source digit).
    m, cs = clutter, clutter_size
    cpos = rng.integers(0, len(pool), size=(n, m))
    same = pool[cpos] == src[:, None]
    cpos[same] = (cpos[same] + 1) % len(pool)
    csrc = pool[cpos]
    coff = rng.integers(0, digit_size - cs + 1, size=(n, m, 2))
    cxy = rng.integers(0, canvas - cs + 1, size=(n, m, 2))
    rows = np.arange(n)[:, None, None]
    up = _upscaled(digit_size)
    for k in range(m):
        yy, xx = _patch_index(coff[:, k, 1], coff[:, k, 0], cs)
        crop = up[csrc[:, k][:, None, None], yy, xx]
        yy, xx = _patch_index(cxy[:, k, 1], cxy[:, k, 0], cs)
        img[rows, yy, xx] = np.maximum(img[rows, yy, xx], crop)
    if noise > 0:
        img += np.float32(noise) * rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    return ImageSet(images=torch.from_numpy(img).unsqueeze(1).contiguous(), labels=torch.from_numpy(labels[src].copy()),
                    source_ids=torch.from_numpy(src.astype(np.int64)).unsqueeze(1),
                    clutter_ids=torch.from_numpy(csrc.astype(np.int64)))


@register_dataset
def distorted_digits(
    *,
    seed: int = 0,
    canvas: int = 32,
    num_train: int = 3000,
    num_test: int = 600,
    digit_size: int = 14,
    rotate: float = 60.0,
    scale: tuple[float, float] = (0.7, 1.2),
    translate: float = 0.3,
    clutter: int = 4,
    clutter_size: int = 5,
    noise: float = 0.02,
    source_test_fraction: float = 0.3,
) -> DatasetSplits:
    """sklearn digits rotated, scaled and translated on a ``canvas``-px image with clutter (module docstring).

    Args:
        seed: seeds the source split and both splits' images.
        canvas: image side in pixels (at least ``digit_size``).
        num_train, num_test: images per split.
        digit_size: side of the upscaled digit before the affine map.
        rotate: maximum rotation in degrees (uniform in ``[-rotate, rotate]``).
        scale: ``(lo, hi)`` range of the zoom factor (uniform).
        translate: maximum shift per axis in normalised coordinates (1 = half the canvas).
        clutter: clutter fragments per image.
        clutter_size: side of a clutter fragment (at most ``digit_size``).
        noise: std of additive Gaussian pixel noise.
        source_test_fraction: fraction of each class of sklearn digits reserved for test images.
    """
    canvas, digit_size = int(canvas), int(digit_size)
    if not 1 <= digit_size <= canvas:
        raise ValueError(f"need 1 <= digit_size <= canvas, got digit_size={digit_size}, canvas={canvas}")
    if not isinstance(scale, Sequence) or isinstance(scale, str) or len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must be a (lo, hi) pair with 0 < lo <= hi, got {scale!r}")
    if float(rotate) < 0 or float(translate) < 0 or float(noise) < 0 or not math.isfinite(float(rotate)):
        raise ValueError(f"rotate, translate and noise must be >= 0, got {rotate}, {translate}, {noise}")
    if int(clutter) < 0 or int(num_train) < 0 or int(num_test) < 0:
        raise ValueError(f"clutter, num_train and num_test must be >= 0, got {clutter}, {num_train}, {num_test}")
    if not 1 <= int(clutter_size) <= digit_size:
        raise ValueError(f"clutter_size must be between 1 and digit_size={digit_size}, got {clutter_size}")
    if not 0.0 < float(source_test_fraction) < 1.0:
        raise ValueError(f"source_test_fraction must be strictly between 0 and 1, got {source_test_fraction}")
    _, labels = load_sklearn_digits()
    split_seq, train_seq, test_seq = np.random.SeedSequence(int(seed)).spawn(3)
    train_pool, test_pool = stratified_split(labels, float(source_test_fraction), np.random.default_rng(split_seq))
    opts = dict(canvas=canvas, digit_size=digit_size, rotate=float(rotate), scale=(float(scale[0]), float(scale[1])),
                translate=float(translate), clutter=int(clutter), clutter_size=int(clutter_size), noise=float(noise))
    train = _distort(np.random.default_rng(train_seq), train_pool, labels, int(num_train), **opts)
    test = _distort(np.random.default_rng(test_seq), test_pool, labels, int(num_test), **opts)
    return DatasetSplits(
        train=train, test=test, num_classes=10, in_chans=1, image_size=canvas, multilabel=False,
        class_names=list(CLASS_NAMES),
        description=(f"distorted sklearn digits: {digit_size}px digit on a {canvas}px canvas, rotation +-{rotate} deg, "
                     f"scale {scale[0]}-{scale[1]}, translation +-{translate}, {clutter} clutter crops of "
                     f"{clutter_size}px, noise std {noise}; train/test from disjoint sklearn sources, seed={seed}"),
    )
