"""Token tasks for the Transformer and the Perceiver: sequence-to-sequence copy/reverse, and pixel-permuted digits.

- ``seq2seq``: a random string of symbols in, the same string (``mode="copy"``) or its reversal
  (``mode="reverse"``) out; the ``tokens`` task with teacher forcing. Inputs are dicts ``{"src", "tgt_in"}`` (a
  model is called as ``model(src=..., tgt_in=...)``, e.g. :class:`baselines.transformer.Transformer`).
- ``permuted_digits``: scikit-learn's digits (the ``digits`` dataset) with one fixed random permutation of the
  pixels applied to every image of both splits: the test of Jaegle et al. (2021, section 4.1) that a model without
  a locality prior (the Perceiver, an MLP) learns permuted images as well as ordered ones while a CNN does not.

Token ids of ``seq2seq``: ``0`` = padding, ``1`` = start (BOS), ``2 .. num_symbols + 1`` = the symbols; the input
and output vocabularies are the same (``in_chans = num_classes = num_symbols + 2``).

Example::

    from experiments.data import create_dataset

    splits = create_dataset("seq2seq", mode="reverse", max_len=6, num_train=8, num_test=4)
    splits.train.inputs["src"][1]      # tensor([ 3, 10,  8,  0,  0,  0]): 3 symbols, then padding
    splits.train.inputs["tgt_in"][1]   # tensor([ 1,  8, 10,  3,  0,  0]): start token, reversed symbols
    splits.train.targets[1]            # tensor([   8,   10,    3, -100, -100, -100])
"""

from __future__ import annotations

import numpy as np
import torch

from ._registry import DatasetSplits, ImageSet, SampleSet, register_dataset
from .digits import digits

__all__ = ["BOS", "IGNORE", "PAD", "SEQ2SEQ_MODES", "permuted_digits", "pixel_permutation", "seq2seq"]

PAD, BOS, IGNORE = 0, 1, -100
SEQ2SEQ_MODES = ("copy", "reverse")


def _sequences(
    rng: np.random.Generator, n: int, *, num_symbols: int, min_len: int, max_len: int, width: int,
    exclude: set[bytes] | None = None,
) -> np.ndarray:
    """``n`` distinct random strings (rows of symbol ids ``2..num_symbols+1``, ``PAD`` after the end), none in
    ``exclude``, as an int64 ``(n, width)`` array."""
    rows: list[np.ndarray] = []
    seen = set(exclude or ())
    capacity = sum(num_symbols**k for k in range(min_len, max_len + 1))
    if n + len(seen) > capacity:
        raise ValueError(f"asked for {n} distinct sequences, but only {capacity - len(seen)} are available: "
                         "raise max_len or num_symbols, or lower num_train/num_test")  # fmt: skip
    while len(rows) < n:
        length = int(rng.integers(min_len, max_len + 1))
        row = np.full(width, PAD, dtype=np.int64)
        row[:length] = rng.integers(2, num_symbols + 2, size=length)
        key = row.tobytes()
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return np.stack(rows)


def _sample_set(src: np.ndarray, mode: str) -> SampleSet:
    """``{"src", "tgt_in"}`` and targets for source rows ``src`` (``PAD``-terminated)."""
    lengths = (src != PAD).sum(axis=1)
    out = np.full_like(src, PAD)
    for i, n in enumerate(lengths):
        out[i, :n] = src[i, :n] if mode == "copy" else src[i, :n][::-1]
    tgt_in = np.concatenate([np.full((len(src), 1), BOS, dtype=np.int64), out[:, :-1]], axis=1)
    targets = np.where(np.arange(src.shape[1])[None, :] < lengths[:, None], out, IGNORE)
    return SampleSet(
        inputs={"src": torch.from_numpy(src), "tgt_in": torch.from_numpy(tgt_in)}, targets=torch.from_numpy(targets)
    )


