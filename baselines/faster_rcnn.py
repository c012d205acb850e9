"""Faster R-CNN (Ren, He, Girshick, Sun 2015, "Faster R-CNN: towards real-time object detection with region
proposal networks"): torchvision's ``FasterRCNN`` on one of this project's Staged backbones.

A region proposal network (a 3x3 conv and two 1x1 convs: objectness and box deltas for ``A`` anchors per feature-map
position) slides over the backbone's feature map; its top proposals (after NMS) are RoI-pooled from the same map
and classified by the Fast R-CNN head (two FC layers, softmax over ``K + 1`` classes, per-class box regression).
Both stages are trained jointly (the paper's "approximate joint training"): losses ``loss_objectness``,
``loss_rpn_box_reg`` (RPN) and ``loss_classifier``, ``loss_box_reg`` (head). Everything but the backbone is
torchvision's (``FasterRCNN``, ``AnchorGenerator``, ``RPNHead``, ``TwoMLPHead``, ``FastRCNNPredictor``).

- :func:`faster_rcnn_small`: ``resnet18`` (widths 32..256) ImageNet stem and ``layer1`` (stride 4, 32 channels)
  as a single-map backbone (``backbone``, ``backbone_args``, ``num_stages`` pick another Staged model / depth); anchors of 12, 16, 24 px with aspect ratios 0.5, 1, 2 (9 per position); RoIPool 7x7
  (``roi_pool="pool"``, the paper's; ``"align"`` for RoIAlign); FC 256; images kept at their size (torchvision's
  transform with ``min_size = max_size = image_size``, mean 0 and std 1, i.e. no normalisation).
- :func:`faster_rcnn_vgg16`: the paper's VGG-16 model for PASCAL VOC: VGG-16 ``conv5_3`` (stride 16, torchvision's
  VGG-16 features without the last max-pool), 9 anchors (128, 256, 512 px x ratios 0.5, 1, 2), RoIPool 7x7, fc6/fc7
  4096, 21 classes: 137,073,622 parameters (RPN 2,382,893), as reference/architectures.md. No ImageNet weights.

Contract (docs/tasks.md section 5): ``forward(x, target=None)``; while training, ``target`` is the padded boxes
``(N, M, 5)`` rows ``(class, x0, y0, x1, y1)``, converted to torchvision's list of ``{"boxes", "labels"}`` dicts
(labels ``class + 1``), and the model returns ``{"losses": {...}, "out": None}``; in eval mode it returns
detections ``(N, max_detections, 6)`` rows ``(x0, y0, x1, y1, score, class)``, padded with ``-1``.

Staged view: ``model.staged`` is the backbone (stem and the first ``num_stages`` stages of the Staged model, identity
head: the feature map the RPN and the RoI head read); ``model.detector`` is the torchvision model.

Example:
    >>> import torch
    >>> net = faster_rcnn_small().eval()
    >>> net(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 20, 6])
    >>> target = torch.tensor([[[3.0, 10.0, 12.0, 26.0, 28.0]], [[5.0, 30.0, 30.0, 48.0, 48.0]]])
    >>> sorted(net.train()(torch.rand(2, 1, 64, 64), target=target)["losses"])
    ['loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn as nn
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from ._detection import FeatureBackbone, detections_to_padded, targets_to_list
from ._registry import register_model
from .rcnn import _pooler

__all__ = ["FasterRCNNDetector", "faster_rcnn_small", "faster_rcnn_vgg16"]

_PAPER = "Ren et al. 2015"


class FasterRCNNDetector(nn.Module):
    """torchvision's ``FasterRCNN`` with the padded-tensor contract (module docstring)."""

    def __init__(self, backbone: nn.Module, *, staged: nn.Module, num_classes: int, in_chans: int, image_size: int,
                 anchor_sizes: Sequence[int], aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 roi_pool: str = "pool", roi_size: int = 7, hidden: int = 256, stride: int,
                 max_detections: int = 20, **kwargs: Any) -> None:
        super().__init__()
        self.staged = staged
        self.num_classes = num_classes
        self.max_detections = max_detections
        channels = int(backbone.out_channels)
        self.detector = FasterRCNN(
            backbone, num_classes=None, min_size=image_size, max_size=image_size,
            image_mean=[0.0] * in_chans, image_std=[1.0] * in_chans,
            rpn_anchor_generator=AnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),)),
            box_roi_pool=_pooler(roi_pool, roi_size, stride),
            box_head=TwoMLPHead(channels * roi_size**2, hidden),
            box_predictor=FastRCNNPredictor(hidden, num_classes + 1),
            box_detections_per_img=max_detections, **kwargs,
        )

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor | dict[str, Any]:
        if self.training and target is None:
            raise ValueError("Faster R-CNN in train mode needs target (padded boxes); call .eval() to detect")
        if self.training:
            return {"losses": self.detector(list(x), targets_to_list(target)), "out": None}
        return detections_to_padded(self.detector(list(x)), self.max_detections)


