"""The ``detect`` task: object detection scored by mean average precision (docs/tasks.md sections 2, 4 and 5).

Contract:

- **model output** (eval mode): detections ``(B, D, 6)``, rows ``(x0, y0, x1, y1, score, class)`` in input pixels,
  padded with ``-1`` (class ``-1`` marks a padded row), so the runner can batch, move and accumulate it like logits;
- **target**: the dataset's padded boxes ``(B, M, 5)``, rows ``(class, x0, y0, x1, y1)``, padded with ``-1``
  (:mod:`experiments.data.detection`);
- **training loss**: computed by the model from the ``target`` keyword (docs/tasks.md section 5): every detector in
  ``baselines`` (:mod:`baselines.yolo`, :mod:`baselines.rcnn`, :mod:`baselines.faster_rcnn`) returns
  ``{"losses": {...}, "out": None}`` while training, because its loss needs its own internals (YOLO's grid and
  responsible predictors, the R-CNNs' proposals). :meth:`DetectTask.loss` is therefore only the evaluation loss the
  runner logs as ``test/loss``: ``1 - recall50`` (not differentiable, not used for training).

Metrics:

- per sample (:meth:`DetectTask.correct`, averaged over the test set): ``recall50``, the share of a scene's objects
  found by its ``n`` best-scoring detections (``n`` = the number of objects in the scene; matched one-to-one,
  greedily by score, same class, IoU >= 0.5); ``loc50``, the same without the class (localisation only). Scenes
  without objects count 1. ``recall50`` is the step metric;
- over the set (:meth:`init_state` / :meth:`update` / :meth:`merge` / :meth:`compute`): ``map50`` (PASCAL VOC-style
  AP at IoU 0.5, averaged over classes; the **primary** metric), ``map`` (COCO's AP averaged over IoU 0.50:0.05:0.95)
  and ``map75``, from torchmetrics' ``MeanAveragePrecision`` with the pycocotools backend (COCO's 101-point
  interpolated AP, at most 100 detections per image). The state is the list of per-image detections and ground
  truths, so ``merge`` is a concatenation.

Examples (the optional task hook of docs/tasks.md section 8, :mod:`experiments.examples`): :meth:`DetectTask.examples`
draws each scene twice side by side, ``ground truth | prediction``: the ground-truth boxes in green labelled with
their class, the predicted boxes in red labelled ``<class> <score>`` (the ``max(n, #score >= 0.5)`` best-scoring
detections, at most 10, ``n`` = the number of objects), with :func:`torchvision.utils.draw_bounding_boxes`.

Example:
    >>> import torch
    >>> task = DetectTask()
    >>> target = torch.tensor([[[3.0, 10.0, 10.0, 30.0, 30.0], [-1.0, -1.0, -1.0, -1.0, -1.0]]])
    >>> perfect = torch.tensor([[[10.0, 10.0, 30.0, 30.0, 0.9, 3.0], [-1.0] * 6]])
    >>> task.correct(perfect, target)["recall50"].tolist()
    [1.0]
    >>> state = task.init_state(); task.update(state, perfect, target)
    >>> round(task.compute(state)["map50"], 3)
    1.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["DetectTask"]


def _check(output: Tensor, target: Tensor) -> None:
    if output.dim() != 3 or output.shape[-1] != 6:
        raise ValueError(f"detect task: output must be detections (B, D, 6) rows (x0, y0, x1, y1, score, class), got "
                         f"{tuple(output.shape)}; detectors compute their training loss from the target keyword "
                         "(docs/tasks.md section 5)")
    if target.dim() != 3 or target.shape[-1] != 5 or target.shape[0] != output.shape[0]:
        raise ValueError(f"detect task: target must be padded boxes (B, M, 5) rows (class, x0, y0, x1, y1), got "
                         f"{tuple(target.shape)} for {output.shape[0]} outputs")


def _recall(dets: Tensor, gts: Tensor, *, iou: float, classes: bool) -> float:
    """Greedy one-to-one matching of one scene's top-n detections ``(D, 6)`` to its objects ``(M, 5)``."""
    gts = gts[gts[:, 0] >= 0]
    n = len(gts)
    if n == 0:
        return 1.0
    dets = dets[dets[:, 5] >= 0]
    dets = dets[dets[:, 4].argsort(descending=True)][:n]
    if len(dets) == 0:
        return 0.0
    ious = box_iou(dets[:, :4], gts[:, 1:])
    if classes:
        ious = torch.where(dets[:, 5, None].long() == gts[None, :, 0].long(), ious, torch.zeros_like(ious))
    taken = torch.zeros(n, dtype=torch.bool)
    for row in ious:  # detections in score order
        row = torch.where(taken, torch.full_like(row, -1.0), row)
        j = int(row.argmax())
        if row[j] >= iou:
            taken[j] = True
    return float(taken.sum()) / n