@register_dataset
def seq2seq(
    *,
    seed: int = 0,
    mode: str = "reverse",
    num_symbols: int = 10,
    min_len: int = 3,
    max_len: int = 10,
    num_train: int = 4000,
    num_test: int = 500,
    long_len: int = 0,
) -> DatasetSplits:
    """Copy or reverse random strings: ``{"src": (N, max_len), "tgt_in": (N, max_len)}`` int64 -> ``(N, max_len)``.

    Args:
        seed: seed of the strings.
        mode: ``"copy"`` (output = input) or ``"reverse"`` (output = the input reversed).
        num_symbols: distinct symbols (ids ``2 .. num_symbols + 1``).
        min_len, max_len: string lengths, uniform in ``[min_len, max_len]``; rows are padded to ``max_len``.
        num_train, num_test: strings per split; all distinct, and no test string occurs in train.
        long_len: if > 0, an extra test set ``len<long_len>`` of ``num_test`` strings of exactly that length
            (length generalisation: positions never seen in training).

    Targets are ``-100`` after a string's end (not scored); ``tgt_in`` is the start token followed by the output
    shifted right (teacher forcing). Trivial baselines: guessing a uniformly random symbol scores
    ``acc = 1 / num_symbols`` (0.1 at the defaults) and ``seq_acc ~ 0``.
    """
    if mode not in SEQ2SEQ_MODES:
        raise ValueError(f"mode must be one of {', '.join(SEQ2SEQ_MODES)}, got {mode!r}")
    if not 1 <= int(min_len) <= int(max_len):
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if int(num_symbols) < 2 or int(num_train) < 1 or int(num_test) < 1:
        raise ValueError(f"need num_symbols >= 2 and num_train, num_test >= 1; got {num_symbols}, {num_train}, "
                         f"{num_test}")  # fmt: skip
    if long_len and int(long_len) <= int(max_len):
        raise ValueError(f"long_len must be 0 (none) or > max_len ({max_len}), got {long_len}")
    rng = np.random.default_rng(seed)
    kw = dict(num_symbols=int(num_symbols), min_len=int(min_len), max_len=int(max_len), width=int(max_len))
    train = _sequences(rng, int(num_train), **kw)
    test = _sequences(rng, int(num_test), exclude={r.tobytes() for r in train}, **kw)
    tests = {}
    if long_len:
        n = int(long_len)
        long = _sequences(rng, int(num_test), num_symbols=int(num_symbols), min_len=n, max_len=n, width=n)
        tests[f"len{n}"] = _sample_set(long, mode)
    return DatasetSplits(
        train=_sample_set(train, mode),
        test=_sample_set(test, mode),
        tests=tests,
        num_classes=int(num_symbols) + 2,
        in_chans=int(num_symbols) + 2,
        image_size=0,
        multilabel=False,
        task="tokens",
        description=(
            f"{mode} random strings of {num_symbols} symbols, lengths {min_len}-{max_len} "
            f"({num_train} train / {num_test} test, disjoint), seed={seed}"
            + (f", extra test at length {long_len}" if long_len else "")
        ),
    )


def pixel_permutation(num_pixels: int, seed: int) -> torch.Tensor:
    """The fixed permutation of ``num_pixels`` row-major pixel indices used by :func:`permuted_digits`."""
    return torch.from_numpy(np.random.default_rng(seed).permutation(int(num_pixels)))


