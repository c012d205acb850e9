"""scikit-learn's bundled handwritten digits (no download).

``load_digits`` ships 1,797 grey 8x8 images of the digits 0-9 written by 43 people (values 0..16). The
``digits`` builder scales them to ``[0, 1]``, resizes them to ``image_size`` (bilinear, antialiased) and splits
them into train and test, stratified by class and deterministic in ``seed``.

Example::

    from experiments.data import create_dataset

    splits = create_dataset("digits", seed=0, image_size=32)
    len(splits.train), len(splits.test)      # (1347, 450)
    splits.train.images.shape                # torch.Size([1347, 1, 32, 32])
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._registry import DatasetSplits, ImageSet, register_dataset

__all__ = ["digits", "load_sklearn_digits", "resize_images", "stratified_split"]

NUM_DIGITS = 1797
CLASS_NAMES = [str(k) for k in range(10)]


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0).clip(0.0, 1.0)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 sklearn digits: float32 ``(1797, 8, 8)`` in ``[0, 1]`` and int64 labels (read-only, cached)."""
    return _load()


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..len(labels)-1`` into sorted (train, test) index arrays, stratified by class.

    Each class contributes ``round(count * test_fraction)`` (at least one, at most ``count - 1``) test items.
    """
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = min(max(int(round(len(idx) * test_fraction)), 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of ``(N, C, H, W)`` images to ``size x size``, clamped to ``[0, 1]``."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def _per_class_subset(idx: np.ndarray, labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """The sorted first ``per_class`` indices of every class in a random order of ``idx`` (all of a smaller class)."""
    keep = []
    for c in np.unique(labels[idx]):
        members = idx[labels[idx] == c]
        keep.append(members[rng.permutation(len(members))[:per_class]])
    return np.sort(np.concatenate(keep))


@register_dataset
def digits(
    *, seed: int = 0, image_size: int = 32, test_fraction: float = 0.25, per_class: int = 0
) -> DatasetSplits:
    """scikit-learn's 1,797 8x8 handwritten digits, resized to ``image_size``; single-label, 10 classes.

    Args:
        seed: seed of the stratified train/test split.
        image_size: side of the returned images (bilinear, antialiased resize from 8x8).
        test_fraction: fraction of every class that goes to the test split.
        per_class: keep only this many training examples of every class (drawn with ``seed`` from the training
            split; the test split is unchanged); ``0`` keeps them all (data-efficiency experiments).
    """
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    _check_fraction("test_fraction", test_fraction)
    images, labels = load_sklearn_digits()
    if int(per_class) < 0:
        raise ValueError(f"per_class must be 0 (all) or a positive integer, got {per_class}")
    train_idx, test_idx = stratified_split(labels, test_fraction, np.random.default_rng(seed))
    if int(per_class) > 0:
        train_idx = _per_class_subset(train_idx, labels, int(per_class), np.random.default_rng([seed, 1]))
    x = resize_images(torch.from_numpy(images.copy()).unsqueeze(1), int(image_size))

    def subset(idx: np.ndarray) -> ImageSet:
        t = torch.from_numpy(idx)
        return ImageSet(
            images=x[t].contiguous(),
            labels=torch.from_numpy(labels[idx].copy()),
            source_ids=t.unsqueeze(1).clone(),
        )

    return DatasetSplits(
        train=subset(train_idx),
        test=subset(test_idx),
        num_classes=10,
        in_chans=1,
        image_size=int(image_size),
        multilabel=False,
        class_names=list(CLASS_NAMES),
        description=(
            f"sklearn digits (1797 8x8 handwritten digits) resized to {int(image_size)}px, "
            f"stratified split test_fraction={test_fraction}, seed={seed}"
            + (f", {int(per_class)} training examples per class" if int(per_class) > 0 else "")
        ),
    )
