"""A Vision Transformer (Dosovitskiy et al. 2021) for 32 px inputs from timm, Staged block by block.

Reference: A. Dosovitskiy et al., "An image is worth 16x16 words: Transformers for image recognition at scale",
ICLR 2021, section 3.1 and equations 1-4. The network is timm's ``VisionTransformer`` (``vision_transformer.py``),
never re-implemented here:

.. math::

    z_0 = [x_{cls};\\, x_p^1 E;\\, \\ldots;\\, x_p^N E] + E_{pos}, \\qquad
    z'_\\ell = \\mathrm{MSA}(\\mathrm{LN}(z_{\\ell-1})) + z_{\\ell-1}, \\qquad
    z_\\ell = \\mathrm{MLP}(\\mathrm{LN}(z'_\\ell)) + z'_\\ell, \\qquad
    y = \\mathrm{head}(\\mathrm{LN}(z_L^0))

``vit_tiny_patch4_32`` is ViT-Tiny (the DeiT-Ti widths: D = 192, 12 blocks, 3 heads, MLP 768) with 4x4 patches on
32x32 images: N = 64 patch tokens plus the class token, 5,362,762 parameters at 10 classes (the configuration
reference/architectures.md section 9 names for 32 px: ``vit_tiny_patch16_224(img_size=32, patch_size=4)``).

Staged view (:class:`StagedViT`, reusing timm's module objects and parameters):

- ``stem`` = :class:`ViTEmbed`: patch embedding, class (and register) tokens, position embedding, dropouts,
  ``norm_pre``: ``(B, C, H, W) -> (B, N + 1, D)``;
- ``stages`` = the transformer blocks, one stage each: ``(B, N + 1, D) -> (B, N + 1, D)``;
- ``head`` = :class:`ViTHead`: final LayerNorm, pooling (the class token by default), ``fc_norm``, dropout and
  the linear classifier: ``(B, N + 1, D) -> (B, num_classes)``.

Stage outputs are **tokens** ``(B, L, D)``, not maps: ``channels[i]`` is the token dimension D and
``strides[i]`` the patch size (the distance in input pixels between neighbouring patch tokens); ``num_tokens``
(L = prefix + patches), ``num_prefix_tokens`` and ``grid_size`` (patches per side) say how to read a token
sequence as a ``(D, H / p, W / p)`` map: drop the first ``num_prefix_tokens`` tokens and reshape the rest
row-major. ``output_fmt = "NLC"`` marks token stages (timm's name for the layout).

Deviations: none in the network (timm's ViT, the paper's pre-norm blocks with class-token pooling); the
"tiny/patch4/32 px" size is a common small-image configuration, not one of the paper's models.

Example:
    >>> import torch
    >>> net = vit_tiny_patch4_32(depth=2).eval()
    >>> net.channels, net.strides, net.num_tokens, net.grid_size
    ([192, 192], [4, 4], 65, (8, 8))
    >>> net.stages[0](net.stem(torch.zeros(1, 3, 32, 32))).shape
    torch.Size([1, 65, 192])
    >>> net(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer, global_pool_nlc
from torch import Tensor

from ._registry import register_model
from .resnet import StagedModel

__all__ = ["StagedViT", "ViTEmbed", "ViTHead", "vit_tiny_patch4_32"]


class ViTEmbed(nn.Module):
    """timm ``VisionTransformer``'s embedding as a module: the part of ``forward_features`` before the blocks.

    ``patch_embed``, then class/register tokens and the position embedding (timm's ``_pos_embed`` for a fixed
    image size), ``patch_drop`` and ``norm_pre``. Holds the timm model's own modules and parameters.
    Shapes: ``(B, C, H, W) -> (B, L, D)``.
    """

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        if model.dynamic_img_size:
            raise ValueError("StagedViT needs a fixed image size (dynamic_img_size=False)")
        self.patch_embed = model.patch_embed
        self.cls_token = model.cls_token
        self.reg_token = model.reg_token
        self.pos_embed = model.pos_embed
        self.pos_drop = model.pos_drop
        self.patch_drop = model.patch_drop
        self.norm_pre = model.norm_pre
        self.no_embed_class = bool(model.no_embed_class)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.pos_embed is None:
            x = torch.cat(to_cat + [x.view(x.shape[0], -1, x.shape[-1])], dim=1)
        elif self.no_embed_class:
            x = x + self.pos_embed
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
            x = self.pos_drop(x)
        else:
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
            x = self.pos_drop(x + self.pos_embed)
        x = self.patch_drop(x)
        return self.norm_pre(x)


class ViTHead(nn.Module):
    """timm ``VisionTransformer``'s ``norm`` + ``forward_head`` as a module: ``(B, L, D) -> (B, num_classes)``."""

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        self.norm = model.norm
        self.attn_pool = model.attn_pool
        self.fc_norm = model.fc_norm
        self.head_drop = model.head_drop
        self.head = model.head
        self.global_pool = model.global_pool
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.pool_include_prefix = bool(model.pool_include_prefix)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.attn_pool is not None:
            x = self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens :])
        else:
            x = global_pool_nlc(x, self.global_pool, self.num_prefix_tokens, self.pool_include_prefix)
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return self.head(x)

    def extra_repr(self) -> str:
        return f"global_pool={self.global_pool!r}, num_prefix_tokens={self.num_prefix_tokens}"


