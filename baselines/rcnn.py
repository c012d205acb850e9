"""R-CNN (Girshick et al. 2014) and Fast R-CNN (Girshick 2015) with class-agnostic sliding-window proposals.

**R-CNN** (R. Girshick, J. Donahue, T. Darrell, J. Malik, "Rich feature hierarchies for accurate object detection
and semantic segmentation", CVPR 2014): (1) class-agnostic region proposals; (2) each proposal, dilated by a
``context`` margin, is cropped and *warped* to a fixed ``crop x crop`` window (here bilinearly,
``torchvision.ops.roi_align`` on the image, ``aligned=True``); (3) a CNN computes a feature vector per warped crop;
(4) per-class scores and a per-class box regressor (appendix C: ``t = ((g_x - p_x)/p_w, (g_y - p_y)/p_h,
log(g_w/p_w), log(g_h/p_h))``, :func:`baselines._detection.encode_boxes`) on top; (5) class-wise greedy NMS.
Training: proposals with IoU >= 0.5 to an object take its class, the rest are background (the paper's fine-tuning
labels); the ground-truth boxes are added as proposals; ``samples_per_image`` proposals per image are sampled with
at most ``positive_fraction`` foreground; the regressor is trained on proposals with IoU >= ``reg_iou`` (0.6 in the
paper). Deviations: a softmax classifier over ``K + 1`` classes trained jointly with a smooth-L1 box regressor
instead of post-hoc linear SVMs and ridge regression on frozen features (Fast R-CNN section 5.4 found the softmax
as good); a small CNN trained from scratch instead of an ImageNet AlexNet; and proposals from
:func:`baselines._detection.window_proposals` (square sliding windows at several sizes ranked by an ink-contrast
objectness and NMS'd), since selective search is not available in torch.

**Fast R-CNN** (R. Girshick, "Fast R-CNN", ICCV 2015): one backbone pass over the whole image, then each external
proposal is RoI-pooled from the feature map (``roi_pool="pool"``: max pooling into 7x7 bins, the paper's; or
``"align"``: RoIAlign) and fed to two FC layers, a softmax classifier over ``K + 1`` classes and per-class box
regression (smooth L1), trained jointly with mini-batches of RoIs (25% foreground at IoU >= 0.5). The heads,
sampling, box coding (weights (10, 10, 5, 5)) and per-class NMS are torchvision's ``RoIHeads`` (with
``TwoMLPHead`` and ``FastRCNNPredictor``); proposals as for R-CNN. Deviation: backbone from scratch (a narrow
``resnet18`` stem + ``layer1`` by default), proposals not from selective search.

Both compute their training losses from the ``target`` keyword (docs/tasks.md section 5): padded boxes
``(N, M, 5)`` rows ``(class, x0, y0, x1, y1)``; training returns ``{"losses": {...}, "out": None}``, eval mode
returns detections ``(N, max_detections, 6)`` rows ``(x0, y0, x1, y1, score, class)``, padded with ``-1``.

Staged views: R-CNN's ``model.staged`` is the crop CNN (``stem -> stages -> head``, the head giving the
``hidden``-wide feature vector of a warped crop ``(P, in_chans, crop, crop)``); Fast R-CNN's ``model.staged`` is the
backbone's stem and first ``num_stages`` stages with an identity head (the feature map the RoIs are pooled from).

Example:
    >>> import torch
    >>> net = rcnn(num_classes=10, in_chans=1).eval()
    >>> net(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 20, 6])
    >>> target = torch.tensor([[[3.0, 10.0, 12.0, 26.0, 28.0]], [[5.0, 30.0, 30.0, 48.0, 48.0]]])
    >>> sorted(fast_rcnn().train()(torch.rand(2, 1, 64, 64), target=target)["losses"])
    ['loss_box_reg', 'loss_classifier']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, box_iou, clip_boxes_to_image, roi_align

from ._detection import (
    FeatureBackbone,
    RoIPoolSingle,
    classwise_nms,
    decode_boxes,
    detections_to_padded,
    encode_boxes,
    targets_to_list,
    window_proposals,
)
from ._registry import register_model
from .resnet import StagedModel

__all__ = ["FastRCNN", "RCNN", "fast_rcnn", "rcnn"]


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class RCNN(nn.Module):
    """R-CNN (module docstring) with the crop CNN ``staged`` (a Staged network ending in a feature vector)."""

    def __init__(self, staged: StagedModel, *, num_classes: int, crop: int, context: float = 0.1,
                 proposal_sizes: Sequence[int] = (12, 16, 20, 24), proposal_stride: int = 2,
                 num_proposals: int = 32, fg_iou: float = 0.5, reg_iou: float = 0.6, samples_per_image: int = 32,
                 positive_fraction: float = 0.25, score_thresh: float = 0.01, nms_iou: float = 0.3,
                 max_detections: int = 20) -> None:
        super().__init__()
        self.staged = staged
        self.num_classes = num_classes
        self.cls_score = nn.Linear(staged.num_features, num_classes + 1)
        self.bbox_pred = nn.Linear(staged.num_features, 4 * num_classes)
        self.crop, self.context = int(crop), float(context)
        self.proposal_kw = dict(sizes=tuple(proposal_sizes), stride=int(proposal_stride), k=int(num_proposals))
        self.fg_iou, self.reg_iou = fg_iou, reg_iou
        self.samples_per_image, self.positive_fraction = samples_per_image, positive_fraction
        self.score_thresh, self.nms_iou, self.max_detections = score_thresh, nms_iou, max_detections

    def warp(self, images: Tensor, boxes: list[Tensor]) -> Tensor:
        """Crops ``(P, C, crop, crop)`` of ``boxes`` (each dilated by ``context`` of its size on every side)."""
        grown = []
        for b in boxes:
            w, h = (b[:, 2] - b[:, 0]) * self.context, (b[:, 3] - b[:, 1]) * self.context
            grown.append(torch.stack([b[:, 0] - w, b[:, 1] - h, b[:, 2] + w, b[:, 3] + h], -1))
        return roi_align(images, grown, (self.crop, self.crop), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def heads(self, images: Tensor, boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits ``(P, K + 1)`` and per-class deltas ``(P, K, 4)`` of the warped ``boxes``."""
        feats = self.staged(self.warp(images, boxes))
        return self.cls_score(feats), self.bbox_pred(feats).view(-1, self.num_classes, 4)

    def _sample(self, proposals: Tensor, gt: dict[str, Tensor]) -> tuple[Tensor, ...]:
        boxes = torch.cat([proposals, gt["boxes"]])
        if gt["boxes"].numel():
            iou, idx = box_iou(boxes, gt["boxes"]).max(1)
            labels = torch.where(iou >= self.fg_iou, gt["labels"][idx], torch.zeros_like(idx))
            matched = gt["boxes"][idx]
        else:
            iou = torch.zeros(len(boxes), device=boxes.device)
            labels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
            matched = boxes
        fg, bg = (labels > 0).nonzero().squeeze(1), (labels == 0).nonzero().squeeze(1)
        n_fg = min(len(fg), int(self.samples_per_image * self.positive_fraction))
        n_bg = min(len(bg), self.samples_per_image - n_fg)
        fg = fg[torch.randperm(len(fg), device=boxes.device)[:n_fg]]
        bg = bg[torch.randperm(len(bg), device=boxes.device)[:n_bg]]
        keep = torch.cat([fg, bg])
        return boxes[keep], labels[keep], matched[keep], iou[keep]

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor | dict[str, Any]:
        n, _, hgt, wid = x.shape
        proposals = window_proposals(x, **self.proposal_kw)  # (N, k, 4)
        if target is not None:
            samples = [self._sample(p, g) for p, g in zip(proposals, targets_to_list(target))]
            boxes = [s[0] for s in samples]
            labels, matched, iou = (torch.cat([s[i] for s in samples]) for i in (1, 2, 3))
            logits, deltas = self.heads(x, boxes)
            props = torch.cat(boxes)
            loss_cls = F.cross_entropy(logits, labels)
            reg = (labels > 0) & (iou >= self.reg_iou)
            if reg.any():
                d = deltas[reg, labels[reg] - 1]
                loss_box = F.smooth_l1_loss(d, encode_boxes(matched[reg], props[reg]), beta=1.0 / 9,
                                            reduction="sum") / labels.numel()
            else:
                loss_box = deltas.sum() * 0.0
            return {"losses": {"loss_classifier": loss_cls, "loss_box_reg": loss_box}, "out": None}
        logits, deltas = self.heads(x, list(proposals))
        probs = logits.softmax(-1)[:, 1:].reshape(n, -1, self.num_classes)  # (N, k, K)
        boxes = decode_boxes(deltas, proposals.reshape(-1, 1, 4)).reshape(n, -1, self.num_classes, 4)
        classes = torch.arange(self.num_classes, device=x.device).repeat(boxes.shape[1])
        dets = [classwise_nms(clip_boxes_to_image(boxes[i].reshape(-1, 4), (hgt, wid)), probs[i].reshape(-1),
                              classes, iou=self.nms_iou, max_detections=self.max_detections,
                              score_thresh=self.score_thresh) for i in range(n)]
        return detections_to_padded(dets, self.max_detections, label_offset=0)


