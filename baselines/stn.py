"""Spatial transformer networks (Jaderberg, Simonyan, Zisserman and Kavukcuoglu 2015), with the Staged view.

Reference: M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015.
Written from the paper's equations (section 3); the sampling is ``F.affine_grid`` + ``F.grid_sample``.

A spatial transformer has three parts:

1. a **localisation network** ``f_loc`` regresses the 6 parameters of an affine map from the input itself,
   ``theta = f_loc(U)`` (B, 2, 3); its last layer starts at zero weights and the identity bias, so at
   initialisation the transformer passes its input through unchanged (the paper's identity initialisation);
2. a **grid generator** maps every output pixel's normalised coordinates ``(x^t_i, y^t_i)`` in ``[-1, 1]`` to a
   source point, ``(x^s_i, y^s_i)^T = theta (x^t_i, y^t_i, 1)^T`` (eq. 1, ``F.affine_grid``);
3. a **sampler** reads the input there with bilinear interpolation (eq. 5, ``F.grid_sample``, zero padding
   outside the image), which is differentiable in both the input and ``theta``, so the localisation network is
   trained by the classification loss alone.

:class:`SpatialTransformer` is the module (input and output ``(B, C, H, W)``, output size ``out_size`` or the
input's). ``stn_classifier`` puts one in front of a small CNN as its **stem**; the CNN's three conv blocks are the
stages:

=====  ==========================================  ==============  ========  =======
name   layer                                       output (32 px)  channels  strides
=====  ==========================================  ==============  ========  =======
stem   spatial transformer (or identity: stn=0)    (C, 32, 32)
1      conv 3x3 (pad 1), BN, ReLU, max-pool 2      (w, 16, 16)     w         2
2      conv 3x3 (pad 1), BN, ReLU, max-pool 2      (2w, 8, 8)      2w        4
3      conv 3x3 (pad 1), BN, ReLU, max-pool 2      (4w, 4, 4)      4w        8
head   global average pool, linear                 (K,)
=====  ==========================================  ==============  ========  =======

With ``stn=False`` the stem is an identity and the network is the plain CNN, the paper's "CNN" baseline.

Localisation network (deviation: the paper uses a 2-layer FCN or CNN of its own per experiment; this one is a
small CNN that works at any input size): max-pool 2, conv 5x5 (8), ReLU, max-pool 2, conv 5x5 (16), ReLU, adaptive
average pool to 3x3, linear 144 -> 32, ReLU, linear 32 -> 6 (zero weights, bias ``(1, 0, 0, 0, 1, 0)``).
Deviation: no restriction of ``theta`` to a sub-family (attention, similarity): the full affine map is learned.

Shapes: ``(B, C, H, W)`` -> ``(B, num_classes)``; ``SpatialTransformer.localise(x)`` -> ``theta`` ``(B, 2, 3)``.

Example:
    >>> import torch
    >>> stn = SpatialTransformer(in_chans=1)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> stn.localise(x).shape, torch.allclose(stn(x), x, atol=1e-5)   # identity at initialisation
    (torch.Size([2, 2, 3]), True)
    >>> net = stn_classifier(num_classes=10, in_chans=1)
    >>> net(torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._registry import register_model

__all__ = ["IDENTITY_THETA", "STNClassifier", "SpatialTransformer", "stn_classifier"]

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # row-major 2x3 identity affine map


class SpatialTransformer(nn.Module):
    """Localisation network -> affine ``theta`` -> ``affine_grid`` -> bilinear ``grid_sample`` (module docstring).

    Args:
        in_chans: input channels C.
        out_size: ``(H', W')`` of the output (``None``: the input's size).
        loc_hidden: width of the localisation network's hidden linear layer.

    Shapes: ``(B, C, H, W)`` -> ``(B, C, H', W')``; ``localise``: ``(B, C, H, W)`` -> ``(B, 2, 3)``.
    """

    def __init__(self, *, in_chans: int = 1, out_size: tuple[int, int] | None = None, loc_hidden: int = 32) -> None:
        super().__init__()
        if int(in_chans) < 1 or int(loc_hidden) < 1:
            raise ValueError(f"in_chans and loc_hidden must be >= 1, got {in_chans}, {loc_hidden}")
        self.in_chans = int(in_chans)
        self.out_size = None if out_size is None else (int(out_size[0]), int(out_size[1]))
        self.features = nn.Sequential(
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(self.in_chans, 8, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(3),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(16 * 9, int(loc_hidden)), nn.ReLU(inplace=True))
        self.theta = nn.Linear(int(loc_hidden), 6)
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor(IDENTITY_THETA))

    def localise(self, x: Tensor) -> Tensor:
        """The affine maps ``theta`` (B, 2, 3) from output to input coordinates in ``[-1, 1]``."""
        return self.theta(self.fc(self.features(x))).view(-1, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"SpatialTransformer expects (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        theta = self.localise(x)
        h, w = self.out_size or x.shape[-2:]
        grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, out_size={self.out_size}"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class _Head(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class STNClassifier(nn.Module):
    """A spatial transformer (the stem; an identity with ``stn=False``) in front of a 3-block CNN (module docstring).

    Attributes: ``stem``, ``stages`` (3 conv blocks), ``head``, ``channels``, ``strides``, ``input_size``,
    ``num_classes``; ``forward`` is exactly ``head(stages[2](stages[1](stages[0](stem(x)))))``.
    """

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, width: int = 16, stn: bool = True,
                 loc_hidden: int = 32, image_size: int = 32) -> None:
        super().__init__()
        if int(width) < 1 or int(num_classes) < 1 or int(image_size) < 8:
            raise ValueError(f"need width >= 1, num_classes >= 1, image_size >= 8; got {width}, {num_classes}, "
                             f"{image_size}")
        self.num_classes = int(num_classes)
        self.input_size = (int(in_chans), int(image_size), int(image_size))
        self.stem: nn.Module = SpatialTransformer(in_chans=in_chans, loc_hidden=loc_hidden) if stn else nn.Identity()
        w = int(width)
        self.channels = [w, 2 * w, 4 * w]
        self.strides = [2, 4, 8]
        self.stages = nn.ModuleList([_block(int(in_chans), w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.head = _Head(4 * w, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)


@register_model(family="STN", paper="Jaderberg et al. 2015", source="hand-written (paper)", min_input_size=8)
def stn_classifier(*, num_classes: int = 10, in_chans: int = 1, width: int = 16, stn: bool = True,
                   loc_hidden: int = 32, image_size: int = 32) -> STNClassifier:
    """A spatial transformer in front of a small 3-block CNN (``stn=False``: the CNN alone)."""
    return STNClassifier(num_classes=num_classes, in_chans=in_chans, width=width, stn=stn, loc_hidden=loc_hidden,
                         image_size=image_size)
