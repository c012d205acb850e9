"""Class-specific figure-ground fragments: the top-down half of Borenstein & Ullman's segmentation.

Reference: E. Borenstein and S. Ullman, "Combined top-down/bottom-up segmentation", IEEE TPAMI 30(12), 2008 (and
Borenstein & Ullman, ECCV 2002; fragment selection after Ullman, Vidal-Naquet & Sali, Nature Neuroscience 2002).
Re-implemented from the equations below (no code copied).

1. **Matching** (:func:`ncc_map`): a fragment is a grey-level patch ``t`` with a support ``m`` (binary, ``n = sum m``
   pixels; fragments of several sizes are zero-padded to one odd side ``S`` and centred). Its normalised
   cross-correlation with the window of image ``I`` centred at ``x`` is

       NCC_t(x) = sum_u t^(u) I(x + u) / sqrt(sum_u m(u) I(x + u)^2 - (sum_u m(u) I(x + u))^2 / n),
       t^ = m (t - mean_m t) / ||m (t - mean_m t)||,

   three ``conv2d`` calls for all fragments at once (image zero-padded by ``S // 2``; windows whose std is below
   ``1e-3`` score 0). A fragment cut from an image matches there with NCC 1.
2. **Selection** (:func:`select_fragments`): candidates are cut around random figure pixels of the training images,
   with the figure-ground mask under them. On the other training images each candidate's best NCC *on the object*
   (centre within ``S // 2`` of a figure pixel) and *off it* (no figure pixel in the window) are found; its
   threshold ``theta`` is the ``1 - false_alarm`` quantile of the off-object maxima (at least 0.2; 1 if no image has
   background), so it fires on about ``false_alarm`` of the background; a candidate's own image is left out. Detections are binary features of a sample (an image's object: class ``y=1``;
   its background: ``y=0``); fragments are picked greedily by the max-min rule of Ullman et al. 2002: first the one
   of largest ``I(F; y)``, then the one maximising ``min_j I(F; y | F_j)`` over those already picked.
3. **Figure-ground labels**: each selected fragment's soft mask is the mean of the training masks under its on-object
   detections (its own mask included), i.e. the fraction of its matches where each pixel was figure.
4. **Top-down map** (:func:`topdown_map`): detections are the NCC local maxima (3x3) above ``theta``; each votes its
   mask with weight ``w_f = log(hit_f / false_alarm_f)`` (clamped at 0.1); with ``V`` the mask votes, ``A`` the
   support votes and a Beta prior of strength ``c0`` at the training figure share ``pi``,

       T(p) = (V(p) + c0 pi) / (A(p) + c0)        in [0, 1]   (uncovered pixels: T = pi).

Shapes: images ``(B, C, H, W)`` in [0, 1] (matched in grey, the channel mean), masks ``(B, H, W)`` in {0, 1};
fragments are a :class:`Fragments` of ``F`` rows; the top-down map is ``(B, H, W)``.

Example:
    >>> import torch
    >>> img = torch.zeros(1, 1, 16, 16); img[0, 0, 4:12, 4:12] = 1.0
    >>> frag = img[0, 0, 1:8, 1:8]                       # a 7x7 corner of the square, centred at (4, 4)
    >>> ncc = ncc_map(img, frag[None, None], torch.ones(1, 1, 7, 7))
    >>> round(float(ncc[0, 0, 4, 4]), 4), tuple(ncc.shape)
    (1.0, (1, 1, 16, 16))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Fragments", "conditional_information", "mutual_information", "ncc_map", "select_fragments", "topdown_map"]

_FLAT = 1e-3


@dataclass
class Fragments:
    """Selected fragments: ``templates``, ``supports`` and soft figure ``masks`` ``(F, 1, S, S)``; ``theta``,
    ``weight`` ``(F,)``; ``prior`` the training figure share (a 0-d tensor)."""

    templates: Tensor
    supports: Tensor
    masks: Tensor
    theta: Tensor
    weight: Tensor
    prior: Tensor


def grey(images: Tensor) -> Tensor:
    """``(B, 1, H, W)`` channel mean of ``(B, C, H, W)`` images."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    return images.float().mean(1, keepdim=True)


