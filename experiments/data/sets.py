"""Set datasets: sums of sets of scikit-learn digits, and point clouds sampled from generated shapes.

Both are deterministic functions of their options (``seed`` included), built in memory with no network.

``digit_sums`` (Zaheer et al. 2017's digit-sum task on sklearn's 8x8 digits): each sample is a set of
``min_size..max_size`` digit images (flattened to 64 pixels in ``[0, 1]``), padded to ``max_size`` with zeros and a
boolean ``mask`` (``True`` for real elements); the target is the sum of the digits, classified over the
``9 * max_size + 1`` possible sums (``classify`` task; inputs ``{"x": (N, max_size, 64), "mask": (N, max_size)}``).
Train and test sets draw their images from disjoint digit images (a stratified split of the 1,797). The extra test
set ``size<max_size>`` holds sets of exactly ``max_size`` digits (the hardest sums).

``point_clouds``: each sample is ``num_points`` points sampled uniformly (by arc length or area) on the outline of
a 2-D shape (circle, triangle, square, five-pointed star) or the surface of a 3-D shape (sphere, cube, cylinder,
cone), randomly rotated, scaled by a factor in ``[0.6, 1.4]`` and jittered by Gaussian noise of std ``noise``; the
target is the shape (``classify``; inputs ``(N, num_points, dim)``). The extra test set ``points<4 num_points>``
has four times as many points per cloud (max- and mean-pooling models see the same shapes; a sum-pooling model
does not).

Example::

    from experiments.data import create_dataset

    s = create_dataset("digit_sums", num_train=100, num_test=50)
    s.train.inputs["x"].shape, s.train.inputs["mask"].shape, s.num_classes   # (100, 5, 64), (100, 5), 46
    p = create_dataset("point_clouds", num_train=100, num_test=50, dim=3)
    p.train.inputs.shape, p.class_names     # (100, 64, 3), ['sphere', 'cube', 'cylinder', 'cone']
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._registry import DatasetSplits, SampleSet, register_dataset
from .digits import load_sklearn_digits, stratified_split

__all__ = ["SHAPES_2D", "SHAPES_3D", "digit_sums", "majority_accuracy", "point_clouds", "sample_shape"]

SHAPES_2D = ("circle", "triangle", "square", "star")
SHAPES_3D = ("sphere", "cube", "cylinder", "cone")


def majority_accuracy(train_targets: torch.Tensor, test_targets: torch.Tensor) -> float:
    """Test accuracy (%) of always predicting the most frequent training target: the trivial baseline."""
    mode = torch.mode(train_targets.flatten()).values
    return 100.0 * float((test_targets == mode).float().mean())


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


@register_dataset
def digit_sums(*, seed: int = 0, num_train: int = 5000, num_test: int = 1000, min_size: int = 1,
               max_size: int = 5, test_fraction: float = 0.25) -> DatasetSplits:
    """Sets of ``min_size..max_size`` sklearn digits (flattened 8x8) -> their sum, over ``9 max_size + 1`` classes.

    Args:
        seed: seed of the digit split and of the sets.
        num_train, num_test: number of sets.
        min_size, max_size: set sizes, uniform in ``[min_size, max_size]``; padding to ``max_size`` + ``mask``.
        test_fraction: share of each digit class whose images only appear in test sets.
    """
    _check_positive(num_train=num_train, num_test=num_test, min_size=min_size, max_size=max_size)
    if min_size > max_size:
        raise ValueError(f"min_size ({min_size}) must be <= max_size ({max_size})")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    images, labels = load_sklearn_digits()
    rng = np.random.default_rng(seed)
    train_pool, test_pool = stratified_split(labels, test_fraction, rng)
    flat = torch.from_numpy(images.reshape(len(images), -1).copy())

    def make(pool: np.ndarray, n: int, lo: int) -> SampleSet:
        sizes = rng.integers(lo, max_size + 1, size=n)
        idx = pool[rng.integers(0, len(pool), size=(n, max_size))]
        mask = np.arange(max_size)[None, :] < sizes[:, None]
        x = flat[torch.from_numpy(idx)] * torch.from_numpy(mask).unsqueeze(-1).float()
        target = (labels[idx] * mask).sum(1)
        return SampleSet(inputs={"x": x.contiguous(), "mask": torch.from_numpy(mask)},
                         targets=torch.from_numpy(target.astype(np.int64)))

    train, test = make(train_pool, int(num_train), int(min_size)), make(test_pool, int(num_test), int(min_size))
    full = make(test_pool, int(num_test), int(max_size))
    k = 9 * int(max_size) + 1
    trivial = majority_accuracy(train.targets, test.targets)
    return DatasetSplits(
        train=train, test=test, tests={f"size{int(max_size)}": full}, num_classes=k, in_chans=64, image_size=0,
        multilabel=False, task="classify", class_names=[str(s) for s in range(k)],
        description=(f"sets of {min_size}-{max_size} sklearn digits (flattened 8x8, padded + mask) -> their sum "
                     f"({k} classes); train/test digit images disjoint (test_fraction={test_fraction}), "
                     f"seed={seed}; majority-sum accuracy {trivial:.1f}%"),
    )


def _rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    if dim == 2:
        a = rng.uniform(0, 2 * math.pi)
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))[None, :]


def _polygon(rng: np.random.Generator, vertices: np.ndarray, n: int) -> np.ndarray:
    """``n`` points uniform by arc length on the closed polygon through ``vertices`` ``(V, 2)``."""
    edges = np.roll(vertices, -1, axis=0) - vertices
    length = np.linalg.norm(edges, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(length)])
    s = rng.uniform(0, cum[-1], size=n)
    e = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(edges) - 1)
    t = ((s - cum[e]) / length[e])[:, None]
    return vertices[e] + t * edges[e]


def _regular(v: int, radii: tuple[float, ...] = (1.0,)) -> np.ndarray:
    a = np.arange(v) * 2 * math.pi / v
    r = np.array([radii[i % len(radii)] for i in range(v)])
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def sample_shape(rng: np.random.Generator, shape: str, n: int) -> np.ndarray:
    """``n`` points uniform on the outline (2-D) or surface (3-D) of a unit-size ``shape``, ``(n, 2 or 3)``.

    2-D: ``circle`` (radius 1), ``triangle``, ``square`` (vertices on the unit circle), ``star`` (5 points, inner
    radius 0.45). 3-D: ``sphere`` (radius 1), ``cube`` (side 2), ``cylinder`` and ``cone`` (radius 1, height 2,
    caps included), all centred at the origin.
    """
    if shape == "circle":
        a = rng.uniform(0, 2 * math.pi, n)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape in ("triangle", "square", "star"):
        verts = {"triangle": _regular(3), "square": _regular(4), "star": _regular(10, (1.0, 0.45))}[shape]
        return _polygon(rng, verts, n)
    if shape == "sphere":
        p = rng.standard_normal((n, 3))
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    if shape == "cube":
        p = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        p[np.arange(n), axis] = rng.choice([-1.0, 1.0], n)
        return p
    if shape == "cylinder":  # side area 4 pi, caps 2 pi
        a, z = rng.uniform(0, 2 * math.pi, n), rng.uniform(-1, 1, n)
        r = np.ones(n)
        cap = rng.uniform(0, 6 * math.pi, n) < 2 * math.pi
        r[cap] = np.sqrt(rng.uniform(0, 1, cap.sum()))
        z[cap] = rng.choice([-1.0, 1.0], cap.sum())
        return np.stack([r * np.cos(a), r * np.sin(a), z], 1)
    if shape == "cone":  # apex at z = 1, base radius 1 at z = -1: side area pi sqrt(5), base pi
        a = rng.uniform(0, 2 * math.pi, n)
        base = rng.uniform(0, math.pi * (1 + math.sqrt(5)), n) < math.pi
        r = np.sqrt(rng.uniform(0, 1, n))  # uniform by area on the disc and on the unrolled side
        z = np.where(base, -1.0, 1.0 - 2.0 * r)
        return np.stack([r * np.cos(a), r * np.sin(a), z], 1)
    raise ValueError(f"unknown shape {shape!r}; choose from: {', '.join(SHAPES_2D + SHAPES_3D)}")


@register_dataset
def point_clouds(*, seed: int = 0, num_train: int = 2000, num_test: int = 500, num_points: int = 64, dim: int = 2,
                 noise: float = 0.03) -> DatasetSplits:
    """Point clouds on 2-D outlines (circle, triangle, square, star) or 3-D surfaces -> the shape (4 classes).

    Args:
        seed: seed of everything.
        num_train, num_test: number of clouds (classes balanced in expectation, drawn uniformly).
        num_points: points per cloud (the extra test set ``points<4 num_points>`` has four times as many).
        dim: 2 (outlines) or 3 (sphere, cube, cylinder, cone surfaces).
        noise: std of the Gaussian jitter added to every coordinate (after the random rotation and scale).
    """
    _check_positive(num_train=num_train, num_test=num_test, num_points=num_points)
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    if float(noise) < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    shapes = SHAPES_2D if dim == 2 else SHAPES_3D
    rng = np.random.default_rng(seed)

    def make(n: int, points: int) -> SampleSet:
        y = rng.integers(0, len(shapes), n)
        x = np.empty((n, points, dim), dtype=np.float32)
        for i in range(n):
            p = sample_shape(rng, shapes[y[i]], points) @ _rotation(rng, dim).T * rng.uniform(0.6, 1.4)
            x[i] = p + noise * rng.standard_normal(p.shape)
        return SampleSet(inputs=torch.from_numpy(x), targets=torch.from_numpy(y.astype(np.int64)))

    train, test = make(int(num_train), int(num_points)), make(int(num_test), int(num_points))
    more = make(int(num_test), 4 * int(num_points))
    trivial = majority_accuracy(train.targets, test.targets)
    return DatasetSplits(
        train=train, test=test, tests={f"points{4 * int(num_points)}": more}, num_classes=len(shapes), in_chans=dim,
        image_size=0, multilabel=False, task="classify", class_names=list(shapes),
        description=(f"{num_points} points on {dim}-D {'outlines' if dim == 2 else 'surfaces'} of "
                     f"{', '.join(shapes)}, random rotation, scale 0.6-1.4, noise {noise}, seed={seed}; "
                     f"majority-class accuracy {trivial:.1f}%"),
    )
