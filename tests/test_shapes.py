"""The shapes scene generator (experiments/data/shapes.py): determinism, fields, consistency of labels, boxes,
semantic and instance masks and captions, options, and generation speed against a training step."""

import doctest
import time

import pytest
import torch

import baselines
from experiments.data import ImageSet, SampleSet, create_dataset
from experiments.data.shapes import COLORS, SHAPES, caption_vocabulary
from experiments.pointing import box_mask
from experiments.tasks import create_task

SMALL = dict(num_train=96, num_test=32)


@pytest.fixture(scope="module")
def splits():
    return create_dataset("shapes", seed=3, **SMALL)


def test_fields_shapes_and_dtypes(splits):
    s, n, j = splits.train, 96, 3
    assert isinstance(s, ImageSet) and len(s) == n and len(splits.test) == 32
    assert s.images.shape == (n, 3, 32, 32) and s.images.dtype == torch.float32
    assert 0.0 <= float(s.images.min()) and float(s.images.max()) <= 1.0
    assert s.labels.shape == (n, len(SHAPES)) and s.labels.dtype == torch.float32
    assert s.boxes.shape == (n, j, 5) and s.boxes.dtype == torch.float32
    assert s.masks.shape == s.instance_masks.shape == (n, 32, 32) and s.masks.dtype == s.instance_masks.dtype == torch.int64
    assert s.source_ids.shape == (n, j) and len(s.captions) == n
    assert splits.num_classes == len(SHAPES) and splits.in_chans == 3 and splits.multilabel
    assert splits.task == "classify" and splits.class_names == list(SHAPES)
    assert (s.labels.sum(1) >= 1).all()  # at least one object per scene


def test_deterministic_in_the_seed():
    a, b = create_dataset("shapes", seed=5, **SMALL), create_dataset("shapes", seed=5, **SMALL)
    c = create_dataset("shapes", seed=6, **SMALL)
    for name in ("images", "labels", "boxes", "masks", "instance_masks", "source_ids"):
        assert torch.equal(getattr(a.train, name), getattr(b.train, name))
        assert torch.equal(getattr(a.test, name), getattr(b.test, name))
    assert a.train.captions == b.train.captions
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.train.images[:32], a.test.images)  # train and test are different scenes
    assert len(create_dataset("shapes", seed=5, num_train=4, num_test=0).test) == 0


def test_masks_boxes_and_labels_agree(splits):
    s = splits.train
    for i in range(len(s)):
        inst, sem, boxes = s.instance_masks[i], s.masks[i], s.boxes[i]
        assert torch.equal(inst > 0, sem > 0)
        present = boxes[:, 0] >= 0
        assert (boxes[~present] == -1).all()
        assert set((inst.unique() - 1).tolist()) - {-1} == set(torch.nonzero(present).flatten().tolist())
        for j in torch.nonzero(present).flatten().tolist():
            cls, x0, y0, x1, y1 = (int(v) for v in boxes[j])
            m = inst == j + 1
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert (x0, y0, x1, y1) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            assert (sem[m] == cls + 1).all()
            assert box_mask(boxes, cls, (32, 32))[m].all()  # the pointing game's box ground truth covers it
        classes = set(boxes[present, 0].long().tolist())
        assert classes == set(torch.nonzero(s.labels[i]).flatten().tolist())
        assert classes == set((sem.unique() - 1).tolist()) - {-1}


def test_pixels_have_the_colour_of_their_object(splits):
    s, colors = splits.train, ("red", "green", "blue", "yellow")
    palette = torch.tensor([COLORS[c] for c in colors])
    for i in range(8):
        inst = s.instance_masks[i]
        for j in (inst.unique() - 1).tolist():
            if j < 0:
                continue
            mean = s.images[i][:, inst == j + 1].mean(1)  # pixel noise std 0.02 averages out
            assert torch.allclose(mean, palette[int(s.source_ids[i, j])], atol=0.03)


def _parse(caption):
    """NPs ``(colour, shape)`` and the relation of the first two."""
    words = caption.replace(",", " ,").split()
    nps, rel, k = [], None, 0
    while k < len(words):
        if words[k] == "a":
            nps.append((words[k + 1], words[k + 2]))
            k += 3
        elif words[k] in ("above", "below"):
            rel, k = words[k], k + 1
        elif words[k] in ("left", "right"):
            assert words[k + 1] == "of"
            rel, k = f"{words[k]} of", k + 2
        else:
            assert words[k] in (",", "and")
            k += 1
    return nps, rel


