"""Detection datasets: generated scenes as ``SampleSet(inputs=images, targets=padded boxes)`` for the ``detect`` task.

``cluttered_detect`` is :func:`experiments.data.cluttered.cluttered_digits` (same options, same scenes for the same
seed) read as a detection problem: inputs ``(N, 1, H, W)`` float32 images in [0, 1]; targets ``(N, max_digits, 5)``
float32 rows ``(class, x0, y0, x1, y1)`` in pixels of the returned images (exclusive ``x1``/``y1``), padded with
``-1``; 10 classes (the digits). Clutter fragments are distractors, not objects. The task is ``detect``
(:mod:`experiments.tasks_detect`: mAP@0.5 primary).

``shapes_detect`` does the same for :func:`experiments.data.shapes.shapes` (RGB scenes of coloured shapes, classes =
the shape names; same options and scenes as ``shapes``): targets ``(N, max_objects, 5)``, the tight boxes of each
object's *visible* pixels (objects may occlude each other).

Example::

    from experiments.data import create_dataset

    d = create_dataset("cluttered_detect", canvas=64, max_digits=3, num_train=8, num_test=4)
    d.train.inputs.shape, d.train.targets.shape, d.task      # (8, 1, 64, 64), (8, 3, 5), 'detect'
"""

from __future__ import annotations

from ._registry import DatasetSplits, SampleSet, register_dataset
from .cluttered import cluttered_digits
from .shapes import SHAPES, shapes

__all__ = ["cluttered_detect", "shapes_detect"]


@register_dataset
def cluttered_detect(
    *,
    seed: int = 0,
    canvas: int = 64,
    image_size: int | None = None,
    num_train: int = 2000,
    num_test: int = 500,
    min_digits: int = 1,
    max_digits: int = 3,
    digit_size: tuple[int, int] = (14, 20),
    clutter: int = 6,
    clutter_size: int = 5,
    noise: float = 0.05,
    source_test_fraction: float = 0.3,
) -> DatasetSplits:
    """Cluttered digit scenes with their boxes as detection targets (module docstring); options as
    ``cluttered_digits`` (defaults here: 64 px canvas, 1-3 digits)."""
    base = cluttered_digits(
        seed=seed, canvas=canvas, image_size=image_size, num_train=num_train, num_test=num_test,
        min_digits=min_digits, max_digits=max_digits, digit_size=digit_size, clutter=clutter,
        clutter_size=clutter_size, noise=noise, source_test_fraction=source_test_fraction,
    )

    def split(s):  # ImageSet -> SampleSet
        return SampleSet(inputs=s.images, targets=s.boxes)

    return DatasetSplits(
        train=split(base.train),
        test=split(base.test),
        num_classes=10,
        in_chans=1,
        image_size=base.image_size,
        multilabel=False,
        class_names=list(base.class_names),
        task="detect",
        description="detection: " + base.description,
    )


@register_dataset
def shapes_detect(
    *,
    seed: int = 0,
    image_size: int = 32,
    num_train: int = 2000,
    num_test: int = 500,
    min_objects: int = 1,
    max_objects: int = 3,
    classes: tuple[str, ...] = SHAPES,
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow"),
    object_scale: tuple[float, float] = (0.3, 0.5),
    occlusion: float = 0.3,
    min_visible: float = 0.4,
    texture: float = 0.4,
    noise: float = 0.02,
) -> DatasetSplits:
    """The ``shapes`` scenes with their boxes as detection targets (module docstring); options as ``shapes``."""
    base = shapes(
        seed=seed, image_size=image_size, num_train=num_train, num_test=num_test, min_objects=min_objects,
        max_objects=max_objects, classes=classes, colors=colors, object_scale=object_scale, occlusion=occlusion,
        min_visible=min_visible, texture=texture, noise=noise,
    )
    return DatasetSplits(
        train=SampleSet(inputs=base.train.images, targets=base.train.boxes),
        test=SampleSet(inputs=base.test.images, targets=base.test.boxes),
        num_classes=base.num_classes,
        in_chans=3,
        image_size=base.image_size,
        multilabel=False,
        class_names=list(base.class_names),
        task="detect",
        description="detection: " + base.description,
    )