class FastRCNN(nn.Module):
    """Fast R-CNN (module docstring): ``backbone`` feature map, external proposals, torchvision ``RoIHeads``."""

    def __init__(self, backbone: FeatureBackbone, *, num_classes: int, roi_pool: str = "pool", roi_size: int = 7,
                 hidden: int = 256, proposal_sizes: Sequence[int] = (12, 16, 20, 24), proposal_stride: int = 2,
                 num_proposals: int = 32, rois_per_image: int = 64, positive_fraction: float = 0.25,
                 score_thresh: float = 0.01, nms_iou: float = 0.5, max_detections: int = 20) -> None:
        super().__init__()
        self.backbone = backbone
        self.staged = backbone.staged
        self.num_classes = num_classes
        self.proposal_kw = dict(sizes=tuple(proposal_sizes), stride=int(proposal_stride), k=int(num_proposals))
        self.max_detections = max_detections
        self.roi_heads = RoIHeads(
            _pooler(roi_pool, roi_size, backbone.stride),
            TwoMLPHead(backbone.out_channels * roi_size**2, hidden),
            FastRCNNPredictor(hidden, num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=rois_per_image,
            positive_fraction=positive_fraction, bbox_reg_weights=None, score_thresh=score_thresh,
            nms_thresh=nms_iou, detections_per_img=max_detections,
        )

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor | dict[str, Any]:
        if self.training and target is None:
            raise ValueError("FastRCNN in train mode needs target (padded boxes); call .eval() to detect")
        feats = {"0": self.backbone(x)}
        proposals = list(window_proposals(x, **self.proposal_kw))
        shapes = [(x.shape[-2], x.shape[-1])] * x.shape[0]
        if target is not None and self.training:
            _, losses = self.roi_heads(feats, proposals, shapes, targets_to_list(target))
            return {"losses": losses, "out": None}
        dets, _ = self.roi_heads(feats, proposals, shapes)
        return detections_to_padded(dets, self.max_detections)


def _pooler(kind: str, size: int, stride: int) -> MultiScaleRoIAlign:
    if kind == "pool":
        return RoIPoolSingle(size, stride)
    if kind == "align":
        return MultiScaleRoIAlign(["0"], size, sampling_ratio=2)
    raise ValueError(f"roi_pool must be 'pool' (RoIPool, the paper's) or 'align' (RoIAlign), got {kind!r}")


_SMALL_BACKBONE = {"channels": (32, 64, 128, 256)}


@register_model(family="R-CNN", paper="Girshick et al. 2014", source="hand-written + torchvision.ops.roi_align",
                staged=False, min_input_size=32, small={}, small_input_size=64)
def rcnn(*, num_classes: int = 10, in_chans: int = 1, crop: int = 16, width: int = 32, hidden: int = 256,
         **kwargs: Any) -> RCNN:
    """R-CNN (module docstring) with a small crop CNN for 64 px scenes: 3x3 convs ``width``, ``2 width``,
    ``4 width`` (BN, ReLU, 2x2 max-pools) on ``crop x crop`` warped proposals, global average pool, FC ``hidden``.
    ``kwargs``: :class:`RCNN`'s options (``context``, ``proposal_sizes``, ``num_proposals``, ``nms_iou``, ...).

    Example:
        >>> net = rcnn(width=8, hidden=16)
        >>> net.staged.channels, net.staged.strides
        ([16, 32], [4, 4])
    """
    stem = nn.Sequential(_conv(in_chans, width), nn.MaxPool2d(2))
    stages = [nn.Sequential(_conv(width, 2 * width), nn.MaxPool2d(2)), _conv(2 * width, 4 * width)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, hidden), nn.ReLU(inplace=True))
    staged = StagedModel(stem, stages, head, channels=[2 * width, 4 * width], strides=[4, 4],
                         input_size=(in_chans, crop, crop), num_classes=hidden, num_features=hidden)
    return RCNN(staged, num_classes=num_classes, crop=crop, **kwargs)


@register_model(family="R-CNN", paper="Girshick 2015", source="torchvision RoIHeads + baselines backbone",
                staged=False, min_input_size=32, small={}, small_input_size=64)
def fast_rcnn(*, num_classes: int = 10, in_chans: int = 1, backbone: str = "resnet18",
              backbone_args: dict[str, Any] | None = None, num_stages: int = 1, **kwargs: Any) -> FastRCNN:
    """Fast R-CNN (module docstring) on the first ``num_stages`` stages of the registered Staged model ``backbone``
    (default: ``resnet18`` with widths 32..256, its ImageNet stem and ``layer1``: stride 4, 32 channels; cheap on a
    CPU at 64 px). ``kwargs``:
    :class:`FastRCNN`'s options (``roi_pool``, ``hidden``, ``num_proposals``, ``rois_per_image``, ...).

    Example:
        >>> net = fast_rcnn()
        >>> net.backbone.stride, net.backbone.out_channels
        (4, 32)
    """
    args = dict(_SMALL_BACKBONE if backbone_args is None and backbone == "resnet18" else backbone_args or {})
    feat = FeatureBackbone(backbone, in_chans=in_chans, num_stages=num_stages, **args)
    return FastRCNN(feat, num_classes=num_classes, **kwargs)
