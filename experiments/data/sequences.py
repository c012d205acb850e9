"""Sequence tasks for recurrent models: the copying memory task, the adding problem, sequential digits.

All three are generated in memory (sequential digits from scikit-learn's bundled digits), deterministic in ``seed``,
and each split is drawn from its own random stream (``numpy.random.default_rng((seed, split))``), so the test set
does not change when ``num_train`` does. Each has an extra test set of longer sequences, scored at the end of a run
as ``test/<name>/<metric>`` (docs/tasks.md).

**copying** (Hochreiter & Schmidhuber 1997, experiment 2; the form of Arjovsky, Shah & Bengio 2016, "Unitary
evolution recurrent neural networks", section 4.1). Vocabulary: ``0`` blank, ``1..S`` symbols, ``S + 1`` the
delimiter. A sample shows ``length`` random symbols, then ``delay - 1`` blanks, the delimiter and ``length`` blanks,
during which the model must output the symbols in order (sequence length ``delay + 2 length``)::

    inputs  = [s_1 .. s_L, 0 ... 0, S+1, 0 ... 0]
    targets = [-100 ...                  -100, s_1 .. s_L]

Targets are ``-100`` everywhere except the ``length`` recall positions, so the ``tokens`` task's loss and accuracy
count the recall positions only (the "copying-loss dilution" trap of the RIMs code, reference/methods.md section
5.4). **Trivial baseline**: a model that remembers nothing scores ``1/S`` accuracy (12.5 % for ``S = 8``) and
``ln S`` nats (2.079) per recall position. Inputs are int64 tokens ``(N, T)`` (vocabulary ``in_chans = S + 2``);
``num_classes = S + 2``.

**adding** (Hochreiter & Schmidhuber 1997, experiment 4; the form of Le, Jaitly & Hinton 2015). Each step has two
features ``(value, marker)``: ``value ~ U(0, 1)``, and ``marker = 1`` at exactly two steps, one drawn uniformly from
each half of the sequence (0 elsewhere). The target is the sum of the two marked values, ``(N, 1)`` float, task
``regress``. **Trivial baseline**: always predicting 1.0 (the mean) gives MSE = Var(u_1 + u_2) = 2/12 ≈ 0.167.

**sequential_digits** (the pixel-by-pixel MNIST protocol of Le et al. 2015, with the resolution test of the RIMs and
BRIMs papers, reference/methods.md sections 5.4-5.6, on scikit-learn's 1,797 8x8 digits). Each 8x8 digit is
binarised (pixel ``>= threshold``, intensities in [0, 1]), re-sampled by *nearest* interpolation from the 8x8
original to ``image_size`` (training and ``test``) and to each of ``test_sizes`` (extra test sets ``res<S>``: the
same test digits at another resolution, a longer sequence), and read in raster order as int64 tokens in {0, 1},
one pixel per step: ``(N, S * S)``, vocabulary ``in_chans = 2`` (feed them through an embedding; a raw 0 pixel
would look like no input, dido1998 #6). Task ``classify`` (the model's ``output="last"``). **Trivial baseline**:
10 % (the classes are balanced). Deviation from the papers: sklearn's 8x8 digits instead of MNIST's 28x28, so
every resolution above 8 is an up-sampling of the same 64 pixels (the sequences get longer, not more detailed).

Example:
    >>> splits = copying(num_train=8, num_test=4, length=3, delay=5, test_delay=9)
    >>> splits.train.inputs.shape, splits.tests["delay9"].inputs.shape, splits.task
    (torch.Size([8, 11]), torch.Size([4, 15]), 'tokens')
    >>> (splits.train.targets != -100).sum(dim=1).tolist() == [3] * 8
    True
    >>> a = adding(num_train=8, num_test=4, length=10, test_length=20)
    >>> a.train.inputs.shape, a.train.targets.shape, a.tests["len20"].inputs.shape
    (torch.Size([8, 10, 2]), torch.Size([8, 1]), torch.Size([4, 20, 2]))
    >>> d = sequential_digits(image_size=8, test_sizes=(10, 12))
    >>> d.train.inputs.shape[1], d.tests["res12"].inputs.shape[1], d.in_chans, d.task
    (64, 144, 2, 'classify')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._registry import DatasetSplits, SampleSet, register_dataset
from .digits import CLASS_NAMES, load_sklearn_digits, stratified_split

__all__ = ["adding", "copying", "copying_samples", "adding_samples", "sequential_digits", "digit_tokens"]

IGNORE = -100  # targets at unscored positions (the cross-entropy ignore_index)

# Random streams, one per split: default_rng((seed, stream)).
_TRAIN, _TEST, _EXTRA = 0, 1, 2


def _positive(name: str, value: int, low: int = 1) -> int:
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def copying_samples(n: int, *, length: int, num_symbols: int, delay: int, rng: np.random.Generator) -> SampleSet:
    """``n`` copying sequences: int64 inputs and targets ``(n, delay + 2 length)`` (see the module docstring)."""
    steps = delay + 2 * length
    symbols = rng.integers(1, num_symbols + 1, size=(n, length))
    x = np.zeros((n, steps), dtype=np.int64)
    x[:, :length] = symbols
    x[:, length + delay - 1] = num_symbols + 1  # the delimiter: recall starts at the next step
    y = np.full((n, steps), IGNORE, dtype=np.int64)
    y[:, steps - length :] = symbols
    return SampleSet(inputs=torch.from_numpy(x), targets=torch.from_numpy(y))


@register_dataset
def copying(
    *,
    seed: int = 0,
    num_train: int = 4000,
    num_test: int = 500,
    length: int = 10,
    num_symbols: int = 8,
    delay: int = 20,
    test_delay: int = 40,
) -> DatasetSplits:
    """The copying memory task: recall ``length`` symbols after ``delay`` steps (module docstring).

    Args:
        seed: seed of the symbol draws.
        num_train, num_test: number of sequences in train and test (and in the extra test set).
        length: symbols to remember (and recall positions).
        num_symbols: alphabet size ``S`` (vocabulary ``S + 2`` with the blank and the delimiter).
        delay: steps from the last symbol shown to the first recall step (the delimiter is the last of them).
        test_delay: delay of the extra test set ``delay<test_delay>``; 0: none.
    """
    length = _positive("length", length)
    num_symbols = _positive("num_symbols", num_symbols)
    delay = _positive("delay", delay)
    test_delay = _positive("test_delay", test_delay, 0)
    opts = dict(length=length, num_symbols=num_symbols)
    tests = {}
    if test_delay:
        tests[f"delay{test_delay}"] = copying_samples(
            _positive("num_test", num_test), delay=test_delay, rng=np.random.default_rng((seed, _EXTRA)), **opts
        )
    return DatasetSplits(
        train=copying_samples(_positive("num_train", num_train), delay=delay,
                              rng=np.random.default_rng((seed, _TRAIN)), **opts),
        test=copying_samples(_positive("num_test", num_test), delay=delay, rng=np.random.default_rng((seed, _TEST)),
                             **opts),
        tests=tests,
        num_classes=num_symbols + 2,
        in_chans=num_symbols + 2,
        image_size=0,
        multilabel=False,
        class_names=["blank"] + [str(k) for k in range(1, num_symbols + 1)] + ["delimiter"],
        task="tokens",
        description=(
            f"copying memory task: recall {length} of {num_symbols} symbols after {delay} steps "
            f"(test also at {test_delay}); chance {1 / num_symbols:.3f} per recall position, seed={seed}"
        ),
    )


def adding_samples(n: int, *, length: int, rng: np.random.Generator) -> SampleSet:
    """``n`` adding-problem sequences: float32 inputs ``(n, length, 2)`` and targets ``(n, 1)``."""
    values = rng.random((n, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length), dtype=np.float32)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values[rows, first] + values[rows, second]).astype(np.float32)[:, None]
    return SampleSet(inputs=torch.from_numpy(x), targets=torch.from_numpy(y))


@register_dataset
def adding(
    *,
    seed: int = 0,
    num_train: int = 4000,
    num_test: int = 500,
    length: int = 50,
    test_length: int = 200,
) -> DatasetSplits:
    """The adding problem: sum the two marked values of a ``length``-step sequence (module docstring).

    Args:
        seed: seed of the draws.
        num_train, num_test: number of sequences in train and test (and in the extra test set).
        length: sequence length (at least 2: one marker per half).
        test_length: length of the extra test set ``len<test_length>``; 0: none.
    """
    length = _positive("length", length, 2)
    test_length = _positive("test_length", test_length, 0)
    if test_length == 1:
        raise ValueError("test_length must be 0 (no extra test set) or >= 2")
    tests = {}
    if test_length:
        tests[f"len{test_length}"] = adding_samples(
            _positive("num_test", num_test), length=test_length, rng=np.random.default_rng((seed, _EXTRA))
        )
    return DatasetSplits(
        train=adding_samples(_positive("num_train", num_train), length=length,
                             rng=np.random.default_rng((seed, _TRAIN))),
        test=adding_samples(_positive("num_test", num_test), length=length, rng=np.random.default_rng((seed, _TEST))),
        tests=tests,
        num_classes=1,
        in_chans=2,
        image_size=0,
        multilabel=False,
        task="regress",
        description=(
            f"adding problem, length {length} (test also at {test_length}); predicting 1.0 gives MSE 1/6, seed={seed}"
        ),
    )


def digit_tokens(images: np.ndarray, size: int, threshold: float = 0.5) -> torch.Tensor:
    """8x8 digits in [0, 1] ``(N, 8, 8)`` -> binarised, nearest-resampled to ``size``, raster tokens ``(N, size^2)``."""
    binary = torch.from_numpy(np.ascontiguousarray(images >= threshold)).to(torch.float32).unsqueeze(1)
    if binary.shape[-1] != size:
        binary = F.interpolate(binary, size=(size, size), mode="nearest-exact")
    return binary.flatten(1).round().to(torch.int64)


@register_dataset
def sequential_digits(
    *,
    seed: int = 0,
    image_size: int = 14,
    test_sizes: Sequence[int] = (16, 19, 24),
    test_fraction: float = 0.25,
    threshold: float = 0.5,
) -> DatasetSplits:
    """sklearn's digits, binarised, one pixel per step at ``image_size`` and, for testing, at ``test_sizes``.

    Args:
        seed: seed of the stratified train/test split of the 1,797 digits.
        image_size: side of the training (and ``test``) images: sequences of ``image_size ** 2`` tokens.
        test_sizes: sides of the extra test sets ``res<S>`` (the test digits, re-sampled from 8x8).
        test_fraction: fraction of every class in the test split.
        threshold: a pixel (intensity in [0, 1]) is 1 when ``>= threshold``.
    """
    image_size = _positive("image_size", image_size)
    sizes = [_positive("test_sizes entry", s) for s in test_sizes]
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    images, labels = load_sklearn_digits()
    train_idx, test_idx = stratified_split(labels, test_fraction, np.random.default_rng(seed))

    def subset(idx: np.ndarray, size: int) -> SampleSet:
        return SampleSet(inputs=digit_tokens(images[idx], size, threshold), targets=torch.from_numpy(labels[idx].copy()))

    return DatasetSplits(
        train=subset(train_idx, image_size),
        test=subset(test_idx, image_size),
        tests={f"res{s}": subset(test_idx, s) for s in sizes},
        num_classes=10,
        in_chans=2,
        image_size=0,
        multilabel=False,
        class_names=list(CLASS_NAMES),
        task="classify",
        description=(
            f"sequential sklearn digits: binarised (>= {threshold}), {image_size}x{image_size} = "
            f"{image_size ** 2} tokens (tests at {', '.join(map(str, sizes)) or 'no other size'}), seed={seed}"
        ),
    )