class StagedViT(StagedModel):
    """A timm ``VisionTransformer`` seen as ``embed -> blocks -> norm + head``; token stages (see module docstring).

    Extra attributes: ``output_fmt = "NLC"``, ``num_tokens``, ``num_prefix_tokens``, ``grid_size``, ``patch_size``.

    Example:
        >>> import torch
        >>> vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, num_classes=10)
        >>> staged = StagedViT.from_timm(vit.eval())
        >>> x = torch.randn(2, 3, 32, 32)
        >>> torch.equal(staged(x), vit(x))
        True
    """

    output_fmt = "NLC"

    @classmethod
    def from_timm(cls, model: VisionTransformer, *, input_size: Sequence[int] | None = None) -> StagedViT:
        """Wrap a timm ``VisionTransformer`` with a fixed image size, reusing its modules (shared parameters)."""
        if not isinstance(model, VisionTransformer):
            raise TypeError(f"expected a timm VisionTransformer, got {type(model).__name__}")
        pe = model.patch_embed
        grid = tuple(int(g) for g in pe.grid_size)
        patch = tuple(int(p) for p in pe.patch_size)
        if patch[0] != patch[1]:
            raise ValueError(f"StagedViT records one stride per stage: square patches only, got {patch}")
        img = tuple(int(s) for s in pe.img_size)
        size = tuple(input_size) if input_size is not None else (int(model.in_chans), *img)
        blocks = list(model.blocks)
        d = int(model.embed_dim)
        net = cls(
            ViTEmbed(model),
            blocks,
            ViTHead(model),
            channels=[d] * len(blocks),
            strides=[patch[0]] * len(blocks),
            input_size=size,
            num_classes=int(model.num_classes),
            num_features=d,
        )
        net.num_prefix_tokens = int(model.num_prefix_tokens)  # class token + register tokens
        net.grid_size = grid
        net.patch_size = patch[0]
        net.num_tokens = net.num_prefix_tokens + grid[0] * grid[1]
        return net


@register_model(
    family="Vision Transformer",
    source="timm VisionTransformer (ViT-Tiny widths, 4x4 patches, 32 px)",
    paper="Dosovitskiy et al. 2021",
    min_input_size=32,
    max_input_size=32,
    small={"depth": 4},
    small_input_size=32,
)
def vit_tiny_patch4_32(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: int = 32,
    patch_size: int = 4,
    embed_dim: int = 192,
    depth: int = 12,
    num_heads: int = 3,
    fused_attn: bool = True,
    **kwargs: Any,
) -> StagedViT:
    """ViT-Tiny with 4x4 patches for 32 px images (Dosovitskiy et al. 2021): 5,362,762 parameters at 10 classes.

    timm's ``VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3)``; 12 stages of
    ``(65, 192)`` tokens. The position embedding fixes the input size to ``img_size`` (``min_input_size`` =
    ``max_input_size`` = 32 in the registry for the defaults). ``kwargs`` go to timm's ``VisionTransformer``
    (``mlp_ratio``, ``drop_rate``, ``drop_path_rate``, ``global_pool``, ``class_token``, ``reg_tokens``, ...).
    ``fused_attn=False`` computes attention explicitly (softmax of ``q k^T / sqrt(d)``) instead of with PyTorch's
    fused ``scaled_dot_product_attention``: the same function, slower, but twice differentiable on the CPU (the fused
    CPU kernel has no double backward, which feedback kinds that differentiate through the backbone may need).
    """
    net = VisionTransformer(
        img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, **kwargs,
    )  # fmt: skip
    if not fused_attn:
        for block in net.blocks:
            if hasattr(block.attn, "fused_attn"):
                block.attn.fused_attn = False
    return StagedViT.from_timm(net, input_size=(in_chans, img_size, img_size))
