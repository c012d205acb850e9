"""YOLO v1 (Redmon, Divvala, Girshick, Farhadi 2016, "You only look once: unified, real-time object detection").

One network maps the image to an ``S x S`` grid; every cell predicts ``B`` boxes ``(x, y, sqrt(w), sqrt(h), C)``
(``x, y``: the box centre's offset inside the cell in [0, 1]; ``w, h``: its size relative to the image; ``C``: the
confidence, trained towards the IoU of the box with the object) and one set of ``K`` class probabilities
``P(class | object)``. Raw output ``(N, S, S, 5B + K)``, all linear (as the paper's last layer).

Loss (paper eq. 3), summed over the grid and averaged over the batch; the object whose centre falls in cell ``i``
is assigned to the cell's predictor ``j`` whose box has the highest IoU with it (the *responsible* predictor):

    lambda_coord sum_ij 1obj_ij [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
  + sum_ij 1obj_ij (C - IoU)^2 + lambda_noobj sum_ij 1noobj_ij C^2 + sum_i 1obj_i sum_k (p_k - p^_k)^2

with ``lambda_coord = 5``, ``lambda_noobj = 0.5``. A cell holds at most one object (the paper's limitation): when
two objects' centres share a cell, the first (in target order) is kept. The loss lives in the model: the forward
takes the batch's padded boxes as ``target`` while training (docs/tasks.md section 5) and returns
``{"losses": {"coord", "conf_obj", "conf_noobj", "cls"}, "out": None}``; in eval mode it returns the detections.
:func:`yolo_loss` and :func:`yolo_decode` are also usable on their own.

Decoding: class-specific scores ``C * P(class | object)`` for every (box, class) pair (``C`` and ``P`` clamped to
[0, 1], since the outputs are linear), those above ``score_thresh`` kept, class-wise NMS at IoU ``nms_iou``
(``torchvision.ops.batched_nms``), the best ``max_detections`` returned as ``(N, D, 6)`` rows
``(x0, y0, x1, y1, score, class)`` in input pixels, padded with ``-1``.

Networks:

- :func:`yolo_v1`: the paper's network (Fig. 3): 24 convolutions (7x7/2 + max-pool, 3x3x192 + max-pool, four 1x1/3x3
  groups, ...), leaky ReLU 0.1, FC 4096 with dropout 0.5, FC ``S*S*(5B+K)``, 448 px, ``S = 7``, ``B = 2``:
  271,703,550 parameters for 20 classes (PASCAL VOC), as reference/architectures.md. Deviation: an
  ``AdaptiveAvgPool2d(7)`` before the FC (the identity at 448 px) lets other input sizes through; no ImageNet
  pre-training.
- :func:`yolo_v1_small`: the design for 64 px scenes: 9 convolutions (16..128 channels, stride 16), ``S = 8``
  (8 px cells), ``B = 2``; deviations (issue 9): BatchNorm after every conv and a convolutional head
  (:class:`YOLOConvHead`, as YOLOv2) instead of the FC layers (``head="fc"``, ``batch_norm=False``: the paper's).

Initialisation (both networks): He normal for leaky ReLU 0.1, a small last layer (:func:`_init_weights`). With
PyTorch's default init the 9 unnormalised convolutions of the small network shrank the signal until the grid was
the same for every image (per-image std 1e-5), so training from scratch only learned the mean box (issue 9:
mAP@0.5 0.001); the paper pre-trains its convolutions on ImageNet instead.

Staged view: ``model.staged`` is the network as ``stem -> stages -> head`` (:class:`baselines.resnet.StagedModel`;
the paper model's stages are the five conv groups after the first, its head the FC layers, returning the raw grid
``(N, S, S, 5B + K)``); the detector's forward is ``decode(staged(x))`` (eval) or ``yolo_loss(staged(x), target)``
(training).

Example:
    >>> import torch
    >>> net = yolo_v1_small(num_classes=10, in_chans=1).eval()
    >>> net(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 20, 6])
    >>> target = torch.tensor([[[3.0, 10.0, 12.0, 26.0, 28.0]]])
    >>> sorted(net.train()(torch.zeros(1, 1, 64, 64), target=target)["losses"])
    ['cls', 'conf_noobj', 'conf_obj', 'coord']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.ops import box_iou

from ._detection import classwise_nms, detections_to_padded
from ._registry import register_model
from .resnet import StagedModel

__all__ = ["YOLOv1", "yolo_decode", "yolo_loss", "yolo_v1", "yolo_v1_small"]

_PAPER = "Redmon et al. 2016"
# The paper's Fig. 3, after the stem (7x7x64/2 + max-pool): one list per stage of (kernel, channels, stride) or "M".
_PAPER_STAGES: list[list[Any]] = [
    [(3, 192, 1), "M"],
    [(1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M"],
    [(1, 256, 1), (3, 512, 1)] * 4 + [(1, 512, 1), (3, 1024, 1), "M"],
    [(1, 512, 1), (3, 1024, 1)] * 2 + [(3, 1024, 1), (3, 1024, 2)],
    [(3, 1024, 1), (3, 1024, 1)],
]
_SMALL_STAGES: list[list[Any]] = [
    [(3, 32, 1), "M"],
    [(1, 16, 1), (3, 64, 1), "M"],
    [(1, 32, 1), (3, 128, 1), (3, 128, 2)],
    [(1, 64, 1), (3, 128, 1)],
]


def _conv_stack(spec: Sequence[Any], c: int, batch_norm: bool = False) -> tuple[nn.Sequential, int, int]:
    """Convolutions (same padding, leaky ReLU 0.1; ``batch_norm``: conv without bias, BatchNorm, leaky ReLU, as
    YOLOv2) and 2x2 max-pools; returns the stack, out channels, stride."""
    layers: list[nn.Module] = []
    stride = 1
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            stride *= 2
            continue
        k, out, s = item
        if batch_norm:
            layers += [nn.Conv2d(c, out, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm2d(out)]
        else:
            layers.append(nn.Conv2d(c, out, k, stride=s, padding=k // 2))
        layers.append(nn.LeakyReLU(0.1, inplace=True))
        c, stride = out, stride * s
    return nn.Sequential(*layers), c, stride


class YOLOHead(nn.Module):
    """Adaptive average pool to ``pool x pool``, FC ``hidden`` (leaky ReLU, dropout), FC to the ``(S, S, 5B+K)``
    grid."""

    def __init__(self, channels: int, pool: int, hidden: int, grid: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.grid, self.depth = grid, depth
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc1 = nn.Linear(channels * pool * pool, hidden)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, grid * grid * depth)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.act(self.fc1(self.pool(x).flatten(1))))
        return self.fc2(h).view(-1, self.grid, self.grid, self.depth)


class YOLOConvHead(nn.Module):
    """Not in YOLO v1 (a YOLOv2-style convolutional head, for :func:`yolo_v1_small`): conv 3x3 ``hidden`` (leaky
    ReLU), conv 1x1 to ``r * r * (5B + K)`` channels and a pixel shuffle by ``r``, so that every cell of the ``S x S``
    grid (``S = r x`` the feature map's side) is predicted from its neighbourhood with weights shared by all cells."""

    def __init__(self, channels: int, hidden: int, grid: int, depth: int, upscale: int) -> None:
        super().__init__()
        self.grid, self.depth, self.upscale = grid, depth, upscale
        self.fc1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.fc2 = nn.Conv2d(hidden, depth * upscale * upscale, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.pixel_shuffle(self.fc2(self.act(self.fc1(x))), self.upscale)
        if y.shape[-1] != self.grid or y.shape[-2] != self.grid:
            raise ValueError(f"YOLO conv head: the input gives a {y.shape[-2]}x{y.shape[-1]} grid, expected "
                             f"{self.grid}x{self.grid}")
        return y.permute(0, 2, 3, 1)


def _init_weights(stem: nn.Module, stages: Sequence[nn.Module], head: YOLOHead | YOLOConvHead) -> None:
    """He (Kaiming) normal initialisation for leaky ReLU 0.1 (fan in) of every conv and the first FC, zero biases,
    and a small normal (std 0.01) last FC, so that the grid starts near zero but depends on the input.

    PyTorch's default (uniform, gain 1/sqrt(3) per layer) shrinks the signal ~2.5x per layer: through 9 (small) or
    24 (paper) unnormalised convolutions the output no longer depends on the image and training from scratch only
    learns the mean box (issue 9). The paper pre-trains its first 20 convolutions on ImageNet instead.
    """
    for m in [*stem.modules(), *(x for st in stages for x in st.modules()), head.fc1]:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(head.fc2.weight, std=0.01)
    nn.init.zeros_(head.fc2.bias)


def _centre_to_xyxy(cx: Tensor, cy: Tensor, w: Tensor, h: Tensor) -> Tensor:
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _box_outputs(grid: Tensor, boxes_per_cell: int, sigmoid: bool) -> Tensor:
    """The ``(N, S, S, B, 5)`` box outputs ``(x, y, sqrt w, sqrt h, C)``; ``sigmoid``: x, y and C squashed."""
    n, s = grid.shape[:2]
    p = grid[..., : 5 * boxes_per_cell].reshape(n, s, s, boxes_per_cell, 5)
    if not sigmoid:
        return p
    return torch.cat([p[..., :2].sigmoid(), p[..., 2:4], p[..., 4:].sigmoid()], -1)


def _pred_boxes(grid: Tensor, boxes_per_cell: int, sigmoid: bool = False) -> Tensor:
    """Predicted boxes ``(N, S, S, B, 4)`` xyxy in image-relative units [0, 1] (w, h from the squared outputs)."""
    n, s = grid.shape[:2]
    p = _box_outputs(grid, boxes_per_cell, sigmoid)
    ar = torch.arange(s, device=grid.device, dtype=grid.dtype)
    cx = (ar.view(1, 1, s, 1) + p[..., 0]) / s
    cy = (ar.view(1, s, 1, 1) + p[..., 1]) / s
    return _centre_to_xyxy(cx, cy, p[..., 2].clamp(min=0) ** 2, p[..., 3].clamp(min=0) ** 2)


def yolo_loss(grid: Tensor, target: Tensor, *, image_size: tuple[int, int], boxes_per_cell: int = 2,
              lambda_coord: float = 5.0, lambda_noobj: float = 0.5, conf_target: str = "iou",
              sigmoid: bool = False) -> dict[str, Tensor]:
    """The YOLO v1 loss terms (module docstring), each summed over the grid and averaged over the batch.

    Args:
        grid: raw predictions ``(N, S, S, 5B + K)``.
        target: padded boxes ``(N, M, 5)`` rows ``(class, x0, y0, x1, y1)`` in pixels, padding ``-1``.
        image_size: ``(H, W)`` of the input in pixels.
        conf_target: ``"iou"`` (the paper: the responsible box's IoU with the object, not back-propagated) or
            ``"one"``.

    Returns:
        ``{"coord", "conf_obj", "conf_noobj", "cls"}`` scalars (``coord`` includes ``lambda_coord``, ``conf_noobj``
        includes ``lambda_noobj``).
    """
    if conf_target not in ("iou", "one"):
        raise ValueError(f"conf_target must be 'iou' or 'one', got {conf_target!r}")
    n, s, _, depth = grid.shape
    nb = boxes_per_cell
    hgt, wid = image_size
    grid = grid.float()
    preds = _box_outputs(grid, nb, sigmoid)
    cls = grid[..., 5 * nb :]
    # --- targets: one object per cell (the first in target order), its responsible predictor by IoU
    valid = target[..., 0] >= 0
    img, slot = valid.nonzero(as_tuple=True)
    t = target[img, slot].float()
    cx, cy = (t[:, 1] + t[:, 3]) / (2 * wid), (t[:, 2] + t[:, 4]) / (2 * hgt)
    w, h = (t[:, 3] - t[:, 1]) / wid, (t[:, 4] - t[:, 2]) / hgt
    col, row = (cx * s).long().clamp(0, s - 1), (cy * s).long().clamp(0, s - 1)
    cell = (img * s + row) * s + col
    first = torch.ones_like(cell, dtype=torch.bool)
    if cell.numel():
        seen = torch.full((n * s * s,), cell.numel(), dtype=torch.long, device=grid.device)
        seen.scatter_reduce_(0, cell, torch.arange(cell.numel(), device=grid.device), reduce="amin")
        first = seen[cell] == torch.arange(cell.numel(), device=grid.device)
    img, row, col, t = img[first], row[first], col[first], t[first]
    cx, cy, w, h = cx[first], cy[first], w[first], h[first]
    gt_box = _centre_to_xyxy(cx, cy, w, h)
    cand = _pred_boxes(grid, nb, sigmoid)[img, row, col]  # (K, B, 4)
    iou = box_iou(cand.reshape(-1, 4), gt_box).reshape(len(gt_box), nb, len(gt_box))
    iou = iou[torch.arange(len(gt_box)), :, torch.arange(len(gt_box))].detach() if len(gt_box) else iou[:, :, 0]
    best = iou.argmax(1) if len(gt_box) else torch.zeros(0, dtype=torch.long, device=grid.device)
    resp = torch.zeros(n, s, s, nb, dtype=torch.bool, device=grid.device)
    resp[img, row, col, best] = True
    p = preds[img, row, col, best]  # (K, 5)
    tx, ty = cx * s - col, cy * s - row
    coord = ((p[:, 0] - tx) ** 2 + (p[:, 1] - ty) ** 2 + (p[:, 2] - w.sqrt()) ** 2 + (p[:, 3] - h.sqrt()) ** 2).sum()
    goal = iou.gather(1, best[:, None]).squeeze(1) if conf_target == "iou" else torch.ones_like(cx)
    conf_obj = ((p[:, 4] - goal) ** 2).sum()
    conf_noobj = (preds[..., 4][~resp] ** 2).sum()
    onehot = torch.zeros(len(t), depth - 5 * nb, device=grid.device)
    onehot[torch.arange(len(t)), t[:, 0].long()] = 1.0
    cls_loss = ((cls[img, row, col] - onehot) ** 2).sum()
    return {"coord": lambda_coord * coord / n, "conf_obj": conf_obj / n, "conf_noobj": lambda_noobj * conf_noobj / n,
            "cls": cls_loss / n}


@torch.no_grad()
def yolo_decode(grid: Tensor, *, image_size: tuple[int, int], boxes_per_cell: int = 2, score_thresh: float = 0.005,
                nms_iou: float = 0.5, max_detections: int = 20, sigmoid: bool = False) -> Tensor:
    """Detections ``(N, D, 6)`` (module docstring) from raw predictions ``(N, S, S, 5B + K)``."""
    n, s, _, depth = grid.shape
    nb, k = boxes_per_cell, depth - 5 * boxes_per_cell
    hgt, wid = image_size
    grid = grid.float()
    boxes = _pred_boxes(grid, nb, sigmoid) * grid.new_tensor([wid, hgt, wid, hgt])  # (N, S, S, B, 4)
    conf = _box_outputs(grid, nb, sigmoid)[..., 4].clamp(0, 1)
    scores = conf[..., None] * grid[..., 5 * nb :].clamp(0, 1)[:, :, :, None, :]  # (N, S, S, B, K)
    boxes = boxes[..., None, :].expand(n, s, s, nb, k, 4).reshape(n, -1, 4)
    scores = scores.reshape(n, -1)
    classes = torch.arange(k, device=grid.device).repeat(s * s * nb)
    dets = [classwise_nms(boxes[i], scores[i], classes, iou=nms_iou, max_detections=max_detections,
                          score_thresh=score_thresh) for i in range(n)]
    return detections_to_padded(dets, max_detections, label_offset=0)


class YOLOv1(nn.Module):
    """The YOLO v1 detector around a Staged network ``staged`` whose output is the raw grid (module docstring).

    Shapes: ``(N, C, H, W)`` -> eval: ``(N, max_detections, 6)``; training with ``target`` ``(N, M, 5)``:
    ``{"losses": {...}, "out": None}``; training without ``target``: the raw grid.
    """

    def __init__(self, staged: StagedModel, *, boxes_per_cell: int, lambda_coord: float = 5.0,
                 lambda_noobj: float = 0.5, conf_target: str = "iou", sigmoid: bool = False,
                 score_thresh: float = 0.005, nms_iou: float = 0.5, max_detections: int = 20) -> None:
        super().__init__()
        self.staged = staged
        self.num_classes = staged.num_classes
        self.input_size = staged.input_size
        self.boxes_per_cell = boxes_per_cell
        self.sigmoid = sigmoid
        self.loss_kw = dict(lambda_coord=lambda_coord, lambda_noobj=lambda_noobj, conf_target=conf_target,
                            sigmoid=sigmoid)
        self.decode_kw = dict(score_thresh=score_thresh, nms_iou=nms_iou, max_detections=max_detections,
                              sigmoid=sigmoid)

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor | dict[str, Any]:
        grid = self.staged(x)
        size = (x.shape[-2], x.shape[-1])
        if target is not None:
            losses = yolo_loss(grid, target, image_size=size, boxes_per_cell=self.boxes_per_cell, **self.loss_kw)
            return {"losses": losses, "out": None}
        if self.training:
            return grid
        return yolo_decode(grid, image_size=size, boxes_per_cell=self.boxes_per_cell, **self.decode_kw)


def _build(stem_spec: Sequence[Any], stage_specs: Sequence[Sequence[Any]], *, num_classes: int, in_chans: int,
           input_size: int, grid: int, boxes_per_cell: int, pool: int, hidden: int, dropout: float,
           width: float, batch_norm: bool = False, head: str = "fc", **kw: Any) -> YOLOv1:
    def scale(spec: Sequence[Any]) -> list[Any]:
        return [it if it == "M" else (it[0], max(1, round(it[1] * width)), it[2]) for it in spec]

    stem, c, stride = _conv_stack(scale(stem_spec), in_chans, batch_norm)
    stages, channels, strides = [], [], []
    for spec in stage_specs:
        stage, c, s = _conv_stack(scale(spec), c, batch_norm)
        stride *= s
        stages.append(stage)
        channels.append(c)
        strides.append(stride)
    depth = 5 * boxes_per_cell + num_classes
    if head == "fc":
        top: YOLOHead | YOLOConvHead = YOLOHead(c, pool, hidden, grid, depth, dropout)
    elif head == "conv":
        side = input_size // stride
        if side < 1 or grid % side:
            raise ValueError(f"head='conv' needs the grid ({grid}) to be a multiple of the feature map's side "
                             f"({input_size} px / stride {stride} = {side})")
        top = YOLOConvHead(c, hidden, grid, depth, grid // side)
    else:
        raise ValueError(f"head must be one of: fc, conv (got {head!r})")
    _init_weights(stem, stages, top)
    staged = StagedModel(stem, stages, top, channels=channels, strides=strides,
                         input_size=(in_chans, input_size, input_size), num_classes=num_classes, num_features=hidden)
    return YOLOv1(staged, boxes_per_cell=boxes_per_cell, **kw)


@register_model(family="YOLO", paper=_PAPER, source="hand-written (paper Fig. 3 and eq. 3)", staged=False,
                min_input_size=64, small={"width": 1 / 16, "hidden": 256}, small_input_size=64, slow=True)
def yolo_v1(*, num_classes: int = 20, in_chans: int = 3, grid: int = 7, boxes_per_cell: int = 2,
            input_size: int = 448, hidden: int = 4096, width: float = 1.0, dropout: float = 0.5,
            **kwargs: Any) -> YOLOv1:
    """YOLO v1, the paper's network (Redmon et al. 2016, Fig. 3): 24 conv + 2 FC, 448 px, ``S = 7``, ``B = 2``.

    271,703,550 parameters at 20 classes and 3 channels. ``width`` scales every conv width, ``hidden`` is FC1's
    width; ``kwargs``: ``lambda_coord``, ``lambda_noobj``, ``conf_target``, ``score_thresh``, ``nms_iou``,
    ``max_detections`` (:class:`YOLOv1`).

    Example:
        >>> with torch.device("meta"):
        ...     n = sum(p.numel() for p in yolo_v1().parameters())
        >>> n
        271703550
    """
    return _build([(7, 64, 2), "M"], _PAPER_STAGES, num_classes=num_classes, in_chans=in_chans,
                  input_size=input_size, grid=grid, boxes_per_cell=boxes_per_cell, pool=7, hidden=hidden,
                  dropout=dropout, width=width, **kwargs)


@register_model(family="YOLO", paper=_PAPER, source="hand-written (paper design, 64 px widths)", staged=False,
                min_input_size=32, small={}, small_input_size=64)
def yolo_v1_small(*, num_classes: int = 10, in_chans: int = 1, grid: int = 8, boxes_per_cell: int = 2,
                  input_size: int = 64, hidden: int = 256, width: float = 1.0, dropout: float = 0.0,
                  head: str = "conv", batch_norm: bool = True, **kwargs: Any) -> YOLOv1:
    """YOLO v1 for 64 px scenes: 9 conv layers (16..128 channels, stride 16) with BatchNorm, a convolutional head
    (conv 3x3 256, conv 1x1, pixel shuffle by 2 to the ``S = 8`` grid), ``B = 2``; the paper's loss and decoding
    (module docstring). ``kwargs`` as :func:`yolo_v1`.

    Deviations from the paper's design, for training from scratch on 2,000 scenes (issue 9): ``batch_norm=True``
    (YOLOv2's BatchNorm after every conv) and ``head="conv"`` (``"fc"``: the paper's avg-pool + FC 256 + FC head,
    which memorised the training scenes: test mAP@0.5 0.07 vs 0.14 for the conv head without BatchNorm, 6 epochs).

    Example:
        >>> sum(p.numel() for p in yolo_v1_small().parameters()) > 0
        True
    """
    return _build([(3, 16, 1), "M"], _SMALL_STAGES, num_classes=num_classes, in_chans=in_chans,
                  input_size=input_size, grid=grid, boxes_per_cell=boxes_per_cell, pool=4, hidden=hidden,
                  dropout=dropout, width=width, head=head, batch_norm=batch_norm, **kwargs)
