"""Figure-ground segmentation datasets: generated scenes whose target is one class of object against everything else.

``cluttered_figure_ground`` is :func:`experiments.data.cluttered.cluttered_digits` (same options and scenes for the
same seed) with target 1 where a digit's mask is (any digit), 0 elsewhere: the clutter fragments (crops of other
digits) are ground. ``shapes_figure_ground`` is :func:`experiments.data.shapes.shapes` with target 1 on the visible
pixels of objects of class ``figure`` (e.g. circles) and 0 on the background and on every other shape. Both are
``segment`` tasks with 2 classes (``ground``, ``figure``): inputs ``(N, C, H, W)`` float32 in [0, 1], targets
``(N, H, W)`` int64 in {0, 1}. They feed class-specific figure-ground methods (Borenstein & Ullman 2008,
``baselines.tdbu_segmentation``), scored by the segment task's mean IoU over the two classes.

Example::

    from experiments.data import create_dataset

    d = create_dataset("shapes_figure_ground", figure="circle", num_train=8, num_test=4)
    d.train.inputs.shape, d.train.targets.shape, d.num_classes, d.task     # (8, 3, 32, 32), (8, 32, 32), 2, 'segment'
"""

from __future__ import annotations

from ._registry import DatasetSplits, SampleSet, register_dataset
from .cluttered import cluttered_digits
from .shapes import SHAPES, shapes

__all__ = ["cluttered_figure_ground", "shapes_figure_ground"]


@register_dataset
def cluttered_figure_ground(
    *,
    seed: int = 0,
    canvas: int = 48,
    image_size: int | None = None,
    num_train: int = 2000,
    num_test: int = 500,
    min_digits: int = 1,
    max_digits: int = 2,
    digit_size: tuple[int, int] = (14, 20),
    clutter: int = 6,
    clutter_size: int = 5,
    noise: float = 0.05,
    source_test_fraction: float = 0.3,
) -> DatasetSplits:
    """Digits (figure) against background and clutter (ground); options as ``cluttered_digits`` (module docstring)."""
    base = cluttered_digits(
        seed=seed, canvas=canvas, image_size=image_size, num_train=num_train, num_test=num_test,
        min_digits=min_digits, max_digits=max_digits, digit_size=digit_size, clutter=clutter,
        clutter_size=clutter_size, noise=noise, source_test_fraction=source_test_fraction,
    )
    return DatasetSplits(
        train=SampleSet(inputs=base.train.images, targets=(base.train.masks > 0).long()),
        test=SampleSet(inputs=base.test.images, targets=(base.test.masks > 0).long()),
        num_classes=2, in_chans=1, image_size=base.image_size, multilabel=False, class_names=["ground", "digit"],
        task="segment", description="figure-ground (digits vs clutter and background): " + base.description,
    )


@register_dataset
def shapes_figure_ground(
    *,
    seed: int = 0,
    figure: str = "circle",
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
    """Objects of class ``figure`` (figure) against background and the other shapes (ground); other options as
    ``shapes`` (module docstring)."""
    names = list(classes) if not isinstance(classes, str) else [classes]
    if figure not in names:
        raise ValueError(f"figure must be one of the scene classes ({', '.join(names)}), got {figure!r}")
    base = shapes(seed=seed, image_size=image_size, num_train=num_train, num_test=num_test, min_objects=min_objects,
                  max_objects=max_objects, classes=classes, colors=colors, object_scale=object_scale,
                  occlusion=occlusion, min_visible=min_visible, texture=texture, noise=noise)
    k = names.index(figure) + 1
    return DatasetSplits(
        train=SampleSet(inputs=base.train.images, targets=(base.train.masks == k).long()),
        test=SampleSet(inputs=base.test.images, targets=(base.test.masks == k).long()),
        num_classes=2, in_chans=3, image_size=int(image_size), multilabel=False, class_names=["ground", figure],
        task="segment", description=f"figure-ground ({figure} vs the rest): " + base.description,
    )
