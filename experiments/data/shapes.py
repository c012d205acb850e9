"""Shapes: generated colour scenes of simple objects, with boxes, semantic and instance masks and captions.

Each scene is an RGB ``image_size x image_size`` image holding between ``min_objects`` and ``max_objects`` objects
drawn in painter's order on a textured background:

* **shape** (the class): one of ``classes``, chosen from :data:`SHAPES` (``circle``, ``square``, ``triangle``,
  ``cross``, ``diamond``, ``ring``). Shapes of a scene may repeat. Each shape is an indicator function of the
  object's normalised coordinates ``u = (x + 0.5 - cx) / r``, ``v = (y + 0.5 - cy) / r`` (pixel centres, ``r``
  = half the object's side): circle ``u^2 + v^2 <= 1``; square ``max(|u|, |v|) <= 0.85``; triangle (apex up)
  ``-0.9 <= v <= 0.8`` and ``|u| <= 0.95 (v + 0.9) / 1.7``; cross (bars of half-width 0.3); diamond
  ``|u| + |v| <= 1``; ring ``0.55 <= sqrt(u^2 + v^2) <= 1``;
* **colour**: one of ``colors`` (names from :data:`COLORS`), a flat RGB value;
* **size**: side ``2 r`` uniform in ``object_scale * image_size`` (a ``(lo, hi)`` fraction pair);
* **position**: centres uniform inside the image, by rejection sampling (``_TRIES`` candidates per object)
  so that two objects ``i, j`` satisfy ``|c_i - c_j| >= (1 - occlusion) (r_i + r_j)``: ``occlusion=0``
  gives disjoint objects, larger values allow later objects to hide parts of earlier ones. An object with no
  valid candidate is dropped (so a crowded scene may hold fewer than ``min_objects``; never fewer than one),
  and so is any object of which less than ``min_visible`` of its area stays visible after occlusion;
* **background**: a dim random base colour modulated by ``texture`` times a random-phase sinusoidal grating
  plus bilinearly upsampled coarse noise (``texture=0``: flat); finally Gaussian pixel noise of std ``noise``
  is added to the whole image and it is clipped to ``[0, 1]``.

Fields of each split (an :class:`~experiments.data.ImageSet`; ``N`` scenes, ``J = max_objects`` slots, ``K =
len(classes)``, ``H = W = image_size``):

* ``images``: float32 ``(N, 3, H, W)`` in ``[0, 1]``;
* ``labels``: float32 multi-hot ``(N, K)``: 1 for every class with at least one (visible) object;
* ``boxes``: float32 ``(N, J, 5)``, rows ``(class, x0, y0, x1, y1)``: the tight box of the object's *visible*
  pixels (its instance mask), pixel coordinates with exclusive ``x1``/``y1``; slots of dropped or absent objects
  are all ``-1``. Slot order is painting order (slot ``j`` is drawn over slots ``< j``);
* ``masks``: int64 ``(N, H, W)`` semantic mask: ``0`` background, ``k + 1`` where the visible object is of class
  ``k``;
* ``instance_masks``: int64 ``(N, H, W)``: ``0`` background, ``j + 1`` where slot ``j``'s object is visible
  (consistent with ``boxes[:, j]`` and ``masks``);
* ``source_ids``: int64 ``(N, J)``: the *colour* index (into the ``colors`` option) of each slot's object,
  ``-1`` for empty slots (shapes have no source images; the field keeps the ImageSet contract);
* ``captions``: ``list[str]`` of length ``N`` from the grammar

  ``caption := NP | NP REL NP | NP REL NP ("," NP)* "and" NP``, ``NP := "a" COLOR SHAPE``,
  ``REL := "above" | "below" | "left of" | "right of"``

  where the NPs list the present objects in slot order and REL relates the first to the second by the centres
  of their boxes: vertical (``above``/``below``, image ``y`` grows downward) when ``|dy| >= |dx|``, else
  horizontal. E.g. ``"a red circle above a blue square"``. :func:`caption_vocabulary` lists the words.

``DatasetSplits``: ``num_classes = K``, ``in_chans = 3``, ``multilabel=True``, ``task="classify"``,
``class_names = list(classes)``. :func:`shapes_segment` builds the same scenes as a ``segment`` task:
``SampleSet(inputs=images, targets=masks)`` with ``num_classes = K + 1`` (background is class 0).

Everything is a deterministic function of the options (``numpy.random.default_rng`` seeded by ``seed``; train and
test from independent child seeds; each split generated in chunks of 512 scenes with their own child seeds) and
vectorised over scenes: measured about 9,000-10,000 scenes/s at 32 px and 1,700 at 64 px on one core of a shared
2-core CPU, some 10x the rate a small U-Net (``unet_bn``, width 8) trains on them (``tests/test_shapes.py`` prints
the ratio). At the defaults scenes hold 1, 2 or 3 objects in about equal shares (613 / 713 / 674 of 2,000 at seed
0; crowding and ``min_visible`` drop a few).

Example::

    from experiments.data import create_dataset

    s = create_dataset("shapes", seed=0, num_train=8, num_test=4).train
    s.images.shape, s.labels.shape, s.boxes.shape, s.masks.shape, s.instance_masks.shape, len(s.captions)
    # (8, 3, 32, 32), (8, 6), (8, 3, 5), (8, 32, 32), (8, 32, 32), 8
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._registry import DatasetSplits, ImageSet, SampleSet, register_dataset

__all__ = ["COLORS", "RELATIONS", "SHAPES", "caption_vocabulary", "render_shapes", "shapes", "shapes_segment"]

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.15),
    "magenta": (0.90, 0.20, 0.85),
    "cyan": (0.15, 0.90, 0.90),
    "white": (0.97, 0.97, 0.97),
}
RELATIONS = ("above", "below", "left of", "right of")
_TRIES = 12
_CHUNK = 512


def caption_vocabulary(classes: Sequence[str] = SHAPES, colors: Sequence[str] = tuple(COLORS)) -> list[str]:
    """Every word the caption grammar can produce (``","`` is a separate token), sorted.

    Example:
        >>> caption_vocabulary(["circle"], ["red"])
        [',', 'a', 'above', 'and', 'below', 'circle', 'left', 'of', 'red', 'right']
    """
    words = {",", "a", "and"} | {w for r in RELATIONS for w in r.split()} | set(classes) | set(colors)
    return sorted(words)


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indicator of ``SHAPES[shape]`` at normalised coordinates ``u`` (..., 1, W), ``v`` (..., H, 1)."""
    if shape == 0:
        return u * u + v * v <= 1.0
    if shape == 1:
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == 2:
        return (v >= -0.9) & (v <= 0.8) & (np.abs(u) <= 0.95 * (v + 0.9) / 1.7)
    if shape == 3:
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == 4:
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == 5:
        rr = u * u + v * v
        return (rr <= 1.0) & (rr >= 0.55**2)
    raise ValueError(f"unknown shape index {shape}")