_SMALL_DEFAULTS = dict(
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64, box_batch_size_per_image=64, box_score_thresh=0.01,
)


@register_model(family="Faster R-CNN", paper=_PAPER, source="torchvision FasterRCNN + baselines resnet18 (stem + layer1)",
                staged=False, min_input_size=32, small={}, small_input_size=64)
def faster_rcnn_small(*, num_classes: int = 10, in_chans: int = 1, image_size: int = 64,
                      backbone: str = "resnet18", backbone_args: dict[str, Any] | None = None,
                      num_stages: int = 1, anchor_sizes: Sequence[int] = (12, 16, 24), **kwargs: Any
                      ) -> FasterRCNNDetector:
    """Faster R-CNN for 64 px scenes (module docstring). ``kwargs``: ``aspect_ratios``, ``roi_pool``, ``hidden``,
    ``max_detections`` and any torchvision ``FasterRCNN`` option (``rpn_*``, ``box_*``; small-scene defaults:
    300/100 RPN proposals before/after NMS in training, 150/50 in eval, 64 anchors and 64 RoIs sampled per image,
    score threshold 0.01).

    Example:
        >>> net = faster_rcnn_small()
        >>> net.staged.channels, net.staged.strides
        ([32], [4])
    """
    args = dict({"channels": (32, 64, 128, 256)} if backbone_args is None and backbone == "resnet18"
                else backbone_args or {})
    feat = FeatureBackbone(backbone, in_chans=in_chans, num_stages=num_stages, **args)
    opts = dict(_SMALL_DEFAULTS, **kwargs)
    return FasterRCNNDetector(feat, staged=feat.staged, num_classes=num_classes, in_chans=in_chans,
                              image_size=image_size, anchor_sizes=anchor_sizes, stride=feat.stride, **opts)


class _VGG16Conv5(nn.Module):
    """torchvision VGG-16 ``features`` up to ``conv5_3`` + ReLU (no last max-pool): stride 16, 512 channels."""

    out_channels = 512

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        from torchvision.models import vgg16

        features = vgg16(weights=None).features[:-1]
        if in_chans != 3:
            features[0] = nn.Conv2d(in_chans, 64, 3, padding=1)
        self.features = features

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_model(family="Faster R-CNN", paper=_PAPER, source="torchvision FasterRCNN + torchvision vgg16 conv5_3",
                staged=False, min_input_size=64, small={"num_classes": 3, "image_size": 64}, small_input_size=64,
                slow=True)
def faster_rcnn_vgg16(*, num_classes: int = 20, in_chans: int = 3, image_size: int = 600, **kwargs: Any
                      ) -> FasterRCNNDetector:
    """The paper's Faster R-CNN with VGG-16 (module docstring): 137,073,622 parameters at 20 classes (+ background).

    ``image_size`` is the side images are resized to (the paper rescales the shorter side to 600 px). The Staged
    view is the VGG-16 feature stack itself (``model.staged.features``; not split into stages here).

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     n = sum(p.numel() for p in faster_rcnn_vgg16().parameters())
        >>> n
        137073622
    """
    body = _VGG16Conv5(in_chans)
    kw = dict(hidden=4096, roi_size=7, roi_pool="pool", anchor_sizes=(128, 256, 512), max_detections=100)
    kw.update(kwargs)
    return FasterRCNNDetector(body, staged=body, num_classes=num_classes, in_chans=in_chans, image_size=image_size,
                              stride=16, **kw)