GT_COLOUR, PRED_COLOUR = (0, 255, 0), (255, 0, 0)
MAX_DRAWN, DRAW_SCORE = 10, 0.5


def shown_detections(dets: Tensor, n_objects: int) -> Tensor:
    """The detections an example draws: the ``max(n_objects, #score >= 0.5)`` best-scoring rows (at most 10)."""
    dets = dets[dets[:, 5] >= 0]
    dets = dets[dets[:, 4].argsort(descending=True)]
    k = min(MAX_DRAWN, max(n_objects, int((dets[:, 4] >= DRAW_SCORE).sum())))
    return dets[:k]


class DetectTask:
    """Loss, per-sample recall and set-level mAP for detectors (module docstring)."""

    metric_names = ("recall50", "loc50")
    primary = "map50"
    step_metric = "recall50"

    def __init__(self, *, iou: float = 0.5) -> None:
        self.iou = float(iou)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``1 - mean recall50``: the evaluation loss the runner logs (detectors train on their own losses)."""
        return 1.0 - self.correct(output, target)["recall50"].mean()

    @torch.no_grad()
    def correct(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-scene ``recall50`` and ``loc50`` ``(B,)`` (module docstring)."""
        _check(output, target)
        out, tgt = output.detach().float().cpu(), target.detach().float().cpu()
        rec = [_recall(d, g, iou=self.iou, classes=True) for d, g in zip(out, tgt)]
        loc = [_recall(d, g, iou=self.iou, classes=False) for d, g in zip(out, tgt)]
        return {"recall50": torch.tensor(rec, device=output.device),
                "loc50": torch.tensor(loc, device=output.device)}

    def finalize(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    # --- set-level metrics (docs/tasks.md section 4)
    def init_state(self) -> dict[str, list]:
        return {"preds": [], "targets": []}

    def update(self, state: dict[str, list], output: Tensor, target: Tensor) -> None:
        _check(output, target)
        for d, g in zip(output.detach().float().cpu(), target.detach().float().cpu()):
            d, g = d[d[:, 5] >= 0], g[g[:, 0] >= 0]
            state["preds"].append({"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()})
            state["targets"].append({"boxes": g[:, 1:], "labels": g[:, 0].long()})

    def merge(self, states: list[dict[str, list]]) -> dict[str, list]:
        return {k: [x for s in states for x in s[k]] for k in ("preds", "targets")}

    def compute(self, state: dict[str, list]) -> dict[str, float]:
        """``map``, ``map50``, ``map75`` over the accumulated images (torchmetrics, pycocotools backend)."""
        from torchmetrics.detection import MeanAveragePrecision

        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        if state["preds"]:
            metric.update(state["preds"], state["targets"])
        res: dict[str, Any] = metric.compute()
        return {"map": max(0.0, float(res["map"])), "map50": max(0.0, float(res["map_50"])),
                "map75": max(0.0, float(res["map_75"]))}

    # --- examples (docs/tasks.md section 8)
    def examples(self, output: Tensor, inputs: Any, target: Tensor, *, class_names: list[str]) -> list[dict[str, Any]]:
        """One record per scene: ``image`` = the panel ``ground truth | prediction`` (uint8, height ``H * s``, width
        ``2 W s + 2``, ``s`` = :func:`~experiments.examples.example_scale`), ``title``, ``recall50``, the
        ``ground_truth`` boxes ``[{"class", "box"}]`` and the drawn ``predictions`` ``[{"class", "score", "box"}]``
        (boxes ``[x0, y0, x1, y1]`` in input pixels)."""
        from experiments.examples import draw_boxes, example_scale, hstack, to_rgb, upscale

        _check(output, target)
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        out, tgt = output.detach().float().cpu(), target.detach().float().cpu()

        def name(c: float) -> str:
            return class_names[int(c)] if 0 <= int(c) < len(class_names) else str(int(c))

        s = example_scale(*images.shape[-2:])
        records = []
        for i in range(tgt.shape[0]):
            gts = tgt[i][tgt[i][:, 0] >= 0]
            dets = shown_detections(out[i], len(gts))
            base = upscale(to_rgb(images[i]), s)
            left = draw_boxes(base, gts[:, 1:] * s, colour=GT_COLOUR, labels=[name(c) for c in gts[:, 0]])
            right = draw_boxes(base, dets[:, :4] * s, colour=PRED_COLOUR,
                               labels=[f"{name(d[5])} {float(d[4]):.2f}" for d in dets])
            rec = _recall(out[i], tgt[i], iou=self.iou, classes=True)
            records.append({
                "image": hstack([left, right]), "title": f"recall50 {rec:.2f}", "recall50": round(rec, 4),
                "ground_truth": [{"class": name(g[0]), "box": [round(float(v), 1) for v in g[1:]]} for g in gts],
                "predictions": [{"class": name(d[5]), "score": round(float(d[4]), 4),
                                 "box": [round(float(v), 1) for v in d[:4]]} for d in dets],
            })
        return records
