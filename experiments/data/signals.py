"""Signals: generated mu-law waveforms (WaveNet) and coordinate-fitting targets (SIREN), built in memory.

- ``waveforms`` (task ``tokens``): sums of tones and linear chirps under attack/decay or tremolo envelopes, plus a
  little noise, sampled at 8 kHz and mu-law quantised to 256 classes (``baselines.wavenet.mu_law_encode``'s formula).
  Inputs are the classes ``x[:, :-1]`` ``(N, T)`` int64, targets the next sample's class ``x[:, 1:]`` ``(N, T)``.
  Trivial baselines: a uniform guess scores ``ln 256 = 5.545`` nats per sample; the marginal class distribution
  of the training set scores its entropy (``marginal_entropy``, 5.15 nats at the defaults).
- ``image_fit`` (task ``regress``): scikit-learn's bundled photo ``china.jpg`` (no download), centre-cropped to a
  square, grey (ITU-R 601 luma), resized (bilinear, antialiased) to ``2 S x 2 S``. Inputs are pixel-centre
  coordinates ``(x, y)`` in ``[-1, 1]``, targets the intensity ``(N, 1)`` in ``[0, 1]``. ``train`` is the ``S x S``
  grid of even pixels and ``test`` **the same pixels** (the fitting task of Sitzmann et al.); the extra test set
  ``between`` holds the other ``3 S^2`` pixels (interpolation to twice the resolution).
- ``signal_fit`` (task ``regress``): a generated 1-D signal on ``[-1, 1]`` (a few sines, a linear chirp and a step)
  scaled to ``[0, 1]``, ``2 n`` samples; ``train`` = ``test`` = the ``n`` even samples (fitting), ``between`` = the odd
  samples.

The PSNR of predicting the training mean is ``-10 log10(mse)`` of that constant: :func:`mean_psnr`.

Example::

    from experiments.data import create_dataset

    s = create_dataset("waveforms", seed=0, num_train=8, num_test=4, length=256)
    s.train.inputs.shape, s.train.targets.shape, s.task     # (8, 256), (8, 256), 'tokens'
    f = create_dataset("image_fit", image_size=64)
    f.train.inputs.shape, f.tests["between"].targets.shape  # (4096, 2), (12288, 1)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._registry import DatasetSplits, SampleSet, register_dataset

__all__ = ["image_fit", "marginal_entropy", "mean_psnr", "mu_law_classes", "signal_fit", "waveforms"]


def mu_law_classes(x: np.ndarray, num_classes: int = 256) -> np.ndarray:
    """Mu-law companding of ``x`` in ``[-1, 1]`` and quantisation to int64 classes ``0 .. num_classes - 1``."""
    mu = num_classes - 1
    x = np.clip(x, -1.0, 1.0)
    f = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    return np.floor((f + 1.0) / 2.0 * mu + 0.5).astype(np.int64)


def marginal_entropy(targets: torch.Tensor, num_classes: int = 256) -> float:
    """Entropy (nats) of the class frequencies of ``targets``: the NLL of always predicting that marginal."""
    counts = torch.bincount(targets[targets >= 0].flatten(), minlength=num_classes).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def mean_psnr(train_targets: torch.Tensor, test_targets: torch.Tensor) -> float:
    """PSNR (dB, signals in [0, 1]) on ``test_targets`` of predicting the per-channel mean of ``train_targets``."""
    mean = train_targets.reshape(-1, train_targets.shape[-1]).mean(0)
    mse = float(((test_targets - mean) ** 2).mean())
    return -10.0 * math.log10(mse)


def _waveform(rng: np.random.Generator, n: int, sample_rate: float) -> np.ndarray:
    """One waveform of ``n`` samples in ``[-1, 1]``: tones or a chirp, an envelope, a little noise."""
    t = np.arange(n) / sample_rate
    if rng.random() < 0.6:  # a chord of 1-3 tones
        x = np.zeros(n)
        for _ in range(rng.integers(1, 4)):
            f = rng.uniform(80.0, 1000.0)
            x += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    else:  # a linear chirp f0 -> f1 over the clip
        f0, f1 = rng.uniform(80.0, 1000.0, size=2)
        duration = n / sample_rate
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)) + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:  # attack then exponential decay
        attack = rng.uniform(0.002, 0.02)
        env = np.minimum(t / attack, 1.0) * np.exp(-np.maximum(t - attack, 0.0) * rng.uniform(2.0, 30.0))
    else:  # tremolo
        env = 1.0 - rng.uniform(0.0, 0.8) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.0, 12.0) * t))
    x = x * env
    x = x / max(np.abs(x).max(), 1e-8) * rng.uniform(0.3, 0.95)
    x = x + rng.normal(0.0, 0.003, size=n)
    return np.clip(x, -1.0, 1.0)


@register_dataset
def waveforms(
    *, seed: int = 0, num_train: int = 512, num_test: int = 128, length: int = 256, sample_rate: int = 8000
) -> DatasetSplits:
    """Generated mu-law waveforms for next-sample prediction (task ``tokens``, 256 classes; see module docstring).

    Args:
        seed: seed of the generator (train and test waveforms are different draws of it).
        num_train, num_test: waveforms per split.
        length: scored positions per waveform (each waveform has ``length + 1`` samples).
        sample_rate: samples per second (frequencies are drawn in 80 Hz .. 1 kHz).
    """
    if int(num_train) < 1 or int(num_test) < 1 or int(length) < 1 or int(sample_rate) < 1:
        raise ValueError(
            f"num_train, num_test, length and sample_rate must be positive, got {num_train}, {num_test}, {length}, "
            f"{sample_rate}"
        )
    rng = np.random.default_rng(seed)
    waves = np.stack([_waveform(rng, int(length) + 1, float(sample_rate)) for _ in range(num_train + num_test)])
    q = torch.from_numpy(mu_law_classes(waves))

    def subset(rows: slice) -> SampleSet:
        return SampleSet(inputs=q[rows, :-1].contiguous(), targets=q[rows, 1:].contiguous())

    train, test = subset(slice(0, num_train)), subset(slice(num_train, None))
    return DatasetSplits(
        train=train,
        test=test,
        num_classes=256,
        in_chans=256,
        image_size=0,
        multilabel=False,
        task="tokens",
        description=(
            f"generated tones/chirps with envelopes, {sample_rate} Hz, mu-law 256 classes, {num_train}/{num_test} "
            f"waveforms of {length} scored samples, seed={seed}; marginal entropy of train targets "
            f"{marginal_entropy(train.targets):.3f} nats (uniform: ln 256 = {math.log(256):.3f})"
        ),
    )


@lru_cache(maxsize=4)
def _photo(side: int) -> torch.Tensor:
    """``china.jpg`` centre-cropped, grey, resized to ``side x side``: float32 in ``[0, 1]`` (cached)."""
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image("china.jpg").astype(np.float32) / 255.0  # (427, 640, 3)
    h, w, _ = rgb.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    grey = rgb[top : top + s, left : left + s] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = torch.from_numpy(np.ascontiguousarray(grey))[None, None]
    out = F.interpolate(img, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].clamp(0.0, 1.0)


def _grid_coords(side: int) -> torch.Tensor:
    """Pixel-centre coordinates ``(side, side, 2)`` = ``(x, y)`` in ``[-1, 1]``."""
    c = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2.0 - 1.0
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def _fit_splits(coords: torch.Tensor, values: torch.Tensor, even: torch.Tensor, *, in_chans: int,
                description: str) -> DatasetSplits:
    train = SampleSet(inputs=coords[even].contiguous(), targets=values[even].contiguous())
    between = SampleSet(inputs=coords[~even].contiguous(), targets=values[~even].contiguous())
    return DatasetSplits(
        train=train,
        test=SampleSet(inputs=train.inputs.clone(), targets=train.targets.clone()),
        tests={"between": between},
        num_classes=1,
        in_chans=in_chans,
        image_size=0,
        multilabel=False,
        task="regress",
        description=(
            f"{description}; test = the training points (fitting), 'between' = held-out points in between. "
            f"PSNR of the train mean: test {mean_psnr(train.targets, train.targets):.2f} dB, "
            f"between {mean_psnr(train.targets, between.targets):.2f} dB"
        ),
    )


@register_dataset
def image_fit(*, seed: int = 0, image_size: int = 64) -> DatasetSplits:
    """scikit-learn's ``china.jpg`` in grey as coordinates -> intensity (task ``regress``; see module docstring).

    Args:
        seed: unused by the data (the photo is fixed); accepted as every builder's seed.
        image_size: ``S``: the training grid is ``S x S`` pixels of the ``2 S x 2 S`` image.
    """
    del seed
    s = int(image_size)
    if s < 2:
        raise ValueError(f"image_size must be an integer >= 2, got {image_size}")
    img = _photo(2 * s)
    idx = torch.arange(2 * s)
    even = ((idx[:, None] % 2 == 0) & (idx[None, :] % 2 == 0)).flatten()
    return _fit_splits(_grid_coords(2 * s).reshape(-1, 2), img.reshape(-1, 1), even, in_chans=2,
                       description=f"sklearn china.jpg, grey, {2 * s}x{2 * s}; train: the {s}x{s} even pixels")


@register_dataset
def signal_fit(*, seed: int = 0, num_points: int = 512, num_tones: int = 4, max_freq: float = 24.0) -> DatasetSplits:
    """A generated 1-D signal on ``[-1, 1]`` as coordinate -> value (task ``regress``; see module docstring).

    Args:
        seed: seed of the frequencies, phases, amplitudes and step position.
        num_points: ``n``: training samples (the signal has ``2 n``).
        num_tones: sines in the sum.
        max_freq: highest sine frequency in cycles over ``[-1, 1]``.
    """
    n = int(num_points)
    if n < 2 or int(num_tones) < 0 or max_freq <= 0:
        raise ValueError(f"need num_points >= 2, num_tones >= 0, max_freq > 0; got {num_points}, {num_tones}, "
                         f"{max_freq}")
    rng = np.random.default_rng(seed)
    x = (np.arange(2 * n) + 0.5) / (2 * n) * 2.0 - 1.0
    y = np.zeros_like(x)
    for _ in range(int(num_tones)):
        f = rng.uniform(0.5, max_freq) / 2.0  # cycles per unit length (the domain is 2 long)
        y += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f * x + rng.uniform(0, 2 * np.pi))
    y += 0.5 * np.sin(2 * np.pi * (x + 1.0) ** 2 * max_freq / 8.0)  # a chirp
    y += np.where(x > rng.uniform(-0.5, 0.5), 0.8, 0.0)  # a step
    y = (y - y.min()) / (y.max() - y.min())
    even = torch.from_numpy(np.arange(2 * n) % 2 == 0)
    coords = torch.from_numpy(x.astype(np.float32))[:, None]
    values = torch.from_numpy(y.astype(np.float32))[:, None]
    return _fit_splits(coords, values, even, in_chans=1,
                       description=f"generated 1-D signal ({num_tones} sines, chirp, step), {2 * n} samples, "
                       f"seed={seed}; train: the {n} even samples")
