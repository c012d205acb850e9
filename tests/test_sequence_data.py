"""Sequence datasets (experiments/data/sequences.py): copying, adding, sequential digits."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from experiments.data import create_dataset, list_datasets
from experiments.data import sequences as seq
from experiments.data.digits import load_sklearn_digits, stratified_split


def same(a, b) -> bool:
    return torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_registered():
    assert {"copying", "adding", "sequential_digits"} <= set(list_datasets())


@pytest.mark.parametrize(
    "name, options",
    [
        ("copying", dict(num_train=50, num_test=20, delay=6, test_delay=12)),
        ("adding", dict(num_train=50, num_test=20, length=10, test_length=30)),
        ("sequential_digits", dict(image_size=8, test_sizes=[10])),
    ],
)
def test_deterministic_in_seed(name, options):
    a, b = create_dataset(name, seed=3, **options), create_dataset(name, seed=3, **options)
    c = create_dataset(name, seed=4, **options)
    assert same(a.train, b.train) and same(a.test, b.test)
    assert a.tests.keys() == b.tests.keys() and all(same(a.tests[k], b.tests[k]) for k in a.tests)
    assert not same(a.train, c.train)
    assert a.image_size == 0


def test_copying_layout_and_masking():
    s = seq.copying(num_train=64, num_test=16, length=4, num_symbols=5, delay=7, test_delay=15)
    assert s.task == "tokens" and s.in_chans == s.num_classes == 7
    x, y = s.train.inputs, s.train.targets
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (64, 7 + 8)
    symbols = x[:, :4]
    assert symbols.min() >= 1 and symbols.max() <= 5
    assert torch.all(x[:, 4:10] == 0) and torch.all(x[:, 10] == 6) and torch.all(x[:, 11:] == 0)  # blanks, delimiter
    assert torch.all(y[:, :11] == -100) and torch.equal(y[:, 11:], symbols)  # scored: the recall positions only
    long = s.tests["delay15"]
    assert long.inputs.shape == (16, 15 + 8) and torch.all((long.targets != -100).sum(1) == 4)
    assert torch.all(long.inputs[:, 4 + 15 - 1] == 6)
    # more training data does not change the test set
    assert same(seq.copying(num_train=10, num_test=16, length=4, num_symbols=5, delay=7).test, s.test)
    assert seq.copying(test_delay=0).tests == {}


def test_adding_markers_targets_and_trivial_baseline():
    s = seq.adding(num_train=4000, num_test=100, length=20, test_length=40)
    assert s.task == "regress" and s.num_classes == 1 and s.in_chans == 2
    x, y = s.train.inputs, s.train.targets
    assert x.dtype == y.dtype == torch.float32 and x.shape == (4000, 20, 2) and y.shape == (4000, 1)
    markers = x[..., 1]
    assert torch.all(markers[:, :10].sum(1) == 1) and torch.all(markers[:, 10:].sum(1) == 1)
    torch.testing.assert_close((x[..., 0] * markers).sum(1, keepdim=True), y)
    assert x[..., 0].min() >= 0 and x[..., 0].max() < 1
    trivial = ((y - 1.0) ** 2).mean().item()  # predicting 1.0: Var(u1 + u2) = 1/6
    assert abs(trivial - 1 / 6) < 0.015
    assert s.tests["len40"].inputs.shape == (100, 40, 2)


def test_sequential_digits_tokens_and_resolutions():
    s = seq.sequential_digits(seed=0, image_size=14, test_sizes=[16, 24])
    assert s.task == "classify" and s.in_chans == 2 and s.num_classes == 10
    assert s.train.inputs.shape == (1347, 196) and s.test.inputs.shape == (450, 196)
    assert set(s.tests) == {"res16", "res24"} and s.tests["res24"].inputs.shape == (450, 576)
    assert s.train.inputs.dtype == torch.int64 and set(s.train.inputs.unique().tolist()) == {0, 1}
    for t in s.tests.values():
        assert torch.equal(t.targets, s.test.targets)  # the same test digits, longer sequences
    # nearest re-sampling from the binarised 8x8 original: 16x16 is each pixel doubled
    images, labels = load_sklearn_digits()
    res16 = s.tests["res16"].inputs.view(-1, 16, 16)
    small = torch.from_numpy(np.ascontiguousarray(images >= 0.5)).long()
    _, test_idx = stratified_split(labels, 0.25, np.random.default_rng(0))
    torch.testing.assert_close(res16[:, ::2, ::2], small[test_idx])
    torch.testing.assert_close(s.test.targets, torch.from_numpy(labels[test_idx]))
    # no digit is in both splits
    train_idx, _ = stratified_split(labels, 0.25, np.random.default_rng(0))
    assert not set(train_idx.tolist()) & set(test_idx.tolist())


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("copying", dict(delay=0), "delay must be an integer >= 1"),
        ("copying", dict(length=2.5), "length must be an integer"),
        ("adding", dict(length=1), "length must be an integer >= 2"),
        ("adding", dict(test_length=1), "test_length must be 0"),
        ("sequential_digits", dict(test_sizes=[0]), "test_sizes entry"),
        ("sequential_digits", dict(threshold=0.0), "threshold"),
    ],
)
def test_bad_options_raise(name, options, match):
    with pytest.raises(ValueError, match=match):
        create_dataset(name, **options)


def test_doctests():
    result = doctest.testmod(seq, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
