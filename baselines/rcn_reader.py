"""A CAPTCHA reader built on the Recursive Cortical Network: character models scanned across the string, then parsed.

Reference: D. George et al., "A generative vision model that trains with high data efficiency and breaks text-based
CAPTCHAs", Science 358 (2017). Re-implemented from the paper's description of its parser (no code copied); the
character models are :class:`baselines.rcn.RCN` (one two-level model per training character image).

Reading a ``(B, C, H, W)`` image of ``length`` characters:

1. **Scan**: crop windows of ``window`` columns (default 16, for the ``captcha`` dataset's 30x80 images; 0: ``H``,
   square) at every ``stride`` columns (and at the right edge), and score each with the RCN: per window ``n`` the
   class scores ``s[n, k]`` (the RCN's logits, the best explained-away re-score of class ``k``'s candidates; see
   :mod:`baselines.rcn`).
2. **Parse** (:func:`parse_windows`): choose ``length`` windows left to right, each centre at least ``min_gap``
   columns (default 0: half the window) after the previous one, maximising ``sum_i max_k s[n_i, k]`` (dynamic programming over windows,
   exact); position ``i`` of the string reads ``argmax_k s[n_i, k]``.

Learning (:meth:`RCNReader.fit`, no gradients): the RCN is fitted on isolated character images, one model per image,
each centre-cropped to the scan window's width (so training and scanned windows have one shape; the RCN resizes both
to its ``work_size`` square, which stretches a narrow window horizontally: at 30 px high CAPTCHAs a 16-column window
read isolated glyphs better than a square one, 95 % against 65 % with 10 glyphs per class).
Targets are ``(N,)`` classes or ``(N, length)`` rows with exactly one scored position (the ``captcha`` dataset with
``glyphs_per_class > 0``: the class at position 0, ``-100`` elsewhere).

Shapes: input ``(B, C, H, W)`` in [0, 1]; output ``(B, length, num_classes)``: the class scores of the chosen window
of every position (unnormalised RCN scores: their argmax is the reading; a cross-entropy of them is not a calibrated
likelihood). Before :meth:`RCNReader.fit` the output is zeros.

Deviations from the paper: the paper's parser searches over character positions *and* over pairs of overlapping
characters with lateral constraints between them, explaining each pixel once across the string (a second-level
"explaining away"), and its character models are multi-level RCNs with a contour-surface (appearance) model; here
the character models are :mod:`baselines.rcn`'s two-level ones (see its deviations) and the parse
is a max-sum over independently scored fixed-width windows with only a minimum spacing, no joint explaining away
between neighbouring characters and no string-length search (the length is given).

Example::

    >>> import torch, baselines
    >>> from baselines.rcn_reader import parse_windows
    >>> scores = torch.tensor([[5.0, 1.0, 0.0, 4.0, 0.0, 3.0]])       # (B=1, N=6 windows)
    >>> parse_windows(scores, torch.arange(6) * 4, length=3, min_gap=8).tolist()
    [[0, 3, 5]]
    >>> reader = baselines.create_model("rcn_reader", num_classes=10, in_chans=1, length=4)
    >>> reader(torch.zeros(1, 1, 30, 80)).shape                           # unfitted: zeros
    torch.Size([1, 4, 10])
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .rcn import RCN

__all__ = ["RCNReader", "parse_windows", "rcn_reader", "window_offsets"]

IGNORE = -100
_CHUNK = 256  # windows per RCN call


def window_offsets(width: int, window: int, stride: int) -> Tensor:
    """Left columns ``(N,)`` of windows of ``window`` columns every ``stride`` columns in an image ``width`` wide,
    the last one flush with the right edge."""
    if window > width:
        raise ValueError(f"window {window} is wider than the image ({width} columns)")
    offs = list(range(0, width - window + 1, max(1, stride)))
    if offs[-1] != width - window:
        offs.append(width - window)
    return torch.tensor(offs, dtype=torch.long)


def parse_windows(scores: Tensor, positions: Tensor, *, length: int, min_gap: int) -> Tensor:
    """The best left-to-right parse of ``length`` windows (dynamic programming).

    Args:
        scores: ``(B, N)`` value of reading a character at window ``n`` (``-inf``: never).
        positions: ``(N,)`` window positions (e.g. centres), non-decreasing.
        length: how many windows to choose.
        min_gap: the least distance ``positions[n_{i+1}] - positions[n_i]`` between consecutive chosen windows
            (which are distinct windows even when ``min_gap`` is 0).

    Returns:
        int64 ``(B, length)`` window indices, increasing, maximising ``sum_i scores[b, n_i]`` under the spacing.
        Raises ``ValueError`` if no parse of ``length`` windows fits.
    """
    B, N = scores.shape
    if length < 1 or positions.shape != (N,):
        raise ValueError(f"need length >= 1 and positions of shape ({N},), got {length} and {tuple(positions.shape)}")
    pos = positions.to(torch.float64)
    # prev[j]: the last window j' whose position is at least min_gap before window j (-1: none)
    prev = torch.minimum(torch.searchsorted(pos, pos - min_gap, right=True) - 1, torch.arange(N) - 1)  # never j itself
    value = scores.to(torch.float64)
    back = []
    for _ in range(1, length):
        best, arg = value.cummax(1)  # best[:, j] = max over windows 0..j
        ok = prev >= 0
        p = prev.clamp_min(0)
        value = torch.where(ok, scores.to(torch.float64) + best[:, p], -math.inf)
        back.append(torch.where(ok, arg[:, p], -1))
    total, last = value.max(1)
    if not torch.isfinite(total).all():
        raise ValueError(f"no parse of {length} windows at least {min_gap} apart fits {N} windows with finite scores")
    out = torch.empty(B, length, dtype=torch.long)
    out[:, -1] = last
    for i in range(length - 2, -1, -1):
        out[:, i] = back[i].gather(1, out[:, i + 1:i + 2]).squeeze(1)
    return out


class RCNReader(nn.Module):
    """RCN character models scanned over windows and parsed into a string (see the module docstring)."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, length: int = 4, window: int = 16, stride: int = 2,
                 min_gap: int = 0, work_size: int = 32, edge_threshold: float = 0.1, suppress_radius: int = 2,
                 pool_radius: int = 4, perturb_factor: float = 2.0, tolerance: float = 2.0, num_candidates: int = 10,
                 n_iters: int = 0, violation_penalty: float = 0.25) -> None:
        super().__init__()
        if length < 1 or window < 0 or stride < 1 or min_gap < 0:
            raise ValueError(f"need length >= 1, window >= 0, stride >= 1, min_gap >= 0; got {length}, {window}, "
                             f"{stride}, {min_gap}")
        self.num_classes, self.in_chans, self.length = int(num_classes), int(in_chans), int(length)
        self.window, self.stride, self.min_gap = int(window), int(stride), int(min_gap)
        self.input_size = (self.in_chans, 30, 80)
        self.rcn = RCN(num_classes=num_classes, in_chans=in_chans, work_size=work_size, edge_threshold=edge_threshold,
                       suppress_radius=suppress_radius, pool_radius=pool_radius, perturb_factor=perturb_factor,
                       tolerance=tolerance, num_candidates=num_candidates, n_iters=n_iters,
                       violation_penalty=violation_penalty)

    @torch.no_grad()
    def fit(self, inputs: Tensor, targets: Tensor) -> None:
        """Fit the character RCN on isolated characters ``(N, C, h, w)`` with classes ``(N,)`` or ``(N, L)`` rows of
        one scored position (``-100`` elsewhere)."""
        t = targets.detach().cpu().long()
        if t.dim() == 2:
            scored = t != IGNORE
            if not bool((scored.sum(1) == 1).all()):
                raise ValueError("rcn_reader fits on isolated characters (one scored position per target row); with "
                                 "the captcha dataset set data.options.glyphs_per_class > 0")
            t = t[scored]
        win = self.window or inputs.shape[-2]
        if inputs.shape[-1] > win:  # the centre columns: the same window shape as the scan
            left = (inputs.shape[-1] - win) // 2
            inputs = inputs[..., left:left + win]
        self.rcn.fit(inputs, t)

    def scan(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Window class scores ``(B, N, num_classes)`` and window centres ``(N,)`` (in columns) of ``x``."""
        B, C, H, W = x.shape
        win = self.window or H
        offs = window_offsets(W, win, self.stride)
        crops = torch.stack([x[..., o:o + win] for o in offs.tolist()], 1).flatten(0, 1)  # (B N, C, H, win)
        # the RCN in chunks of windows: its inference memory grows with the number of images it scores at once
        logits = torch.cat([self.rcn(c).cpu() for c in crops.split(_CHUNK)]).view(B, len(offs), -1)
        return logits, offs + win / 2

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if self.rcn.feats.shape[0] == 0:
            return torch.zeros(B, self.length, self.num_classes, device=x.device)
        logits, centres = self.scan(x)
        gap = self.min_gap or (self.window or x.shape[-2]) // 2
        chosen = parse_windows(logits.amax(2), centres, length=self.length, min_gap=gap)  # (B, L)
        out = logits.gather(1, chosen.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        return out.to(x.device)


@register_model(family="RCN", source="hand-written (paper)", paper="George et al. 2017", staged=False)
def rcn_reader(*, num_classes: int = 10, in_chans: int = 1, length: int = 4, window: int = 16, stride: int = 2,
               min_gap: int = 0, work_size: int = 32, edge_threshold: float = 0.1, suppress_radius: int = 2,
               pool_radius: int = 4, perturb_factor: float = 2.0, tolerance: float = 2.0, num_candidates: int = 10,
               n_iters: int = 0, violation_penalty: float = 0.25) -> RCNReader:
    """RCN string reader: character RCNs scanned over windows, parsed left to right by dynamic programming."""
    return RCNReader(num_classes=num_classes, in_chans=in_chans, length=length, window=window, stride=stride,
                     min_gap=min_gap, work_size=work_size, edge_threshold=edge_threshold,
                     suppress_radius=suppress_radius, pool_radius=pool_radius, perturb_factor=perturb_factor,
                     tolerance=tolerance, num_candidates=num_candidates, n_iters=n_iters,
                     violation_penalty=violation_penalty)
