"""SegNet (Badrinarayanan, Kendall and Cipolla 2017): a VGG-16 encoder and a decoder that un-pools by the encoder's
max-pooling indices.

Reference: V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A deep convolutional encoder-decoder architecture
for image segmentation", IEEE TPAMI 39(12), 2017 (arXiv:1511.00561), section 3 and Fig. 2-3. Written from the
paper; no library has it (reference/architectures.md, the SegNet row: 29,486,988 parameters at 12 classes).

Algorithm (shapes for a ``(B, C, H, W)`` input, ``w`` = width multiplier):

* **encoder**: the 13 convolutions of VGG-16 with batch normalisation (torchvision's ``make_layers`` on its
  configuration ``D``, i.e. torchvision's own layers), in five blocks of 2, 2, 3, 3, 3 ``conv 3x3 - BN - ReLU``
  with 64, 128, 256, 512, 512 (times ``w``) channels, each block ending in a 2x2 max-pool of stride 2 whose
  arg-max **indices** are kept; after block ``i`` the map is ``(B, c_i, H / 2^i, W / 2^i)``;
* **decoder**: five blocks mirroring the encoder's: block ``i`` (from the deepest) first *un-pools*
  (``max_unpool2d``: each value goes back to the position its encoder pool took it from, zeros elsewhere: the
  paper's "pooling indices" upsampling, no learned parameters), then applies as many ``conv 3x3 - BN - ReLU`` as
  its encoder block, the last one reducing to the next shallower width (the top block stays at 64 w);
* **classifier**: a 3x3 convolution to ``num_classes`` logits ``(B, K, H, W)`` (the paper's softmax layer
  reads these; the loss is the task's per-pixel cross-entropy).

Parameters: 29,486,988 at 12 classes (CamVid), 29,492,181 at 21 (both match the reference count).

``model.encoder`` is the **Staged view** of the encoder (DESIGN.md section 3.1): a
:class:`~baselines.resnet.StagedModel` with ``stem`` an input check, ``stages`` the five blocks (each ending with
its ``nn.MaxPool2d``; strides 2, 4, 8, 16, 32; the first ``levels`` of them), and a parameter-free ``head`` (global
average pool; ``num_classes`` = the last width) so that feedback can be attached to the encoder later.
:meth:`SegNet.forward` runs exactly these stage modules, calling each block's pool with ``return_indices=True`` (same
values), so a feedback kind that wraps ``model.encoder`` sees the same features the decoder uses.

Deviations from the paper: the paper trains with median-frequency class balancing and initialises the encoder from
ImageNet VGG-16; here initialisation is torchvision's VGG scheme (Kaiming-normal) and no class weights. Odd
spatial sizes are handled by ``max_unpool2d``'s ``output_size`` (any input of at least 32 px works).

``levels`` (default 5, the paper's) keeps only the first ``levels`` encoder blocks and their mirrored decoder blocks.
The small CPU preset (``model.preset: small``: ``width=0.25, img_size=32, levels=3``, 221,911 parameters at 7
classes) uses three, a deviation for 32 px inputs: the paper's five pools take a 360x480 CamVid image to an 11x15
map, but a 32 px image to 1x1, so everything the decoder knows about which object is where must pass through one
``c_5``-vector per image plus the pooling indices (which carry positions, not classes). On the shapes scenes
(experiments/configs/segment_shapes.yaml, 5 epochs) five levels at width 0.25 under-fit (training loss stuck near
0.40, test mIoU 0.169, chance 0.117; four levels: 0.179; width 0.5: 0.179; lr 0.001 instead of 0.003: 0.152), three
levels (a 4x4 map, receptive field still over 32 px) reach training loss 0.21 and test mIoU 0.407 (two levels: 0.434,
but only 4 of VGG-16's 13 encoder convolutions; three keep 7).

Example:
    >>> import torch
    >>> net = segnet(num_classes=4, width=0.125, img_size=32)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 4, 32, 32])
    >>> net.encoder.channels, net.encoder.strides
    ([8, 16, 32, 64, 64], [2, 4, 8, 16, 32])
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.vgg import make_layers

from ._registry import register_model
from .alexnet import MinInputSize, check_img_size, scaled
from .resnet import StagedModel
from .vgg import _init_like_torchvision_

__all__ = ["SegNet", "segnet"]

_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # VGG-16 (configuration D): width, convolutions
SEGNET_MIN_SIZE = 32


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SegNet(nn.Module):
    """SegNet: ``encoder`` (Staged, VGG-16-BN), ``decoder`` (``levels`` un-pool + conv blocks, 5 in the paper),
    ``classifier`` (3x3 conv).

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes, H, W)``; ``H, W >= 2 ** levels`` (32 for the paper's 5).
    """

    def __init__(self, encoder: StagedModel, decoder: list[nn.Module], classifier: nn.Conv2d) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = nn.ModuleList(decoder)
        self.classifier = classifier
        self.num_classes = classifier.out_channels
        self.in_chans = encoder.in_chans
        self.input_size = encoder.input_size

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[tuple[int, int]]]:
        """The encoder's output plus every block's pooling indices and pre-pool size (shallowest first)."""
        h = self.encoder.stem(x)
        indices, sizes = [], []
        for stage in self.encoder.stages:
            *body, pool = stage
            for m in body:
                h = m(h)
            sizes.append((int(h.shape[-2]), int(h.shape[-1])))
            h, idx = F.max_pool2d(h, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                  ceil_mode=pool.ceil_mode, return_indices=True)
            indices.append(idx)
        return h, indices, sizes

    def forward(self, x: Tensor) -> Tensor:
        h, indices, sizes = self.encode(x)
        for block, idx, size in zip(self.decoder, reversed(indices), reversed(sizes)):
            h = F.max_unpool2d(h, idx, kernel_size=2, stride=2, output_size=size)
            h = block(h)
        return self.classifier(h)


@register_model(family="SegNet", source="hand-written (paper); encoder: torchvision make_layers (VGG-16-BN)",
                paper="Badrinarayanan et al. 2017", min_input_size=SEGNET_MIN_SIZE,
                small={"width": 0.25, "img_size": 32, "levels": 3}, small_input_size=32, staged=False)
def segnet(*, num_classes: int = 12, in_chans: int = 3, width: float = 1.0, img_size: int = 224,
           levels: int = 5) -> SegNet:
    """SegNet with a VGG-16-BN encoder; 29,486,988 parameters at 12 classes (module docstring).

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes, H, W)`` for ``H, W >= 2 ** levels`` (32 px at the paper's
    five); the encoder's stage ``i < levels`` output has stride ``2 ** (i + 1)``.

    Args:
        num_classes: output classes per pixel (background included).
        in_chans: input channels.
        width: multiplies every width (``0.25``: 16 ... 128 channels, the CPU "small" variant; at ``0.125`` the
            network tends to get stuck predicting the class prior on the shapes scenes with five levels).
        img_size: the nominal square input size recorded in ``input_size`` (at least ``2 ** levels`` px).
        levels: encoder (and decoder) blocks kept, the first ``levels`` of VGG-16's five (``5``: the paper's).
            Fewer is a deviation for small inputs: at 32 px the paper's five pools end on a 1x1 map.

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     sum(p.numel() for p in segnet().parameters())
        29486988
        >>> net = segnet(num_classes=7, width=0.25, img_size=32, levels=3)  # the small preset
        >>> net.encoder.channels, net.encoder.strides, len(net.decoder)
        ([16, 32, 64], [2, 4, 8], 3)
        >>> net(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 7, 32, 32])
    """
    if not 1 <= int(levels) <= len(_BLOCKS):
        raise ValueError(f"SegNet: levels must be between 1 and {len(_BLOCKS)}, got {levels}")
    blocks = _BLOCKS[:int(levels)]
    min_size = 2 ** len(blocks)
    img_size = check_img_size(img_size, min_size, "SegNet")
    widths = [scaled(c, width) for c, _ in blocks]
    cfg: list = []
    for w, (_, n) in zip(widths, blocks):
        cfg += [w] * n + ["M"]
    features = make_layers(cfg, batch_norm=True)
    if in_chans != 3:
        features[0] = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1)
    ends = [i + 1 for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    stages = [features[a:b] for a, b in zip([0] + ends[:-1], ends)]
    encoder = StagedModel(
        MinInputSize(min_size, "SegNet"), stages, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
        channels=widths, strides=[2 ** (i + 1) for i in range(len(blocks))],
        input_size=(in_chans, img_size, img_size),
        num_classes=widths[-1], num_features=widths[-1])
    decoder = []
    for i in reversed(range(len(blocks))):
        w, n = widths[i], blocks[i][1]
        out = widths[i - 1] if i > 0 else widths[0]
        layers: list[nn.Module] = []
        for j in range(n):
            layers += _conv_bn_relu(w, out if j == n - 1 else w)
        decoder.append(nn.Sequential(*layers))
    net = SegNet(encoder, decoder, nn.Conv2d(widths[0], num_classes, 3, padding=1))
    _init_like_torchvision_(net)
    return net