def ncc_map(images: Tensor, templates: Tensor, supports: Tensor) -> Tensor:
    """Normalised cross-correlation ``(B, F, H, W)`` of every fragment centred at every pixel (module docstring, 1).

    ``images`` ``(B, 1, H, W)``; ``templates`` and ``supports`` ``(F, 1, S, S)``, ``S`` odd.
    """
    s = templates.shape[-1]
    if templates.shape != supports.shape or s % 2 == 0 or images.shape[1] != 1:
        raise ValueError(f"need (B, 1, H, W) images and equal (F, 1, S, S) templates/supports with S odd, got "
                         f"{tuple(images.shape)}, {tuple(templates.shape)}, {tuple(supports.shape)}")
    m = supports.float()
    n = m.flatten(1).sum(1).clamp_min(1)
    t = templates.float() * m
    t = (t - (t.flatten(1).sum(1) / n).view(-1, 1, 1, 1)) * m
    t = t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    x = images.float()
    pad = s // 2
    num = F.conv2d(x, t, padding=pad)
    s1 = F.conv2d(x, m, padding=pad)
    s2 = F.conv2d(x * x, m, padding=pad)
    var = (s2 - s1 * s1 / n.view(1, -1, 1, 1)).clamp_min(0)
    std = var.sqrt()
    ok = std > _FLAT * n.sqrt().view(1, -1, 1, 1)
    return torch.where(ok, num / std.clamp_min(1e-12), torch.zeros_like(num))


def _entropy(p: Tensor) -> Tensor:
    p = p.clamp(1e-12, 1.0)
    return -(p * p.log2()).sum(-1)


def mutual_information(d: Tensor, y: Tensor) -> Tensor:
    """``I(F; y)`` in bits of binary features ``d`` ``(F, N)`` with binary labels ``y`` ``(N,)`` (empirical)."""
    d, y = d.long(), y.long()
    joint = torch.stack([((d == a) & (y == b)).float().mean(1) for a in (0, 1) for b in (0, 1)], -1)  # (F, 4)
    pd = joint.view(-1, 2, 2).sum(2)
    py = joint.view(-1, 2, 2).sum(1)
    return _entropy(pd) + _entropy(py) - _entropy(joint)


def conditional_information(d: Tensor, given: Tensor, y: Tensor) -> Tensor:
    """``I(F_i; y | G)`` ``(F,)`` for features ``d`` ``(F, N)`` given one binary feature ``given`` ``(N,)``:
    ``sum_g p(g) I(F_i; y | G = g)``."""
    out = torch.zeros(d.shape[0])
    for g in (0, 1):
        sel = given.bool() if g else ~given.bool()
        if sel.any():
            out += sel.float().mean() * mutual_information(d[:, sel], y[sel])
    return out


