"""Pairs of scikit-learn digits, same or different class: the verification task of Siamese networks.

Koch et al. (2015, section 3) train a Siamese network to tell whether two images show the same character; Hadsell
et al. (2006) learn an embedding from similar and dissimilar pairs. ``digit_pairs`` builds that task from the
bundled 1,797 digits (no download): every example is two digits stacked along the channels, ``(2, S, S)`` (first
image = channel 0), labelled 1 ("same") when both show the same digit and 0 ("different") otherwise, so the
framework's ``classify`` task and runner train a pair classifier such as ``baselines``' ``siamese`` model unchanged.

The digits are split into train and test digits first (stratified, as ``digits``), and the pairs of each split are
drawn only from that split's digits: no test image is ever seen in training. Pairs are sampled with a generator
seeded by ``seed``: ``round(same_fraction * n)`` same-class pairs (a class drawn uniformly, then two different
digits of it) and the rest different-class pairs (two different classes drawn uniformly, one digit of each), in
shuffled order. ``source_ids`` holds the two ``load_digits()`` indices of every pair.

Example::

    from experiments.data import create_dataset

    splits = create_dataset("digit_pairs", seed=0, image_size=32, num_train=1000, num_test=200)
    splits.train.images.shape        # torch.Size([1000, 2, 32, 32])
    splits.train.labels.float().mean()   # tensor(0.5000): half the pairs are the same digit
"""

from __future__ import annotations

import numpy as np
import torch

from ._registry import DatasetSplits, ImageSet, register_dataset
from .digits import load_sklearn_digits, resize_images, stratified_split

__all__ = ["digit_pairs", "sample_pairs"]

CLASS_NAMES = ["different", "same"]


def sample_pairs(labels: np.ndarray, n: int, same_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` int64 rows ``(i, j, same)``: indices into ``labels`` of two distinct items, and 1 if same class.

    ``round(same_fraction * n)`` rows are same-class pairs, the others different-class pairs, shuffled.
    """
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    usable = [c for c in classes if len(members[c]) >= 2]
    n_same = int(round(same_fraction * n))
    if n_same and not usable:
        raise ValueError("no class has two items: cannot draw same-class pairs")
    if n - n_same and len(classes) < 2:
        raise ValueError("only one class: cannot draw different-class pairs")
    rows = np.empty((n, 3), dtype=np.int64)
    for k in range(n):
        if k < n_same:
            c = usable[rng.integers(len(usable))]
            i, j = rng.choice(members[c], size=2, replace=False)
            rows[k] = (i, j, 1)
        else:
            a, b = rng.choice(classes, size=2, replace=False)
            rows[k] = (rng.choice(members[a]), rng.choice(members[b]), 0)
    return rows[rng.permutation(n)]


@register_dataset
def digit_pairs(
    *,
    seed: int = 0,
    image_size: int = 32,
    test_fraction: float = 0.25,
    num_train: int = 4000,
    num_test: int = 1000,
    same_fraction: float = 0.5,
) -> DatasetSplits:
    """Pairs of sklearn digits stacked along channels, ``(2, S, S)``, labelled same (1) or different (0).

    Args:
        seed: seed of the digit split and of the pair sampling.
        image_size: side of each image (bilinear, antialiased resize from 8x8).
        test_fraction: fraction of every class's digits that only test pairs use.
        num_train: number of training pairs.
        num_test: number of test pairs.
        same_fraction: fraction of same-digit pairs (0.5: balanced).
    """
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    if not 0.0 <= float(same_fraction) <= 1.0:
        raise ValueError(f"same_fraction must be between 0 and 1, got {same_fraction}")
    if int(num_train) < 1 or int(num_test) < 1:
        raise ValueError(f"num_train and num_test must be positive, got {num_train} and {num_test}")
    images, labels = load_sklearn_digits()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = stratified_split(labels, test_fraction, rng)
    x = resize_images(torch.from_numpy(images.copy()).unsqueeze(1), int(image_size))

    def subset(pool: np.ndarray, n: int) -> ImageSet:
        rows = sample_pairs(labels[pool], int(n), float(same_fraction), rng)
        first, second = pool[rows[:, 0]], pool[rows[:, 1]]
        return ImageSet(
            images=torch.cat([x[torch.from_numpy(first)], x[torch.from_numpy(second)]], dim=1).contiguous(),
            labels=torch.from_numpy(rows[:, 2].copy()),
            source_ids=torch.from_numpy(np.stack([first, second], axis=1)),
        )

    train = subset(train_idx, num_train)
    test = subset(test_idx, num_test)
    return DatasetSplits(
        train=train,
        test=test,
        num_classes=2,
        in_chans=2,
        image_size=int(image_size),
        multilabel=False,
        class_names=list(CLASS_NAMES),
        description=(
            f"pairs of sklearn digits at {int(image_size)}px stacked along channels, same (1) or different (0) "
            f"digit, same_fraction={same_fraction}; {num_train} train / {num_test} test pairs from disjoint digits "
            f"(test_fraction={test_fraction}), seed={seed}"
        ),
    )
