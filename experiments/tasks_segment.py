"""The ``segment`` task: per-pixel classification scored by pixel accuracy and mean intersection-over-union.

Model output: logits ``(B, K, H, W)``; target: int64 ``(B, H, W)`` class indices, with ``255`` or ``-100`` where a
pixel is not scored (void / ignore). Loss: cross-entropy averaged over the scored pixels (zero for a batch with
none).

Per sample (:meth:`SegmentTask.correct`): ``pixel_acc`` = share of the sample's scored pixels whose arg-max class
is right (the step metric). Over the whole test set (:meth:`init_state` / :meth:`update` / :meth:`merge` /
:meth:`compute`, docs/tasks.md section 4) from the ``K x K`` confusion matrix ``C[t, p]`` (pixels of true class
``t`` predicted as ``p``):

    IoU_k = C[k, k] / (sum_p C[k, p] + sum_t C[t, k] - C[k, k]),   miou = mean of IoU_k over the classes with
    sum_p C[k, p] + sum_t C[t, k] > 0 (present in the target or predicted), pixel_acc_all = trace(C) / sum(C),

the standard protocol of Long, Shelhamer and Darrell 2015 ("Fully convolutional networks for semantic
segmentation", CVPR, section 5: "mean IU") and of the PASCAL VOC segmentation benchmark (Everingham et al.
2010). Classes absent from both target and prediction over the whole set are left out of the mean (VOC
convention); the background class counts like any other. Primary metric: ``miou``.

Examples (the optional task hook of docs/tasks.md section 8, :mod:`experiments.examples`): :meth:`SegmentTask.examples`
draws each sample as one PNG panel ``input | ground-truth mask | predicted mask``, the masks colour-coded
(``experiments.examples.PALETTE``: background black, unscored pixels white), scaled up to about 128 px.

Example:
    >>> import torch
    >>> task = SegmentTask()
    >>> logits = torch.zeros(1, 2, 2, 2); logits[0, 1, 0] = 1.0      # predicts class 1 on the top row
    >>> target = torch.tensor([[[1, 1], [1, 0]]])
    >>> task.correct(logits, target)["pixel_acc"].tolist()
    [0.75]
    >>> state = task.init_state(); task.update(state, logits, target)
    >>> {k: round(v, 4) for k, v in task.compute(state).items()}  # IoU: class 0 1/2, class 1 2/3
    {'miou': 0.5833, 'pixel_acc_all': 0.75}
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_INDICES", "SegmentTask", "confusion_matrix", "miou_from_confusion"]

IGNORE_INDICES = (255, -100)


def _scored(target: Tensor) -> Tensor:
    ok = torch.ones_like(target, dtype=torch.bool)
    for v in IGNORE_INDICES:
        ok &= target != v
    return ok


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """int64 ``(K, K)`` counts ``C[t, p]`` over the scored pixels (ignore values 255 and -100 are skipped).

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 255]), 2).tolist()
        [[1, 0], [0, 1]]
    """
    ok = _scored(target)
    t, p = target[ok].long(), pred[ok].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"segment task: target classes must be in [0, {num_classes}) or 255/-100, "
                         f"got values in [{int(t.min())}, {int(t.max())}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_from_confusion(conf: Tensor) -> dict[str, float]:
    """``miou`` and ``pixel_acc_all`` from a confusion matrix (module docstring)."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    valid = union > 0
    miou = float((tp[valid] / union[valid]).mean()) if valid.any() else float("nan")
    total = float(conf.sum())
    return {"miou": miou, "pixel_acc_all": float(tp.sum()) / total if total else float("nan")}


class SegmentTask:
    """Cross-entropy over scored pixels; per-sample pixel accuracy; set-level mean IoU (module docstring)."""

    metric_names = ("pixel_acc",)
    primary = "miou"
    step_metric = "pixel_acc"

    def _check(self, logits: Tensor, target: Tensor) -> None:
        if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] \
                or logits.shape[2:] != target.shape[1:]:
            raise ValueError(f"segment task: logits must be (B, K, H, W) and targets (B, H, W) of the same B, H, W; "
                             f"got {tuple(logits.shape)} and {tuple(target.shape)}")

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        self._check(logits, target)
        ok = _scored(target)
        if not bool(ok.any()):  # nothing scored in the batch: zero, keeping the graph
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float(), target.long().masked_fill(~ok, -100), ignore_index=-100)

    @torch.no_grad()
    def correct(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        self._check(logits, target)
        b = target.shape[0]
        ok = _scored(target).reshape(b, -1).float()
        right = (logits.argmax(1) == target).reshape(b, -1).float() * ok
        return {"pixel_acc": right.sum(-1) / ok.sum(-1).clamp_min(1.0)}

    def finalize(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    # ---- set-level metrics (docs/tasks.md section 4)

    def init_state(self) -> dict[str, Any]:
        return {"conf": None}

    def update(self, state: dict[str, Any], output: Tensor, target: Tensor) -> None:
        self._check(output, target)
        conf = confusion_matrix(output.argmax(1).cpu(), target.cpu(), output.shape[1])
        state["conf"] = conf if state["conf"] is None else state["conf"] + conf

    def merge(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        confs = [s["conf"] for s in states if s["conf"] is not None]
        return {"conf": torch.stack(confs).sum(0) if confs else None}

    def compute(self, state: dict[str, Any]) -> dict[str, float]:
        if state["conf"] is None:
            return {"miou": float("nan"), "pixel_acc_all": float("nan")}
        return miou_from_confusion(state["conf"])

    # ---- examples (docs/tasks.md section 8)

    def examples(self, output: Tensor, inputs: Any, target: Tensor, *, class_names: list[str]) -> list[dict[str, Any]]:
        """One record per sample: ``image`` = the panel ``input | ground truth | prediction`` (uint8, height ``H * s``,
        width ``3 W s + 4``, ``s`` = :func:`~experiments.examples.example_scale`), ``title``, ``pixel_acc`` and the
        names of the classes present in the target (``true_classes``) and in the prediction (``predicted_classes``).
        """
        from experiments.examples import colour_mask, example_scale, hstack, to_rgb, upscale

        self._check(output, target)
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        if images.shape[-2:] != target.shape[-2:]:  # draw the input at the masks' resolution
            images = F.interpolate(images.float(), size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
        pred = output.argmax(1)
        acc = self.correct(output, target)["pixel_acc"]
        k = output.shape[1]
        names = [class_names[c] if c < len(class_names) else str(c) for c in range(k)]
        s = example_scale(*target.shape[1:])
        records = []
        for i in range(target.shape[0]):
            ok = _scored(target[i])
            true = sorted(int(c) for c in target[i][ok].unique())
            guess = sorted(int(c) for c in pred[i].unique())
            panel = hstack([upscale(p, s) for p in (to_rgb(images[i]), colour_mask(target[i]), colour_mask(pred[i]))])
            records.append({"image": panel, "title": f"pixel acc {float(acc[i]):.3f}",
                            "pixel_acc": round(float(acc[i]), 4), "true_classes": [names[c] for c in true],
                            "predicted_classes": [names[c] for c in guess]})
        return records