def _box_any(mask: Tensor, radius: int) -> Tensor:
    """1 where a ``(2 radius + 1)^2`` window (zero-padded) around the pixel holds any 1 of ``mask`` ``(B, 1, H, W)``."""
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def select_fragments(images: Tensor, masks: Tensor, *, sizes: tuple[int, ...] = (7, 11), num_candidates: int = 200,
                     num_fragments: int = 40, false_alarm: float = 0.1, seed: int = 0, chunk: int = 16) -> Fragments:
    """Select ``num_fragments`` class fragments from ``images`` ``(N, C, H, W)`` with figure ``masks`` ``(N, H, W)``
    (module docstring, 2-3). Needs at least 2 images with figure pixels."""
    if not sizes or any(int(s) < 3 or int(s) % 2 == 0 for s in sizes):
        raise ValueError(f"fragment sizes must be odd and >= 3, got {sizes}")
    if not 0.0 < false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in (0, 1), got {false_alarm}")
    g = grey(images)
    fig = (masks > 0).float().unsqueeze(1)
    N, _, H, W = g.shape
    S = max(int(s) for s in sizes)
    if S > min(H, W):
        raise ValueError(f"fragment side {S} is larger than the images ({H}x{W}); choose smaller sizes")
    has_fig = fig.flatten(1).any(1)
    if int(has_fig.sum()) < 2:
        raise ValueError("select_fragments needs at least 2 training images with figure pixels")
    # ---- candidates: windows around random figure pixels (whole window inside the image), sizes cycled
    rng = np.random.default_rng(seed)
    pad = S // 2
    inner = torch.zeros_like(fig, dtype=torch.bool)
    inner[..., pad:H - pad, pad:W - pad] = True
    cand = torch.nonzero((fig > 0) & inner)  # (P, 4) rows (img, 0, y, x)
    pick = torch.from_numpy(rng.choice(len(cand), size=min(num_candidates, len(cand)), replace=False))
    src, ys, xs = cand[pick, 0], cand[pick, 2], cand[pick, 3]
    side = torch.tensor([int(sizes[i % len(sizes)]) for i in range(len(pick))])
    off = torch.arange(-pad, pad + 1)
    wy, wx = (ys[:, None] + off)[:, :, None], (xs[:, None] + off)[:, None, :]
    templ = g[src[:, None, None], 0, wy, wx].unsqueeze(1)  # (F, 1, S, S)
    fmask = fig[src[:, None, None], 0, wy, wx].unsqueeze(1)
    r = (side // 2).view(-1, 1, 1)
    sup = ((off.abs()[None, :, None] <= r) & (off.abs()[None, None, :] <= r)).unsqueeze(1).float()
    flat = (templ * sup).flatten(1).std(1) < _FLAT
    keep = ~flat
    templ, fmask, sup, src, ys, xs = templ[keep], fmask[keep], sup[keep], src[keep], ys[keep], xs[keep]
    Fc = len(templ)
    # ---- best on- and off-object NCC of every candidate on every training image
    on_obj = _box_any(fig, pad)  # centre within S // 2 of a figure pixel
    pos = torch.full((Fc, N), -2.0)
    neg = torch.full((Fc, N), -2.0)
    arg = torch.zeros((Fc, N), dtype=torch.long)
    for i0 in range(0, N, chunk):
        sl = slice(i0, min(N, i0 + chunk))
        ncc = ncc_map(g[sl], templ, sup)  # (b, Fc, H, W)
        off_obj = ~_box_any(fig[sl], pad).expand(-1, Fc, -1, -1)
        on = on_obj[sl].expand(-1, Fc, -1, -1)
        pv, pa = ncc.masked_fill(~on, -2.0).flatten(2).max(2)
        pos[:, sl], arg[:, sl] = pv.T, pa.T
        neg[:, sl] = ncc.masked_fill(~off_obj, -2.0).flatten(2).amax(2).T
    own = torch.zeros((Fc, N), dtype=torch.bool)
    own[torch.arange(Fc), src] = True
    pos_ok = has_fig.view(1, -1) & ~own
    neg_ok = (neg > -2.0) & ~own
    # threshold: the (1 - false_alarm) quantile of each candidate's off-object maxima
    negq = neg.masked_fill(~neg_ok, float("nan"))
    theta = torch.nanquantile(negq, 1.0 - false_alarm, dim=1).nan_to_num(1.0).clamp_min(0.2)
    # binary samples: positives (object of each figure image), negatives (background of each image)
    dp = (pos >= theta[:, None]) & pos_ok
    dn = (neg >= theta[:, None]) & neg_ok
    hit = dp.sum(1).float() / pos_ok.sum(1).clamp_min(1)
    fa = dn.sum(1).float() / neg_ok.sum(1).clamp_min(1)
    d = torch.cat([dp, dn], 1)
    valid = torch.cat([pos_ok, neg_ok], 1)
    y = torch.cat([torch.ones(N), torch.zeros(N)]).long()
    cols = valid.any(0)  # a candidate's own image counts as neither hit nor false alarm: the same for every candidate
    d, y = d[:, cols], y[cols]
    # ---- greedy max-min selection (Ullman et al. 2002)
    mi = mutual_information(d, y)
    chosen = [int(mi.argmax())]
    score = torch.full((Fc,), float("inf"))
    while len(chosen) < min(num_fragments, Fc):
        score = torch.minimum(score, conditional_information(d, d[chosen[-1]], y))
        score[chosen] = -1.0
        chosen.append(int(score.argmax()))
    idx = torch.tensor(chosen)
    # ---- soft figure-ground masks: mean mask under the on-object detections (own position included)
    masks_out = torch.zeros(len(idx), 1, S, S)
    for j, f in enumerate(idx.tolist()):
        imgs = torch.nonzero(dp[f]).flatten()
        cy, cx = arg[f, imgs] // W, arg[f, imgs] % W
        fp = F.pad(fig[imgs], (pad,) * 4)
        win = torch.stack([fp[k, 0, cy[k]:cy[k] + S, cx[k]:cx[k] + S] for k in range(len(imgs))]) if len(imgs) else \
            torch.zeros(0, S, S)
        masks_out[j, 0] = (win.sum(0) + fmask[f, 0]) / (len(imgs) + 1)
    weight = (hit[idx].clamp_min(1e-3) / fa[idx].clamp_min(1e-3)).log().clamp_min(0.1)
    return Fragments(templates=templ[idx], supports=sup[idx], masks=masks_out * sup[idx], theta=theta[idx],
                     weight=weight, prior=fig.mean().reshape(()))


def topdown_map(images: Tensor, frags: Fragments, *, strength: float = 1.0) -> tuple[Tensor, Tensor]:
    """Top-down figure map ``T`` ``(B, H, W)`` in [0, 1] and the support votes ``A`` ``(B, H, W)`` (module docstring,
    4); ``strength`` is the prior's pseudo-count ``c0``."""
    g = grey(images)
    S = frags.templates.shape[-1]
    ncc = ncc_map(g, frags.templates, frags.supports)
    peak = ncc == F.max_pool2d(ncc, 3, stride=1, padding=1)
    det = ((ncc >= frags.theta.view(1, -1, 1, 1)) & peak).float() * frags.weight.view(1, -1, 1, 1)
    votes = F.conv_transpose2d(det, frags.masks.float(), padding=S // 2)[:, 0]
    cover = F.conv_transpose2d(det, frags.supports.float(), padding=S // 2)[:, 0]
    prior = frags.prior.float()
    return (votes + strength * prior) / (cover + strength), cover