@register_dataset
def permuted_digits(
    *,
    seed: int = 0,
    image_size: int = 32,
    test_fraction: float = 0.25,
    permute_pixels: bool = True,
    permutation_seed: int = 0,
    tokens: bool = False,
    num_bands: int = 8,
    max_freq: float = 0.0,
    source: str = "digits",
    num_train: int = 2000,
    num_test: int = 500,
    rotate: float = 15.0,
    translate: float = 0.3,
    clutter: int = 0,
    standardize: bool = False,
) -> DatasetSplits:
    """The ``digits`` dataset with one fixed pixel permutation applied to all images (train and test).

    Args:
        seed, image_size, test_fraction: as ``digits`` (same split, same images before permuting).
        permute_pixels: apply the permutation (``False``: exactly the ``digits`` dataset, the control).
        permutation_seed: seed of the permutation of the ``image_size ** 2`` pixels (applied after resizing,
            the same for every channel and every image).
        tokens: return Perceiver byte arrays instead of images: ``(N, M, C + 2 (2 num_bands + 1))`` float32, each
            pixel's values followed by the Fourier features of its position on the **unpermuted** grid
            (:func:`baselines.perceiver.fourier_position_features`), then permuted: the position features travel
            with their pixels (Jaegle et al. 2021's permuted-ImageNet protocol). ``in_chans`` stays the image
            channels, so a Perceiver built with the same ``num_bands`` / ``max_freq`` reads either form.
        num_bands, max_freq: the Fourier features of ``tokens`` (``max_freq`` 0: ``image_size``, the Perceiver's
            default).
        source: ``"digits"`` (the sklearn digits resized to ``image_size``) or ``"distorted_digits"``
            (:mod:`experiments.data.distorted`: a digit of side ``image_size // 2`` on an ``image_size`` canvas,
            rotated by up to ``rotate`` degrees, scaled 0.8-1.1, shifted by up to ``translate`` (normalised), with
            ``clutter`` clutter crops and train/test from disjoint digit sources). Where the digit sits varies, so
            the local structure a convolution exploits (translation equivariance, pooling) matters.
        num_train, num_test, rotate, translate, clutter: ``distorted_digits`` only (``test_fraction`` is then
            unused).
        standardize: ``tokens`` only: the pixel values of the byte arrays standardised per channel with the
            training split's mean and std over all pixels (what the runner does to images; unchanged by the
            permutation). Raw [0, 1] pixels are one of ``C + 34`` byte channels and mostly background, and the tiny
            Perceiver did not learn moving digits from them (issue 7).

    With ``tokens=false`` the permutation moves pixel values and the image grid stays where it is, so position
    features a model computes from the grid no longer describe where a pixel came from.
    """
    if not isinstance(permute_pixels, bool) or not isinstance(tokens, bool):
        raise ValueError(f"permute_pixels and tokens must be true or false, got {permute_pixels!r}, {tokens!r}")
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be true or false, got {standardize!r}")
    if source == "digits":
        base = digits(seed=seed, image_size=image_size, test_fraction=test_fraction)
    elif source == "distorted_digits":
        from .distorted import distorted_digits

        base = distorted_digits(seed=seed, canvas=int(image_size), digit_size=max(int(image_size) // 2, 1),
                                num_train=int(num_train), num_test=int(num_test), rotate=float(rotate),
                                scale=(0.8, 1.1), translate=float(translate), clutter=int(clutter),
                                clutter_size=max(min(5, int(image_size) // 2), 1), noise=0.0)
    else:
        raise ValueError(f"source must be one of: digits, distorted_digits (got {source!r})")
    s = int(image_size)
    perm = pixel_permutation(s * s, permutation_seed) if permute_pixels else torch.arange(s * s)
    if tokens:
        from baselines.perceiver import fourier_position_features

        pos = fourier_position_features((s, s), num_bands=int(num_bands), max_freq=float(max_freq) or float(s))
        train_px = base.train.images.transpose(0, 1).flatten(1)  # (C, N H W)
        mean, std = (train_px.mean(1), train_px.std(1).clamp_min(1e-8)) if standardize else (0.0, 1.0)

        def to_tokens(split: ImageSet) -> SampleSet:
            pixels = (split.images.flatten(2).transpose(1, 2) - mean) / std  # (N, M, C), row-major
            data = torch.cat([pixels, pos.expand(len(split), -1, -1)], dim=-1)[:, perm].contiguous()
            return SampleSet(inputs=data, targets=split.labels)

        base.train, base.test = to_tokens(base.train), to_tokens(base.test)  # type: ignore[arg-type]
        base.image_size = 0
        permuted = f", permuted (permutation_seed={permutation_seed})" if permute_pixels else ""
        base.description = (f"{base.description}; as Perceiver byte arrays (pixel + {num_bands}-band Fourier position "
                            f"features){permuted}")  # fmt: skip
        return base
    if not permute_pixels:
        base.description = "permuted_digits with permute_pixels=false: " + base.description
        return base

    def permute(split: ImageSet) -> ImageSet:
        x = split.images
        images = x.flatten(2)[:, :, perm].reshape(x.shape).contiguous()
        return ImageSet(images=images, labels=split.labels, source_ids=split.source_ids)

    base.train = permute(base.train)  # type: ignore[arg-type]
    base.test = permute(base.test)  # type: ignore[arg-type]
    base.description = f"{base.description}; pixels permuted by a fixed permutation (permutation_seed={permutation_seed})"
    return base