def _place(rng: np.random.Generator, r: np.ndarray, active: np.ndarray, size: int, occlusion: float) -> tuple:
    """Centres ``(n, J, 2)`` by rejection sampling; slots without a valid candidate become inactive."""
    n, j_max = r.shape
    centres = np.zeros((n, j_max, 2))
    active = active.copy()
    rows = np.arange(n)
    for j in range(j_max):
        lo = r[:, j, None] * 0.5  # the centre may sit up to half a radius from the edge (objects are clipped)
        cand = lo[:, :, None] + rng.random((n, _TRIES, 2)) * (size - 2 * lo)[:, :, None]
        ok = np.ones((n, _TRIES), dtype=bool)
        for i in range(j):
            d = np.linalg.norm(cand - centres[:, i, None, :], axis=-1)
            ok &= ~active[:, i, None] | (d >= (1.0 - occlusion) * (r[:, i, None] + r[:, j, None]))
        first = np.argmax(ok, axis=1)
        found = ok[rows, first]
        centres[:, j] = cand[rows, first]
        active[:, j] &= found | (j == 0)
    return centres, active


def _composite(kind: np.ndarray, shape_ids: np.ndarray, centres: np.ndarray, r: np.ndarray, active: np.ndarray, size: int) -> tuple:
    """Instance map ``(n, H, W)`` (``j + 1`` for the top-most slot ``j``) and full-shape areas ``(n, J)``."""
    n, j_max = kind.shape
    grid = np.arange(size, dtype=np.float32) + 0.5
    inst = np.zeros((n, size, size), dtype=np.int64)
    area = np.zeros((n, j_max))
    c, rad = centres.astype(np.float32), r.astype(np.float32)
    for j in range(j_max):
        shape_of = np.where(active[:, j], shape_ids[kind[:, j]], -1)
        for shape in np.unique(shape_of[shape_of >= 0]):
            idx = np.flatnonzero(shape_of == shape)
            u = (grid[None, None, :] - c[idx, j, 0, None, None]) / rad[idx, j, None, None]
            v = (grid[None, :, None] - c[idx, j, 1, None, None]) / rad[idx, j, None, None]
            m = _shape_mask(int(shape), u, v)
            area[idx, j] = m.sum((1, 2))
            sub = inst[idx]
            sub[m] = j + 1
            inst[idx] = sub
    return inst, area


