"""Siamese networks: one shared Staged backbone embeds two images (Koch et al. 2015), and the contrastive loss.

References: G. Koch, R. Zemel, R. Salakhutdinov, "Siamese neural networks for one-shot image recognition", ICML
Deep Learning Workshop 2015, section 3.1 and equation 1; R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality reduction
by learning an invariant mapping", CVPR 2006, section 2, equation 4. Written from the papers (weight sharing is
calling one encoder on both inputs; reference/architectures.md section 9).

:class:`SiameseNet` wraps any registered Staged backbone ``G`` (built with ``num_classes = embed_dim``, so its
classifier is the embedding layer) and scores a pair by the weighted L1 distance of the embeddings (Koch's eq. 1):

.. math::

    h_k = \\sigma(G(x_k)), \\qquad s = \\sum_j \\alpha_j\\, |h_1^{(j)} - h_2^{(j)}| + b, \\qquad
    p(\\text{same}) = \\sigma(s)

The logits are ``(0, s)`` for the classes (0 = different, 1 = same), so the softmax gives ``p(same) = sigma(s)``
and the framework's ``classify`` task (cross-entropy) trains exactly Koch's binary cross-entropy. The input is the
pair stacked along channels, ``(B, 2C, H, W)`` (first image = channels ``[0, C)``), so data loaders and the runner
need no change.

Staged view: ``stem`` = :class:`PairStem` (splits the channels and stacks the two images along the batch:
``(B, 2C, H, W) -> G.stem((2B, C, H, W))``, rows ``[0, B)`` the first images, ``[B, 2B)`` the second), ``stages`` =
the backbone's stages (shared weights, run once on the ``2B`` batch), ``head`` = :class:`SiameseHead` (the
backbone's head, the embedding activation, the distance layer): ``(2B, ...) -> (B, 2)``. So every stage boundary is
one tensor, and a feedback kind sees (and sends top-down signals to) both images of every pair; ``channels`` and
``strides`` are the backbone's. :meth:`SiameseNet.embed` returns the two embeddings for the contrastive loss.

:func:`contrastive_loss` is Hadsell et al.'s loss with ``D = ||G(x_1) - G(x_2)||_2`` and margin ``m``:

.. math::

    L = \\tfrac12\\, y\\, D^2 + \\tfrac12\\, (1 - y)\\, \\max(0, m - D)^2

with ``y = 1`` for a *similar* pair, the framework's class 1 ("same"). (Hadsell et al. write ``Y = 0`` for similar
pairs: their ``(1 - Y)`` is this ``y``.)

Deviations: Koch's eq. 1 has no bias ``b``; without it identical embeddings always give ``p = 0.5`` and a net whose
weights ``alpha`` are all negative can never output "same", so the distance layer has a bias by default
(``distance_bias=False`` for the paper's form). The backbone is any registered model, not Koch's 105 px ConvNet.

Example:
    >>> import torch
    >>> net = siamese(backbone="lenet5_relu", embed_dim=16)
    >>> pair = torch.zeros(4, 2, 32, 32)  # four pairs of 1-channel 32 px images
    >>> net(pair).shape
    torch.Size([4, 2])
    >>> z1, z2 = net.embed(pair)
    >>> contrastive_loss(z1, z2, torch.ones(4)).item()  # identical pairs, labelled similar: zero loss
    0.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import create_model, register_model

__all__ = ["EMBED_ACTS", "PairStem", "SiameseHead", "SiameseNet", "contrastive_loss", "siamese"]

EMBED_ACTS = ("sigmoid", "none")


def contrastive_loss(z1: Tensor, z2: Tensor, same: Tensor, *, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Hadsell et al. 2006 (eq. 4): ``y D^2 / 2 + (1 - y) max(0, m - D)^2 / 2``, ``D = ||z1 - z2||_2``.

    Args:
        z1, z2: embeddings ``(B, D)`` of the two images of each pair.
        same: ``(B,)`` 1 for a similar pair, 0 for a dissimilar one (bool, int or float).
        margin: ``m > 0``: dissimilar pairs farther apart than ``m`` cost nothing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per pair).

    Example:
        >>> z1, z2 = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 2.0]])
        >>> contrastive_loss(z1, z2, torch.tensor([1, 0]), reduction="none")  # similar at 0.5; dissimilar at 2 > m
        tensor([0.1250, 0.0000])
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if same.shape != z1.shape[:1]:
        raise ValueError(f"same must be (B,) = ({z1.shape[0]},), got {tuple(same.shape)}")
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    y = same.to(z1.dtype)
    d2 = (z1 - z2).pow(2).sum(1)
    d = torch.where(d2 > 0, d2.clamp_min(1e-30).sqrt(), torch.zeros_like(d2))  # exact, and a finite gradient at 0
    loss = 0.5 * y * d2 + 0.5 * (1.0 - y) * torch.clamp(margin - d, min=0.0).pow(2)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class PairStem(nn.Module):
    """``(B, 2C, H, W) -> stem((2B, C, H, W))``: the two images of each pair stacked along the batch, then ``stem``."""

    def __init__(self, stem: nn.Module, image_chans: int) -> None:
        super().__init__()
        self.stem = stem
        self.image_chans = int(image_chans)

    def forward(self, x: Tensor) -> Tensor:
        c = self.image_chans
        if x.dim() < 2 or x.shape[1] != 2 * c:
            raise ValueError(
                f"a Siamese pair input is (B, 2 x {c}, H, W), the two images along channels; got shape {tuple(x.shape)}"
            )
        return self.stem(torch.cat([x[:, :c], x[:, c:]], dim=0))

    def extra_repr(self) -> str:
        return f"image_chans={self.image_chans}"


class SiameseHead(nn.Module):
    """The backbone's head (embedding), its activation, and Koch's weighted L1 distance: ``(2B, ...) -> (B, 2)``."""

    def __init__(self, head: nn.Module, embed_dim: int, *, embed_act: str = "sigmoid", distance_bias: bool = True):
        super().__init__()
        if embed_act not in EMBED_ACTS:
            raise ValueError(f"unknown embed_act {embed_act!r}; choose from: {', '.join(EMBED_ACTS)}")
        self.head = head
        self.act = nn.Sigmoid() if embed_act == "sigmoid" else nn.Identity()
        self.distance = nn.Linear(embed_dim, 1, bias=distance_bias)

    def embed(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The embeddings ``(B, D)`` of the first and the second images from the last stage output ``(2B, ...)``."""
        z = self.act(self.head(h))
        if z.shape[0] % 2:
            raise ValueError(f"the stage output must hold both images of every pair (an even batch), got {z.shape[0]}")
        z1, z2 = z.chunk(2, dim=0)
        return z1, z2

    def forward(self, h: Tensor) -> Tensor:
        z1, z2 = self.embed(h)
        s = self.distance((z1 - z2).abs())
        return torch.cat([torch.zeros_like(s), s], dim=1)


