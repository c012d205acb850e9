"""Tests for experiments.data: the registry, sklearn digits and cluttered digit scenes."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from experiments.data import (
    DatasetSplits,
    ImageSet,
    _registry,
    create_dataset,
    dataset_builder,
    list_datasets,
    register_dataset,
)

SMALL = dict(num_train=300, num_test=120)


@pytest.fixture(scope="module")
def scenes() -> DatasetSplits:
    return create_dataset("cluttered_digits", seed=3, canvas=64, max_digits=3, **SMALL)


def _digit_rows(s: ImageSet, i: int) -> torch.Tensor:
    rows = s.boxes[i]
    return rows[rows[:, 0] >= 0]


# --------------------------------------------------------------------------------------------- registry


def test_registry_lists_and_builders_are_keyword_only() -> None:
    assert {"digits", "cluttered_digits"} <= set(list_datasets())
    assert list_datasets("cluttered_dig*") == ["cluttered_digits"]
    for name in ("digits", "cluttered_digits"):
        params = inspect.signature(dataset_builder(name)).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
        assert all(p.annotation is not inspect.Parameter.empty for p in params)
    assert "digit_size" in inspect.signature(dataset_builder("cluttered_digits")).parameters


def test_unknown_dataset_suggests_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'cluttered_digits'") as err:
        create_dataset("cluttered_digit")
    assert "digits" in str(err.value)  # the choices are listed
    with pytest.raises(ValueError, match="did you mean 'digits'"):
        dataset_builder("digts")


def test_unknown_option_suggests_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'image_size'"):
        create_dataset("digits", imagesize=16)


def test_duplicate_registration_raises() -> None:
    def _tmp_dataset_for_test() -> DatasetSplits:  # pragma: no cover - never built
        raise AssertionError

    register_dataset(_tmp_dataset_for_test)
    try:
        assert "_tmp_dataset_for_test" in list_datasets()
        with pytest.raises(ValueError, match="already registered"):
            register_dataset(_tmp_dataset_for_test)
    finally:
        _registry._DATASETS.pop("_tmp_dataset_for_test")


# --------------------------------------------------------------------------------------------- digits


def test_digits_split_sizes_stratified_and_disjoint() -> None:
    d = create_dataset("digits", seed=0, image_size=16, test_fraction=0.25)
    assert len(d.train) + len(d.test) == 1797
    assert (d.num_classes, d.in_chans, d.image_size, d.multilabel) == (10, 1, 16, False)
    assert d.class_names == [str(k) for k in range(10)]
    assert d.train.images.shape[1:] == (1, 16, 16) and d.train.images.dtype == torch.float32
    assert d.train.labels.dtype == torch.int64 and d.train.labels.dim() == 1
    assert 0.0 <= float(d.train.images.min()) and float(d.train.images.max()) <= 1.0
    train_ids, test_ids = set(d.train.source_ids[:, 0].tolist()), set(d.test.source_ids[:, 0].tolist())
    assert not train_ids & test_ids and len(train_ids | test_ids) == 1797
    total = torch.bincount(torch.cat([d.train.labels, d.test.labels]), minlength=10)
    test = torch.bincount(d.test.labels, minlength=10)
    assert torch.all((test.float() - 0.25 * total.float()).abs() <= 0.5 + 1e-6)  # per class round(0.25 * n)


def test_digits_native_size_matches_sklearn_and_is_deterministic() -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    a = create_dataset("digits", seed=5, image_size=8)
    ids = a.train.source_ids[:, 0].numpy()
    np.testing.assert_allclose(a.train.images[:, 0].numpy(), ref.images[ids] / 16.0, atol=1e-6)
    np.testing.assert_array_equal(a.train.labels.numpy(), ref.target[ids])
    b = create_dataset("digits", seed=5, image_size=8)
    c = create_dataset("digits", seed=6, image_size=8)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.source_ids, b.test.source_ids)
    assert not torch.equal(a.test.source_ids, c.test.source_ids)


def test_digits_bad_options() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        create_dataset("digits", test_fraction=1.5)
    with pytest.raises(ValueError, match="image_size"):
        create_dataset("digits", image_size=0)


# --------------------------------------------------------------------------------------------- cluttered


def test_cluttered_shapes_and_value_range(scenes: DatasetSplits) -> None:
    assert (scenes.num_classes, scenes.in_chans, scenes.image_size, scenes.multilabel) == (10, 1, 64, True)
    for s, n in ((scenes.train, 300), (scenes.test, 120)):
        assert len(s) == n
        assert s.images.shape == (n, 1, 64, 64) and s.images.dtype == torch.float32
        assert s.labels.shape == (n, 10) and s.labels.dtype == torch.float32
        assert s.boxes.shape == (n, 3, 5) and s.boxes.dtype == torch.float32
        assert s.masks.shape == (n, 64, 64) and s.masks.dtype == torch.int64
        assert s.source_ids.shape == (n, 3) and s.source_ids.dtype == torch.int64
        assert s.clutter_ids.shape == (n, 6) and s.clutter_ids.dtype == torch.int64
        assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
        assert set(s.labels.unique().tolist()) <= {0.0, 1.0}


def test_cluttered_is_deterministic(scenes: DatasetSplits) -> None:
    again = create_dataset("cluttered_digits", seed=3, canvas=64, max_digits=3, **SMALL)
    other = create_dataset("cluttered_digits", seed=4, canvas=64, max_digits=3, **SMALL)
    for split in ("train", "test"):
        a, b, c = getattr(scenes, split), getattr(again, split), getattr(other, split)
        for field in ("images", "labels", "boxes", "masks", "source_ids", "clutter_ids"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert not torch.equal(a.images, c.images) and not torch.equal(a.source_ids, c.source_ids)


def test_cluttered_train_test_sources_disjoint(scenes: DatasetSplits) -> None:
    def ids(s: ImageSet) -> set[int]:
        return set(s.source_ids[s.source_ids >= 0].tolist()) | set(s.clutter_ids.flatten().tolist())

    train, test = ids(scenes.train), ids(scenes.test)
    assert train and test and not train & test


def test_cluttered_digit_counts_classes_labels_boxes_masks(scenes: DatasetSplits) -> None:
    digits = create_dataset("digits", image_size=8)
    label_of = torch.empty(1797, dtype=torch.int64)
    for s in (digits.train, digits.test):
        label_of[s.source_ids[:, 0]] = s.labels
    counts = set()
    for s in (scenes.train, scenes.test):
        for i in range(len(s)):
            rows = _digit_rows(s, i)
            classes = rows[:, 0].long()
            counts.add(len(rows))
            assert 1 <= len(rows) <= 3
            assert len(set(classes.tolist())) == len(rows)  # distinct classes
            assert (s.boxes[i, len(rows) :] == -1).all()  # padding comes last
            # labels <-> boxes <-> masks <-> sklearn labels of the sources
            assert set(torch.nonzero(s.labels[i])[:, 0].tolist()) == set(classes.tolist())
            assert set((s.masks[i].unique() - 1).tolist()) - {-1} == set(classes.tolist())
            ids = s.source_ids[i, : len(rows)]
            assert torch.equal(label_of[ids], classes) and (s.source_ids[i, len(rows) :] == -1).all()
            # boxes: inside the canvas, square, side in digit_size, pairwise disjoint
            xy = rows[:, 1:]
            assert (xy >= 0).all() and (xy <= 64).all()
            side = xy[:, 2] - xy[:, 0]
            assert torch.equal(side, xy[:, 3] - xy[:, 1]) and (side >= 14).all() and (side <= 20).all()
            for a in range(len(rows)):
                for b in range(a + 1, len(rows)):
                    p, q = xy[a], xy[b]
                    assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]
                # mask pixels of this digit lie inside its box
                ys, xs = torch.nonzero(s.masks[i] == classes[a] + 1, as_tuple=True)
                assert len(ys) > 0
                assert (xs >= xy[a, 0]).all() and (xs < xy[a, 2]).all()
                assert (ys >= xy[a, 1]).all() and (ys < xy[a, 3]).all()
    assert counts == {1, 2, 3}


def test_cluttered_clean_scene_matches_mask() -> None:
    """Without clutter and noise the image is exactly the digits: ink > threshold iff mask, zero outside boxes."""
    d = create_dataset("cluttered_digits", seed=1, clutter=0, noise=0.0, num_train=100, num_test=20)
    s = d.train
    assert s.clutter_ids.shape == (100, 0)
    assert torch.equal(s.images[:, 0] > 0.25, s.masks > 0)
    inside = torch.zeros_like(s.masks, dtype=torch.bool)
    for i in range(len(s)):
        for row in _digit_rows(s, i):
            x0, y0, x1, y1 = row[1:].long().tolist()
            inside[i, y0:y1, x0:x1] = True
    assert (s.images[:, 0][~inside] == 0).all()


def test_cluttered_clutter_and_noise_change_the_background() -> None:
    d = create_dataset("cluttered_digits", seed=1, clutter=6, noise=0.0, num_train=50, num_test=10)
    assert (d.train.images[:, 0][d.train.masks == 0] > 0.25).any()  # clutter ink outside the digits
    assert not (d.train.masks > 0).all()


def test_cluttered_image_size_resize_is_consistent() -> None:
    big = create_dataset("cluttered_digits", seed=2, canvas=64, max_digits=3, **SMALL)
    small = create_dataset("cluttered_digits", seed=2, canvas=64, max_digits=3, image_size=32, **SMALL)
    assert small.image_size == 32 and small.train.images.shape[-2:] == (32, 32)
    assert small.train.masks.shape == (300, 32, 32)
    assert torch.equal(big.train.labels, small.train.labels)
    assert torch.equal(big.train.source_ids, small.train.source_ids)
    valid = big.train.boxes[..., 0] >= 0
    assert torch.equal(small.train.boxes[..., 0], big.train.boxes[..., 0])
    assert torch.allclose(small.train.boxes[..., 1:][valid], big.train.boxes[..., 1:][valid] / 2)
    assert (small.train.boxes[~valid] == -1).all()
    assert torch.equal(small.train.masks, big.train.masks[:, 1::2, 1::2])  # nearest at pixel centres
    assert float(small.train.images.min()) >= 0.0 and float(small.train.images.max()) <= 1.0
    # mask pixel centres lie inside their scaled boxes
    s = small.train
    for i in range(len(s)):
        for row in _digit_rows(s, i):
            ys, xs = torch.nonzero(s.masks[i] == row[0].long() + 1, as_tuple=True)
            assert len(ys) > 0
            assert ((xs + 0.5 >= row[1]) & (xs + 0.5 <= row[3]) & (ys + 0.5 >= row[2]) & (ys + 0.5 <= row[4])).all()


def test_cluttered_crowded_scene_keeps_exact_counts() -> None:
    """min_digits == max_digits on a crowded canvas (exercises layout retries and the grid fallback)."""
    d = create_dataset("cluttered_digits", seed=0, canvas=48, min_digits=9, max_digits=9, digit_size=(14, 16), **SMALL)
    for s in (d.train, d.test):
        assert (s.labels.sum(1) == 9).all() and (s.boxes[..., 0] >= 0).all()
        xy = s.boxes[..., 1:]
        a, b = xy[:, :, None], xy[:, None, :]
        overlap = (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])
        assert not (overlap & ~torch.eye(9, dtype=torch.bool)).any()
        assert (xy >= 0).all() and (xy <= 48).all()


def test_cluttered_default_sizes() -> None:
    d = create_dataset("cluttered_digits")
    assert (len(d.train), len(d.test), d.image_size) == (2000, 500, 48)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(canvas=32), "canvas=32 is too small"),
        (dict(canvas=64, max_digits=10), "canvas=64 is too small"),
        (dict(min_digits=3, max_digits=2), "min_digits <= max_digits"),
        (dict(min_digits=0), "min_digits"),
        (dict(max_digits=11, canvas=128, digit_size=(8, 10)), "max_digits=11 > 10"),
        (dict(digit_size=(20, 14)), "digit_size"),
        (dict(digit_size=(14,)), "digit_size"),
        (dict(clutter_size=16), "clutter_size"),
        (dict(source_test_fraction=0.0), "source_test_fraction"),
        (dict(noise=-0.1), "noise"),
        (dict(image_size=0), "image_size"),
    ],
)
def test_cluttered_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_dataset("cluttered_digits", **options)


def test_cluttered_accepts_list_digit_size() -> None:
    a = create_dataset("cluttered_digits", digit_size=[12, 16], num_train=20, num_test=5)
    b = create_dataset("cluttered_digits", digit_size=(12, 16), num_train=20, num_test=5)
    assert torch.equal(a.train.images, b.train.images)


def test_register_rejects_positional_options() -> None:
    def _positional_dataset_for_test(seed: int = 0) -> DatasetSplits:  # pragma: no cover - never built
        raise AssertionError

    with pytest.raises(ValueError, match="keyword-only"):
        register_dataset(_positional_dataset_for_test)
    assert "_positional_dataset_for_test" not in list_datasets()