def _slot_counts(inst: np.ndarray, j_max: int) -> np.ndarray:
    """Pixels of each slot ``(n, J)`` in an instance map ``(n, H, W)`` (one bincount)."""
    n = inst.shape[0]
    flat = (inst.reshape(n, -1) + (j_max + 1) * np.arange(n)[:, None]).ravel()
    return np.bincount(flat, minlength=n * (j_max + 1)).reshape(n, j_max + 1)[:, 1:]


def _background(rng: np.random.Generator, n: int, size: int, texture: float) -> np.ndarray:
    """Float32 ``(n, 3, H, W)``: a dim base colour times ``1 + texture * (grating + coarse noise) / 2``."""
    base = (0.12 + 0.3 * rng.random((n, 3, 1, 1))).astype(np.float32)
    if texture <= 0:
        return np.broadcast_to(base, (n, 3, size, size)).copy()
    grid = ((np.arange(size) + 0.5) / size).astype(np.float32)
    theta = rng.random(n).astype(np.float32) * np.float32(np.pi)
    freq = (2.0 + 4.0 * rng.random(n)).astype(np.float32)
    phase = (rng.random(n) * 2 * np.pi).astype(np.float32)
    proj = np.cos(theta)[:, None, None] * grid[None, None, :] + np.sin(theta)[:, None, None] * grid[None, :, None]
    grating = np.sin(np.float32(2 * np.pi) * freq[:, None, None] * proj + phase[:, None, None])  # in [-1, 1]
    coarse = torch.from_numpy(rng.standard_normal((n, 1, 5, 5), dtype=np.float32))
    blobs = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    pattern = grating[:, None] + np.clip(blobs.numpy(), -2, 2) / 2  # in [-2, 2]
    return base * (1.0 + np.float32(texture / 2) * pattern)


def _captions(kind: np.ndarray, color: np.ndarray, boxes: np.ndarray, classes: Sequence[str],
              colors: Sequence[str]) -> list[str]:
    out = []
    for i in range(kind.shape[0]):
        slots = np.flatnonzero(boxes[i, :, 0] >= 0)
        nps = [f"a {colors[color[i, j]]} {classes[kind[i, j]]}" for j in slots]
        if len(nps) == 1:
            out.append(nps[0])
            continue
        (ax, ay), (bx, by) = ((boxes[i, j, 1:3] + boxes[i, j, 3:5]) / 2 for j in slots[:2])
        dx, dy = ax - bx, ay - by
        rel = ("above" if dy < 0 else "below") if abs(dy) >= abs(dx) else ("left of" if dx < 0 else "right of")
        text = f"{nps[0]} {rel} {nps[1]}"
        if len(nps) > 2:
            text += "".join(f", {p}" for p in nps[2:-1]) + f" and {nps[-1]}"
        out.append(text)
    return out