def test_captions_describe_the_objects(splits):
    s, colors = splits.train, ("red", "green", "blue", "yellow")
    vocab = set(caption_vocabulary(SHAPES, colors))
    for i, caption in enumerate(s.captions):
        assert set(caption.replace(",", " ,").split()) <= vocab
        nps, rel = _parse(caption)
        slots = torch.nonzero(s.boxes[i, :, 0] >= 0).flatten().tolist()
        assert nps == [(colors[int(s.source_ids[i, j])], SHAPES[int(s.boxes[i, j, 0])]) for j in slots]
        if len(slots) == 1:
            assert rel is None
            continue
        a, b = ((s.boxes[i, j, 1:3] + s.boxes[i, j, 3:5]) / 2 for j in slots[:2])
        dx, dy = float(a[0] - b[0]), float(a[1] - b[1])
        expected = ("above" if dy < 0 else "below") if abs(dy) >= abs(dx) else ("left of" if dx < 0 else "right of")
        assert rel == expected
    assert s.captions[0].startswith("a ")


def test_options_no_occlusion_subsets_and_errors():
    d = create_dataset("shapes", seed=0, num_train=64, num_test=8, occlusion=0.0, classes=["circle", "cross"],
                       colors=["white"], max_objects=4, image_size=48, texture=0.0, noise=0.0)
    s = d.train
    assert d.num_classes == 2 and s.images.shape == (64, 3, 48, 48) and s.boxes.shape == (64, 4, 5)
    assert set(s.masks.unique().tolist()) <= {0, 1, 2} and (s.source_ids <= 0).all()
    bg = s.instance_masks == 0
    # flat background without noise: one colour per image
    assert torch.allclose(s.images[0][:, bg[0]].std(1), torch.zeros(3), atol=1e-6)
    with pytest.raises(ValueError, match="classes must be distinct names"):
        create_dataset("shapes", classes=["hexagon"])
    with pytest.raises(ValueError, match="min_objects"):
        create_dataset("shapes", min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="occlusion"):
        create_dataset("shapes", occlusion=1.5)
    with pytest.raises(ValueError, match="object_scale"):
        create_dataset("shapes", object_scale=(0.5, 0.2))


def test_segment_builder_matches_and_classify_task_runs(splits):
    seg = create_dataset("shapes_segment", seed=3, **SMALL)
    assert isinstance(seg.train, SampleSet) and seg.task == "segment" and seg.num_classes == len(SHAPES) + 1
    assert torch.equal(seg.train.inputs, splits.train.images) and torch.equal(seg.train.targets, splits.train.masks)
    assert seg.class_names[0] == "background" and seg.image_size == 32 and seg.in_chans == 3
    task = create_task("classify", multilabel=True)
    logits = splits.test.labels * 5.0  # an oracle: the present classes ranked first
    assert task.correct(logits, splits.test.labels)["acc"].mean() == 1.0


def test_generation_is_faster_than_training(capsys):
    """Scenes per second generated vs samples per second of a U-Net (small) training step on them (printed; the
    benchmark issue wants >= 10x). Not asserted: wall-clock goals are not tested (CONTRIBUTING.md)."""
    create_dataset("shapes", seed=0, num_train=8, num_test=0)  # warm-up
    t = time.perf_counter()
    d = create_dataset("shapes_segment", seed=0, num_train=1024, num_test=0)
    gen = 1024 / (time.perf_counter() - t)
    torch.manual_seed(0)
    net = baselines.create_model("unet_bn", num_classes=7, in_chans=3, width=8, img_size=32)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = d.train.inputs[:32], d.train.targets[:32]
    times = []
    for _ in range(3):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    train = 32 / min(times)
    with capsys.disabled():
        print(f"\nshapes: {gen:.0f} scenes/s generated, {train:.0f} samples/s trained (unet_bn width 8, batch 32): "
              f"ratio {gen / train:.1f}x")
    assert gen > 0 and train > 0


def test_docstring_examples():
    import experiments.data.shapes as shapes_module

    result = doctest.testmod(shapes_module)
    assert result.attempted > 0 and result.failed == 0


def test_imageset_validates_the_new_optional_fields():
    images, labels, ids = torch.zeros(2, 3, 8, 8), torch.zeros(2, 4), torch.zeros(2, 1, dtype=torch.long)
    assert ImageSet(images, labels, ids).captions is None  # optional, backward compatible
    with pytest.raises(ValueError, match="captions must be a list of 2 strings"):
        ImageSet(images, labels, ids, captions=["a red circle"])
    with pytest.raises(ValueError, match="instance_masks"):
        ImageSet(images, labels, ids, instance_masks=torch.zeros(2, 4, 4, dtype=torch.long))
