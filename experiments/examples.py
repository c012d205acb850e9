"""Predicted examples: a few test samples drawn as images (and tables) in the run directory and on wandb.

A task may define the optional hook (docs/tasks.md section 8)

.. code-block:: python

    def examples(self, output, inputs, target, *, class_names) -> list[dict]: ...

which gets the model's eval-mode readout for the first ``n`` test samples (CPU, float32), their inputs and targets,
and the dataset's ``class_names``; it returns one record per sample: ``{"image": uint8 (3, H, W), "title": str,
<JSON-able fields>}``. The segment, detect and caption tasks have it (:mod:`experiments.tasks_segment`,
:mod:`experiments.tasks_detect`, :mod:`experiments.tasks_caption`); classification tasks do not, and get no
examples.

The runner (:func:`write_examples`, called from :func:`experiments.train.train_run` after the final evaluation and,
with ``log.examples_every = k > 0``, after every ``k``-th epoch) writes

- ``<run>/examples/epoch_<EEE>/<iii>.png``: the panel of test sample ``iii`` after epoch ``EEE`` (0-based, the
  ``epoch`` of the matching ``test/*`` row in ``metrics.jsonl``);
- ``<run>/examples/examples.jsonl``: one row per panel, ``{"epoch", "step", "index", "image": <path relative to the
  run directory>, "title", <the task's fields>}``; rows of an epoch written again (a resumed run) replace the old
  ones;

and mirrors them to wandb as a table ``examples/<task>`` (the row's fields, ``image`` as a ``wandb.Image`` and
``file`` its path in the run directory) and a list of images ``examples/<task>/images``
(:meth:`experiments.tracking.RunLogger.log_examples`). ``log.examples`` (default 4) is the number of test samples;
0 turns examples off.

The drawing helpers here are small pure functions of uint8 ``(3, H, W)`` tensors: :func:`to_rgb`, :func:`upscale`,
:func:`colour_mask`, :func:`draw_boxes`, :func:`hstack`.

Example:
    >>> import torch
    >>> mask = torch.tensor([[0, 1], [2, 255]])
    >>> panel = hstack([to_rgb(torch.zeros(1, 4, 4)), upscale(colour_mask(mask), 2)], gap=1)
    >>> tuple(panel.shape), panel.dtype, panel[:, 0, 7].tolist(), panel[:, 3, 8].tolist()  # class 1; unscored
    ((3, 4, 9), torch.uint8, [31, 119, 180], [255, 255, 255])
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["DEFAULT_SIDE", "PALETTE", "colour_mask", "draw_boxes", "example_scale", "hstack", "predict_first",
           "to_rgb", "upscale", "write_examples"]

DEFAULT_SIDE = 128  # panels are scaled up (nearest neighbour, integer factor) to about this many pixels per side
# class k gets PALETTE[k % len(PALETTE)]: background (0) black, then well-separated colours (tab10 order)
PALETTE: list[tuple[int, int, int]] = [
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]
IGNORE_COLOUR = (255, 255, 255)  # unscored pixels (255 / -100) of a segmentation target


def to_rgb(image: Tensor) -> Tensor:
    """A ``(C, H, W)`` image as uint8 RGB ``(3, H, W)``: floats in [0, 1] scaled by 255, other ranges min-max
    normalised; one channel repeated, more than three cut to the first three.

    Example:
        >>> to_rgb(torch.tensor([[[0.0, 1.0]]])).tolist()
        [[[0, 255]], [[0, 255]], [[0, 255]]]
    """
    if image.dim() != 3:
        raise ValueError(f"expected an image (C, H, W), got shape {tuple(image.shape)}")
    img = image.detach().float().cpu()
    if image.dtype == torch.uint8:
        img = img / 255.0
    elif float(img.min()) < 0.0 or float(img.max()) > 1.0:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / max(hi - lo, 1e-12)
    img = img[:3] if img.shape[0] >= 3 else img[:1].expand(3, -1, -1)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def example_scale(height: int, width: int, side: int = DEFAULT_SIDE) -> int:
    """The integer up-scaling factor that brings the longer side to at most ``side`` pixels (at least 1)."""
    return max(1, side // max(int(height), int(width), 1))


def upscale(image: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour up-scaling of ``(C, H, W)`` by an integer ``factor`` (every pixel becomes a block)."""
    if factor == 1:
        return image
    return image.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def colour_mask(mask: Tensor) -> Tensor:
    """A class map ``(H, W)`` as uint8 RGB ``(3, H, W)``: class ``k`` in ``PALETTE[k % 11]``, unscored pixels (255,
    -100) white."""
    m = mask.detach().long().cpu()
    palette = torch.tensor(PALETTE, dtype=torch.uint8)
    ignored = (m == 255) | (m == -100)
    out = palette[m.clamp_min(0) % len(PALETTE)]  # (H, W, 3)
    out[ignored] = torch.tensor(IGNORE_COLOUR, dtype=torch.uint8)
    return out.permute(2, 0, 1).contiguous()