def render_shapes(
    rng: np.random.Generator,
    n: int,
    *,
    image_size: int,
    min_objects: int,
    max_objects: int,
    shape_ids: Sequence[int],
    palette: np.ndarray,
    object_scale: tuple[float, float],
    occlusion: float,
    min_visible: float,
    texture: float,
    noise: float,
) -> dict[str, np.ndarray]:
    """``n`` scenes as numpy arrays (the fields of the module docstring, plus ``kind`` (n, J), the class of every
    slot, drawn or not). Class ``k`` is drawn as ``SHAPES[shape_ids[k]]``, colour ``c`` as ``palette[c]`` (RGB)."""
    size, j_max = image_size, max_objects
    num_classes, num_colors = len(shape_ids), len(palette)
    shape_ids = np.asarray(shape_ids, dtype=np.int64)
    num = rng.integers(min_objects, max_objects + 1, size=n)
    active = np.arange(j_max)[None, :] < num[:, None]
    kind = rng.integers(0, num_classes, size=(n, j_max))
    color = rng.integers(0, num_colors, size=(n, j_max))
    r = 0.5 * size * (object_scale[0] + (object_scale[1] - object_scale[0]) * rng.random((n, j_max)))
    centres, active = _place(rng, r, active, size, occlusion)
    bg = _background(rng, n, size, texture)
    eps = rng.standard_normal((n, 3, size, size), dtype=np.float32) if noise > 0 else None

    inst, area = _composite(kind, shape_ids, centres, r, active, size)
    visible = _slot_counts(inst, j_max)
    drop = active & ((visible < min_visible * np.maximum(area, 1)) | (visible == 0))
    drop[:, -1] &= visible[:, -1] == 0  # nothing covers the last painted slot; only clipping can hide it
    redo = np.flatnonzero(drop.any(1))
    if redo.size:  # re-draw only the scenes that lost an object
        active &= ~drop
        inst[redo], _ = _composite(kind[redo], shape_ids, centres[redo], r[redo], active[redo], size)

    # tight boxes of the visible pixels: the rows and columns where each slot occurs
    onehot = inst[..., None] == np.arange(1, j_max + 1)  # (n, H, W, J)
    rows_any, cols_any = onehot.any(2), onehot.any(1)  # (n, H, J), (n, W, J)
    has = rows_any.any(1)  # (n, J)
    y0, y1 = np.argmax(rows_any, 1), size - np.argmax(rows_any[:, ::-1], 1)
    x0, x1 = np.argmax(cols_any, 1), size - np.argmax(cols_any[:, ::-1], 1)
    boxes = np.stack([kind, x0, y0, x1, y1], axis=2).astype(np.float32)
    boxes[~has] = -1.0
    present = has
    # paint: per scene a table of slot colours (row 0: unused), gathered per pixel
    fg = inst > 0
    table = torch.from_numpy(np.concatenate([np.zeros((n, 1), np.int64), color], 1))
    t_inst = torch.from_numpy(inst.reshape(n, -1))
    pix_color = torch.gather(table, 1, t_inst)  # (n, H * W)
    rgb = torch.from_numpy(palette.astype(np.float32).T.copy())[:, pix_color]  # (3, n, H * W)
    img = np.where(fg[:, None], rgb.permute(1, 0, 2).reshape(n, 3, size, size).numpy(), bg)
    if eps is not None:
        img += np.float32(noise) * eps
    np.clip(img, 0.0, 1.0, out=img)
    kinds1 = torch.from_numpy(np.concatenate([np.full((n, 1), -1, np.int64), kind], 1))
    semantic = (torch.gather(kinds1, 1, t_inst) + 1).reshape(n, size, size).numpy()
    multi_hot = np.zeros((n, num_classes), dtype=np.float32)
    si, sj = np.nonzero(present)
    multi_hot[si, kind[si, sj]] = 1.0
    return {
        "images": img,
        "labels": multi_hot,
        "boxes": boxes,
        "masks": semantic,
        "instance_masks": inst,
        "color": np.where(present, color, -1).astype(np.int64),
        "kind": kind,
    }