class SiameseNet(nn.Module):
    """Two inputs, one shared Staged backbone, Koch's L1-distance classifier; Staged itself (see module docstring).

    Args:
        backbone: a Staged model built with ``num_classes = embed_dim`` (its classifier is the embedding layer).
        embed_dim: the backbone's output width.
        embed_act: ``"sigmoid"`` (Koch et al.) or ``"none"``.
        distance_bias: a bias in the distance layer (default; Koch's eq. 1 has none).

    Attributes: ``stem``, ``stages``, ``head``, ``channels``, ``strides`` (the backbone's), ``input_size``
    ``(2C, H, W)``, ``in_chans`` (2C), ``num_classes`` (2), ``num_features`` (embed_dim), ``backbone``.
    Shapes: ``(B, 2C, H, W) -> (B, 2)`` logits (different, same).
    """

    def __init__(self, backbone: nn.Module, embed_dim: int, *, embed_act: str = "sigmoid", distance_bias: bool = True):
        super().__init__()
        missing = [a for a in ("stem", "stages", "head", "input_size") if not hasattr(backbone, a)]
        if missing:
            raise TypeError(
                f"the Siamese backbone must be Staged; {type(backbone).__name__} lacks {', '.join(missing)}"
            )
        c, h, w = backbone.input_size
        self.stem = PairStem(backbone.stem, c)
        self.stages = backbone.stages
        self.head = SiameseHead(backbone.head, embed_dim, embed_act=embed_act, distance_bias=distance_bias)
        self.channels = list(getattr(backbone, "channels", []))
        self.strides = list(getattr(backbone, "strides", []))
        self.input_size = (2 * int(c), int(h), int(w))
        self.in_chans = 2 * int(c)
        self.num_classes = 2
        self.num_features = int(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``head(stages[-1](...stages[0](stem(x))))``: ``(B, 2C, H, W) -> (B, 2)``."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two embeddings ``(B, embed_dim)`` of every pair (after ``embed_act``), for :func:`contrastive_loss`."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.head.embed(h)


@register_model(
    family="Siamese",
    source="hand-written (paper) around any registered backbone",
    paper="Koch et al. 2015; Hadsell et al. 2006",
    small={"num_classes": 2, "in_chans": 2, "embed_dim": 16},
    small_input_size=32,
)
def siamese(
    *,
    num_classes: int = 2,
    in_chans: int = 2,
    backbone: str = "lenet5_relu",
    embed_dim: int = 128,
    embed_act: str = "sigmoid",
    distance_bias: bool = True,
    backbone_args: dict[str, Any] | None = None,
) -> SiameseNet:
    """A Siamese pair classifier (Koch et al. 2015) on the registered ``backbone``; input ``(B, in_chans, H, W)``.

    Args:
        num_classes: must be 2 (different, same).
        in_chans: channels of the stacked pair, ``2 x`` the channels of one image (even).
        backbone: a registered model name; it is built with ``num_classes=embed_dim``, ``in_chans=in_chans // 2``.
        embed_dim: width of the embedding.
        embed_act: ``"sigmoid"`` (Koch et al.) or ``"none"``.
        distance_bias: bias of the L1-distance layer.
        backbone_args: further keyword arguments of the backbone (``channels``, ``width``, ...).
    """
    if num_classes != 2:
        raise ValueError(f"a Siamese pair classifier has 2 classes (different, same), got num_classes={num_classes}")
    if in_chans < 2 or in_chans % 2:
        raise ValueError(f"in_chans is the channels of the stacked pair and must be even, got {in_chans}")
    if backbone == "siamese":
        raise ValueError("the Siamese backbone cannot be 'siamese'")
    net = create_model(backbone, num_classes=embed_dim, in_chans=in_chans // 2, **(backbone_args or {}))
    return SiameseNet(net, embed_dim, embed_act=embed_act, distance_bias=distance_bias)