def hstack(panels: list[Tensor], gap: int = 2, fill: int = 255) -> Tensor:
    """uint8 ``(3, H, W_i)`` panels side by side (same height), separated by ``gap`` columns of ``fill``."""
    if len({p.shape[1] for p in panels}) != 1:
        raise ValueError(f"panels must have the same height, got {[tuple(p.shape) for p in panels]}")
    parts: list[Tensor] = []
    for i, p in enumerate(panels):
        if i and gap:
            parts.append(torch.full((3, p.shape[1], gap), fill, dtype=torch.uint8))
        parts.append(p)
    return torch.cat(parts, dim=2)


def draw_boxes(image: Tensor, boxes: Tensor, *, colour: tuple[int, int, int], labels: list[str] | None = None,
               width: int = 1) -> Tensor:
    """``boxes (N, 4)`` rows ``(x0, y0, x1, y1)`` in the pixels of the uint8 RGB ``image`` drawn with
    :func:`torchvision.utils.draw_bounding_boxes` (outline ``width`` pixels inside the box, label text at its top
    left). Coordinates are ordered and clipped to the image first, so a detector's degenerate boxes still draw;
    no boxes: the image unchanged."""
    from torchvision.utils import draw_bounding_boxes

    if len(boxes) == 0:
        return image.clone()
    h, w = image.shape[-2:]
    b = boxes.detach().float().cpu().reshape(-1, 4)
    x = b[:, [0, 2]].sort(-1).values.clamp(0, w - 1)
    y = b[:, [1, 3]].sort(-1).values.clamp(0, h - 1)
    b = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], -1)
    return draw_bounding_boxes(image, b, labels=labels, colors=[colour] * len(b), width=width)


def predict_first(model: torch.nn.Module, ds: Any, n: int, *, device: torch.device,
                  amp: Callable[[], Any] = nullcontext,
                  memory_format: torch.memory_format = torch.contiguous_format) -> tuple[Tensor, Any, Tensor]:
    """The eval-mode readout (CPU float32) of the first ``n`` samples of ``ds``, with their inputs and targets."""
    from experiments.data import index_inputs
    from experiments.data import to_device as _to

    idx = torch.arange(min(int(n), len(ds)))
    x, y = index_inputs(ds.inputs, idx), ds.targets[idx]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), amp():
            out = model(_to(x, device, memory_format))
    finally:
        model.train(was_training)
    return out.logits.detach().float().cpu(), x, y


def write_examples(task: Any, model: torch.nn.Module, ds: Any, *, n: int, run_dir: Path | None, epoch: int,
                   step: int, task_name: str, class_names: list[str], logger: Any, device: torch.device,
                   amp: Callable[[], Any] = nullcontext,
                   memory_format: torch.memory_format = torch.contiguous_format) -> list[dict[str, Any]]:
    """Draw the first ``n`` test samples with the task's ``examples`` hook, save them under ``run_dir`` and log them
    (module docstring); returns the rows written (``[]`` when ``n`` is 0, the task has no hook or ``run_dir`` is
    None, as on ranks other than 0, which still run the forward: an FSDP forward is a collective)."""
    hook = getattr(task, "examples", None)
    if n <= 0 or hook is None or len(ds) == 0:
        return []
    output, inputs, target = predict_first(model, ds, n, device=device, amp=amp, memory_format=memory_format)
    if run_dir is None:
        return []
    records = hook(output, inputs, target, class_names=list(class_names or []))
    root = Path(run_dir)
    folder = root / "examples" / f"epoch_{epoch:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    from torchvision.io import write_png

    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        rec = dict(rec)
        image = rec.pop("image")
        path = folder / f"{i:03d}.png"
        write_png(image.contiguous(), str(path))
        rows.append({"epoch": int(epoch), "step": int(step), "index": i,
                     "image": path.relative_to(root).as_posix(), **rec})
    _replace_epoch(root / "examples" / "examples.jsonl", rows, epoch)
    logger.log_examples(f"examples/{task_name}", [r | {"image": str(root / r["image"]), "file": r["image"]}
                                                   for r in rows], step=step)
    return rows


def _replace_epoch(path: Path, rows: list[dict[str, Any]], epoch: int) -> None:
    """Rewrite ``path`` (atomically) with the rows of other epochs kept and ``rows`` appended."""
    kept: list[str] = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("epoch") != epoch:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in kept + [json.dumps(r) for r in rows]))
    os.replace(tmp, path)
