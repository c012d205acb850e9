"""Tied transposed operations: the adjoints of forward layers, computed with the forward layers' own parameters.

Used by :mod:`feedback.generative`. Every function here takes the *forward* module and uses its ``Parameter``
objects functionally (``F.conv_transpose2d(g, conv.weight, ...)``, ``F.linear(g, linear.weight.t())``), so a loss
on a transposed pass sends gradients to the forward weights. Nothing is copied: CNN-F's official ``Linear``
feedback copies ``weight.data.t()`` into a second layer, so its reconstruction gradients never reach the forward
weights (reference/methods.md section 1.3, rule 2); here that cannot happen by construction.

Example (the transpose of a strided convolution restores the input size, and is its adjoint):
    >>> import torch, torch.nn as nn
    >>> conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    >>> x, g = torch.randn(2, 3, 9, 9), torch.randn(2, 8, 5, 5)
    >>> gt = conv2d_t(g, conv, x.shape[-2:])
    >>> gt.shape
    torch.Size([2, 3, 9, 9])
    >>> torch.allclose((conv(x) * g).sum(), (x * gt).sum(), atol=1e-4)  # <conv x, g> = <x, conv^T g>
    True
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["call_frozen", "conv2d_t", "linear_t", "rms", "unpool", "vjp"]


def conv2d_t(g: Tensor, conv: nn.Conv2d, in_size: Sequence[int]) -> Tensor:
    """``conv``'s adjoint applied to ``g``: a transposed convolution with ``conv.weight`` itself, no bias.

    ``in_size`` (H, W) is the size of the forward input; the output padding that a strided convolution loses is
    recovered from it, so the result has exactly the forward input's size.
    """
    out_pad = []
    for d in range(2):
        k, s, p, dil = conv.kernel_size[d], conv.stride[d], conv.padding[d], conv.dilation[d]
        out_pad.append(int(in_size[d]) - ((g.shape[-2 + d] - 1) * s - 2 * p + dil * (k - 1) + 1))
    return F.conv_transpose2d(g, conv.weight, None, conv.stride, conv.padding, tuple(out_pad), conv.groups,
                              conv.dilation)


def linear_t(g: Tensor, linear: nn.Linear) -> Tensor:
    """``linear``'s adjoint applied to ``g``: ``g @ W`` computed as ``F.linear(g, W.t())``, no bias."""
    return F.linear(g, linear.weight.t())


def unpool(g: Tensor, indices: Tensor, in_shape: Sequence[int]) -> Tensor:
    """Send each pooled value back to the input position ``indices`` names (flat in H*W, as ``max_pool2d`` gives).

    Values routed to the same position (overlapping windows) are summed: the adjoint of max-pooling with fixed
    switches (``F.max_unpool2d`` would overwrite instead).
    """
    b, c = g.shape[:2]
    h, w = int(in_shape[-2]), int(in_shape[-1])
    out = g.new_zeros(b, c, h * w)
    return out.scatter_add(2, indices.flatten(2), g.flatten(2)).view(b, c, h, w)


def call_frozen(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` without side effects on its buffers (batch-norm running statistics update copies).

    Parameters are the module's own (gradients reach them); buffers are cloned for the call.
    """
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    if not buffers:
        return module(x)
    return torch.func.functional_call(module, buffers, (x,), strict=False)


def vjp(module: nn.Module, u: Tensor, g: Tensor) -> Tensor:
    """The vector-Jacobian product ``J(u)^T g`` of ``module`` at the point ``u``, with its own parameters.

    The local linear map of the module at ``u`` transposed: exact for linear modules (pooling, reshapes,
    convolutions of any kind), the derivative for element-wise non-linearities. Differentiable with respect to
    ``g`` and the module's parameters when gradients are enabled (not with respect to ``u``: the point is held
    fixed, as the switches of a ReLU are). With gradients enabled, scaled dot-product attention inside the module
    runs its math kernel (the fused CPU and flash kernels have no second derivative).
    """
    need_graph = torch.is_grad_enabled()
    # differentiating the VJP again (need_graph) needs twice-differentiable kernels: attention's math kernel
    kernels = sdpa_kernel([SDPBackend.MATH]) if need_graph else contextlib.nullcontext()
    with torch.enable_grad(), kernels:
        x = u.detach().requires_grad_(True)
        y = call_frozen(module, x.clone())  # the clone shields the leaf from in-place ops inside the module
        if not isinstance(y, Tensor) or y.shape != g.shape:
            got = type(y).__name__ if not isinstance(y, Tensor) else tuple(y.shape)
            raise ValueError(
                f"generative feedback cannot transpose {type(module).__name__}: it returned {got}, "
                f"expected a tensor of shape {tuple(g.shape)}"
            )
        if not y.requires_grad:
            return torch.zeros_like(u)
        (gi,) = torch.autograd.grad(y, x, g.to(y.dtype), create_graph=need_graph, allow_unused=True)
    return torch.zeros_like(u) if gi is None else gi


def rms(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Root mean square per sample (over every dimension but the first), shaped to broadcast against ``x``."""
    r = x.float().pow(2).flatten(1).mean(1).add(eps).sqrt()
    return r.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
