"""PixelNet (Bansal, Chen, Russell, Gupta and Ramanan 2017): hypercolumn features and an MLP per pixel, trained on a
sparse random sample of pixels.

Reference: A. Bansal, X. Chen, B. Russell, A. Gupta, D. Ramanan, "PixelNet: Representation of the pixels, by the
pixels, and for the pixels", arXiv:1702.06506, 2017, sections 3-4 (hypercolumns, sparse sampling, MLP). Written
from the paper; no library has it (reference/architectures.md, the PixelNet row).

Algorithm, for an image ``(B, C, H, W)``:

1. a VGG-16 trunk (torchvision's ``make_layers``, configuration ``D``): five blocks, the ``i``-th at stride
   ``2^i`` (``i = 0..4``; the pools *open* blocks 1-4) with 64, 128, 256, 512, 512 (times ``width``) channels; the
   taps are the block outputs conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 and, with ``fc_taps``, fc7 (pool5, then
   fc6 as a 7x7 convolution with padding 3 and fc7 as a 1x1 convolution, 4096 wide, ReLU);
2. the **hypercolumn** of pixel ``p = (x, y)``: every tap bilinearly interpolated at ``p``'s centre and
   concatenated: ``h(p) = [f_1(p), ..., f_T(p)]`` (1,472-d conv-only, 5,568-d with fc7 at full width);
3. an **MLP** per pixel (1x1 convolutions): ``D -> hidden -> hidden -> num_classes`` with ReLU (and dropout) between
   (the paper's 4096-4096-K);
4. **sparse sampling** while training: the MLP runs only at ``num_samples`` random pixels per image (uniform, with
   replacement; the paper samples 2,000), which decorrelates the pixels of a batch and makes training cheap.

How the loss sees only the sampled pixels (docs/tasks.md section 5): ``forward(x, target=y)`` in training mode with
``num_samples > 0`` draws the pixels (``torch.randint``, seeded by the runner), samples the taps at them with
``grid_sample`` (the same interpolation as step 2), applies the MLP and returns ``{"losses": {"ce": loss}, "out":
None}`` with ``loss`` the cross-entropy over the sampled pixels whose target is not ``255`` / ``-100`` (zero if none
is). In eval mode
(or without ``target``, or with ``num_samples=0``) it returns dense logits ``(B, K, H, W)`` for the task to score.
:meth:`PixelNet.sample_logits` gives the sampled logits and targets themselves ``(B, K, S)``, ``(B, S)``.

Parameters: 173,938,517 (VGG-16 + fc6/fc7 + MLP 4096-4096-21, 5,568-d hypercolumn) and 37,615,445 without the fc
taps (1,472-d), matching the reference counts.

``model.encoder`` is the **Staged view** of the trunk (DESIGN.md section 3.1): a
:class:`~baselines.resnet.StagedModel` whose ``stages`` are the five blocks (their outputs are the conv taps;
strides 1, 2, 4, 8, 16) with a parameter-free ``head`` (global average pool).

Deviations from the paper: the paper adds batch normalisation to the hypercolumn taps' inputs of the MLP only in
some experiments and initialises from ImageNet; here taps are used as they are (``batch_norm=True`` builds the
VGG-16-BN trunk) and initialisation is torchvision's VGG scheme. fc6's padding 3 keeps a map at any input size.

Example:
    >>> import torch
    >>> net = pixelnet(num_classes=4, width=0.125, hidden=32, fc_taps=False, num_samples=16)
    >>> net.eval()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 4, 32, 32])
    >>> out = net.train()(torch.zeros(2, 3, 32, 32), target=torch.zeros(2, 32, 32, dtype=torch.long))
    >>> sorted(out["losses"]), out["out"]
    (['ce'], None)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.vgg import make_layers

from ._registry import register_model
from .alexnet import scaled
from .resnet import StagedModel
from .vgg import _init_like_torchvision_

__all__ = ["PixelNet", "pixelnet"]

_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
IGNORE_INDICES = (255, -100)


class PixelNet(nn.Module):
    """Hypercolumn + per-pixel MLP (module docstring). Shapes: ``(B, C, H, W) -> (B, K, H, W)`` in eval."""

    def __init__(self, encoder: StagedModel, fc: nn.Module | None, mlp: nn.Sequential, *, num_samples: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc = fc
        self.mlp = mlp
        self.num_samples = int(num_samples)
        self.num_classes = mlp[-1].out_channels
        self.in_chans = encoder.in_chans
        self.input_size = encoder.input_size

    def taps(self, x: Tensor) -> list[Tensor]:
        """The feature maps the hypercolumn reads: every stage output, then fc7 when present."""
        h = self.encoder.stem(x)
        out = []
        for stage in self.encoder.stages:
            h = stage(h)
            out.append(h)
        if self.fc is not None:
            out.append(self.fc(h))
        return out

    def dense_logits(self, x: Tensor) -> Tensor:
        """``(B, K, H, W)``: the MLP at every pixel (bilinear up-sampling of every tap to the input size)."""
        size = x.shape[-2:]
        feats = [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                 for f in self.taps(x)]
        return self.mlp(torch.cat(feats, 1))

    def sample_logits(self, x: Tensor, target: Tensor, num_samples: int) -> tuple[Tensor, Tensor, Tensor]:
        """Logits ``(B, K, S)`` and targets ``(B, S)`` at ``S`` random pixels per image, and their ``(B, S, 2)``
        integer ``(x, y)`` positions."""
        b, _, h, w = x.shape
        pos = torch.stack([torch.randint(0, w, (b, num_samples), device=x.device),
                           torch.randint(0, h, (b, num_samples), device=x.device)], -1)
        # pixel centres in grid_sample's normalised coordinates (align_corners=False): the interpolation of step 2
        grid = torch.stack([(2 * pos[..., 0] + 1) / w - 1, (2 * pos[..., 1] + 1) / h - 1], -1).to(x.dtype)
        feats = [F.grid_sample(f, grid[:, :, None], mode="bilinear", padding_mode="border", align_corners=False)
                 for f in self.taps(x)]  # each (B, C_t, S, 1)
        logits = self.mlp(torch.cat(feats, 1))[..., 0]
        picked = target[torch.arange(b, device=x.device)[:, None], pos[..., 1], pos[..., 0]]
        return logits, picked, pos

    def forward(self, x: Tensor, target: Tensor | None = None) -> Any:
        if target is None or not self.training or self.num_samples <= 0:
            return self.dense_logits(x)
        logits, picked, _ = self.sample_logits(x, target, self.num_samples)
        picked = picked.long()
        for v in IGNORE_INDICES:
            picked = picked.masked_fill(picked == v, -100)
        if bool((picked == -100).all()):  # no scored pixel sampled: a zero loss that keeps the graph
            return {"losses": {"ce": logits.sum() * 0.0}, "out": None}
        loss = F.cross_entropy(logits.float(), picked, ignore_index=-100)
        return {"losses": {"ce": loss}, "out": None}


@register_model(family="PixelNet", source="hand-written (paper); trunk: torchvision make_layers (VGG-16)",
                paper="Bansal et al. 2017", min_input_size=16,
                small={"width": 0.125, "hidden": 128, "fc_taps": False, "img_size": 32}, small_input_size=32,
                staged=False)
def pixelnet(*, num_classes: int = 21, in_chans: int = 3, width: float = 1.0, hidden: int = 4096,
             fc_taps: bool = True, batch_norm: bool = False, num_samples: int = 2000, drop_rate: float = 0.5,
             img_size: int = 224) -> PixelNet:
    """PixelNet on a VGG-16 trunk; 173,938,517 parameters at 21 classes (37,615,445 with ``fc_taps=False``).

    Args:
        num_classes: classes per pixel.
        in_chans: input channels.
        width: multiplies the trunk's widths and fc6/fc7's 4096.
        hidden: the MLP's two hidden widths (the paper: 4096).
        fc_taps: include fc6/fc7 and the fc7 tap.
        batch_norm: a VGG-16-BN trunk.
        num_samples: pixels sampled per image in training (0: dense training).
        drop_rate: dropout between the MLP's layers (and after fc6/fc7).
        img_size: the nominal input size recorded in ``input_size``.

    Example:
        >>> with torch.device("meta"):
        ...     sum(p.numel() for p in pixelnet().parameters()), sum(p.numel() for p in pixelnet(fc_taps=False).parameters())
        (173938517, 37615445)
    """
    widths = [scaled(c, width) for c, _ in _BLOCKS]
    cfg: list = []
    for i, (w, (_, n)) in enumerate(zip(widths, _BLOCKS)):
        cfg += (["M"] if i else []) + [w] * n
    features = make_layers(cfg, batch_norm=batch_norm)
    if in_chans != 3:
        features[0] = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1)
    starts = [0] + [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    stages = [features[a:b] for a, b in zip(starts, starts[1:] + [len(features)])]
    encoder = StagedModel(nn.Identity(), stages, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
                          channels=widths, strides=[1, 2, 4, 8, 16], input_size=(in_chans, img_size, img_size),
                          num_classes=widths[-1], num_features=widths[-1])
    dim = sum(widths)
    fc = None
    if fc_taps:
        f = scaled(4096, width)
        fc = nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True), nn.Conv2d(widths[-1], f, 7, padding=3),
                           nn.ReLU(inplace=True), nn.Dropout(drop_rate), nn.Conv2d(f, f, 1), nn.ReLU(inplace=True))
        dim += f
    mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
                        nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
                        nn.Conv2d(hidden, num_classes, 1))
    net = PixelNet(encoder, fc, mlp, num_samples=num_samples)
    _init_like_torchvision_(net)
    return net