def _check(image_size: int, num_train: int, num_test: int, min_objects: int, max_objects: int,
           classes: Sequence[str], colors: Sequence[str], object_scale: Sequence[float], occlusion: float,
           min_visible: float, texture: float, noise: float) -> None:
    if isinstance(classes, str) or not classes or any(c not in SHAPES for c in classes) or len(set(classes)) != len(
            classes):
        raise ValueError(f"classes must be distinct names from {', '.join(SHAPES)}; got {classes!r}")
    if isinstance(colors, str) or not colors or any(c not in COLORS for c in colors) or len(set(colors)) != len(colors):
        raise ValueError(f"colors must be distinct names from {', '.join(COLORS)}; got {colors!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if num_train < 0 or num_test < 0:
        raise ValueError(f"num_train and num_test must be >= 0, got {num_train}, {num_test}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if (isinstance(object_scale, str) or len(object_scale) != 2
            or not 0 < float(object_scale[0]) <= float(object_scale[1]) <= 1):
        raise ValueError(f"object_scale must be a (lo, hi) pair with 0 < lo <= hi <= 1, got {object_scale!r}")
    if not 0.0 <= occlusion <= 1.0:
        raise ValueError(f"occlusion must be in [0, 1], got {occlusion}")
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    if texture < 0 or noise < 0:
        raise ValueError(f"texture and noise must be >= 0, got {texture}, {noise}")


def _generate(seed: int, n: int, stream: int, **opts) -> dict:
    """``n`` scenes of split ``stream`` (0 train, 1 test), in chunks of ``_CHUNK`` with their own child seeds."""
    seq = np.random.SeedSequence(int(seed)).spawn(2)[stream]
    if n == 0:  # the fields' shapes and dtypes, no scenes
        return {k: v[:0] for k, v in render_shapes(np.random.default_rng(seq), 1, **opts).items()}
    chunks = [render_shapes(np.random.default_rng(s), min(_CHUNK, n - i * _CHUNK), **opts)
              for i, s in enumerate(seq.spawn(-(-n // _CHUNK)))]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _build(seed, image_size, num_train, num_test, min_objects, max_objects, classes, colors, object_scale, occlusion,
           min_visible, texture, noise) -> tuple[ImageSet, ImageSet, str]:
    image_size, num_train, num_test = int(image_size), int(num_train), int(num_test)
    min_objects, max_objects = int(min_objects), int(max_objects)
    classes, colors = list(classes) if not isinstance(classes, str) else classes, (
        list(colors) if not isinstance(colors, str) else colors)
    _check(image_size, num_train, num_test, min_objects, max_objects, classes, colors, object_scale, float(occlusion),
           float(min_visible), float(texture), float(noise))
    opts = dict(image_size=image_size, min_objects=min_objects, max_objects=max_objects,
                shape_ids=[SHAPES.index(c) for c in classes],
                palette=np.asarray([COLORS[c] for c in colors], dtype=np.float64), object_scale=(float(object_scale[0]), float(object_scale[1])),
                occlusion=float(occlusion), min_visible=float(min_visible), texture=float(texture), noise=float(noise))
    sets = []
    for stream, n in ((0, num_train), (1, num_test)):
        a = _generate(seed, n, stream, **opts)
        sets.append(_to_imageset(a, classes, colors))
    desc = (f"shapes: {min_objects}-{max_objects} objects ({', '.join(classes)}) in {len(colors)} colours, "
            f"side {object_scale[0]}-{object_scale[1]} of {image_size}px, occlusion {occlusion} (min visible "
            f"{min_visible}), texture {texture}, noise {noise}, seed={seed}")
    return sets[0], sets[1], desc


def _to_imageset(a: dict, classes: Sequence[str], colors: Sequence[str]) -> ImageSet:
    return ImageSet(
        images=torch.from_numpy(a["images"]),
        labels=torch.from_numpy(a["labels"]),
        source_ids=torch.from_numpy(a["color"]),
        boxes=torch.from_numpy(a["boxes"]),
        masks=torch.from_numpy(a["masks"]),
        instance_masks=torch.from_numpy(a["instance_masks"]),
        captions=_captions(a["kind"], np.maximum(a["color"], 0), a["boxes"], classes, colors),
    )


_DOC_ARGS = """
    Args:
        seed: seeds both splits (independent child seeds).
        image_size: side of the square RGB images.
        num_train: number of training scenes.
        num_test: number of test scenes.
        min_objects: fewest objects drawn per scene (crowded scenes may end up with fewer; never fewer than 1).
        max_objects: most objects per scene (the number of ``boxes`` slots).
        classes: the shape names, from :data:`SHAPES` (their order is the class order).
        colors: the colour names, from :data:`COLORS`.
        object_scale: ``(lo, hi)``: an object's side is uniform in ``[lo, hi] * image_size``.
        occlusion: how much objects may overlap: centres at least ``(1 - occlusion) (r_i + r_j)`` apart.
        min_visible: objects with a smaller visible share of their area are dropped.
        texture: amplitude of the background texture (0: flat background).
        noise: std of the additive Gaussian pixel noise.
"""


@register_dataset
def shapes(
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
    """Multi-label shape scenes with boxes, semantic/instance masks and captions (see the module docstring)."""
    train, test, desc = _build(seed, image_size, num_train, num_test, min_objects, max_objects, classes, colors,
                               object_scale, occlusion, min_visible, texture, noise)
    return DatasetSplits(train=train, test=test, num_classes=len(classes), in_chans=3, image_size=int(image_size),
                         multilabel=True, class_names=list(classes), description=desc)


@register_dataset
def shapes_segment(
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
    """The :func:`shapes` scenes as semantic segmentation: ``SampleSet(images (N, 3, H, W), masks (N, H, W))``.

    ``num_classes = len(classes) + 1``: class 0 is background, ``k + 1`` is shape ``classes[k]``; task
    ``segment``. Same options and the same scenes as :func:`shapes` for the same options.
    """
    train, test, desc = _build(seed, image_size, num_train, num_test, min_objects, max_objects, classes, colors,
                               object_scale, occlusion, min_visible, texture, noise)
    return DatasetSplits(
        train=SampleSet(inputs=train.images, targets=train.masks),
        test=SampleSet(inputs=test.images, targets=test.masks),
        num_classes=len(classes) + 1, in_chans=3, image_size=int(image_size), multilabel=False,
        class_names=["background", *classes], description="semantic segmentation of " + desc, task="segment")


shapes.__doc__ = (shapes.__doc__ or "") + _DOC_ARGS
shapes_segment.__doc__ = (shapes_segment.__doc__ or "") + _DOC_ARGS
