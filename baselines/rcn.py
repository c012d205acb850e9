"""Recursive Cortical Network (George et al., Science 2017): a generative two-level vision model learnt without gradients.

Reference: D. George et al., "A generative vision model that trains with high data efficiency and breaks text-based
CAPTCHAs", Science 358 (2017). Re-implemented from the paper and the algorithm summary in
reference/methods.md section 10 (no code copied). Vectorised with torch (strided window gathers, shifted-maximum
dilations, index_add).

The model, per training image (one "model" each, as the reference's two-level MNIST model):

1. **Edge features** (:func:`edge_features`): ``F`` (default 16) oriented derivative-of-Gaussian filters
   ``k_theta = cos(theta) dG/dx + sin(theta) dG/dy`` over 360 degrees (so polarity is kept), rectified; per pixel the best
   orientation is kept where it is a local maximum across the edge (non-max suppression along the gradient) and
   above ``edge_threshold``: a binary map ``E[f, y, x]``. At test time orientations are pooled over +-1 channel
   (cross-channel pooling) and the evidence is ``e = 2E - 1`` (+1 edge, -1 background).
2. **Learning = dictionary building** (:func:`sparsify`, :func:`learn_laterals`): the training edge map is
   sparsified greedily into features ``(f, r, c)`` ("frcs") no two within ``suppress_radius`` (Chebyshev);
   each feature becomes a **pool**: a latent displacement ``d_k`` in ``[-R, R]^2`` (``R = pool_radius``), so the
   feature may appear anywhere within the pool (translation). **Lateral constraints** ``|d_i - d_j|_inf <= r_ij``
   are added greedily, nearest pairs first, wherever the graph does not already restrict the relative displacement
   of a pair to ``dist_ij / perturb_factor + tolerance``; ``r_ij = max(1, round(dist_ij / perturb_factor))``.
3. **Scoring** (``score``; see "Score normalisation" below): each feature ``k`` placed at a displacement scores
   ``a`` if its pooled evidence has an edge there and ``c`` if not. ``score="llr"`` (default): the log-likelihood
   ratio of "feature of this object" against "background" (no such object), ``a = log(q / b)``,
   ``c = log((1 - q) / (1 - b))``, with ``q`` (``object_rate``) the probability that a pool of the object's model
   finds an edge of its orientation and ``b`` (``background_rate``) the probability that it finds one in an image of
   another object; by default both are estimated by :meth:`RCN.fit` on ``calib_per_class`` training images per class
   (the fraction of a model's features its forward MAP places on an edge: on images of its own class, its own image
   excluded, and of other classes). ``score="sum"``: the previous +-1 evidence (``a = 1``, ``c = -1``), i.e. hits
   minus misses.
4. **Forward inference** (bottom-up): the score of a model is the max-product (max-sum of log evidence)
   ``max_d sum_k u(f_k, r_k + d_k) subject to the laterals`` (``u`` the scores of 3.), computed exactly on the
   *minimum spanning tree* of the lateral graph (message from j to its parent i:
   ``m(d_i) = max_{|d_j - d_i| <= r_ij} belief_j(d_j)``, a grey dilation of j's belief by a ``(2r+1)^2`` square), as
   the reference's forward pass. With ``prune=True`` (default) it is exact only where it matters
   (:meth:`RCN.pruned_forward_scores`, branch and bound): models are scored in order of a cheap upper bound (every
   feature at its best position in its pool, laterals ignored) until no unscored model could enter the
   ``num_candidates`` best or beat its class's best; candidates, re-scores and logits equal those of ``prune=False``.
5. **Backtracing** (top-down) for the ``num_candidates`` best models of each image (ties to the lower model index):
   loopy max-product on the full lateral graph (parallel damped updates, ``n_iters``; 0, the default, skips it),
   decoded into one displacement per pool; if the decode breaks a lateral constraint the exact tree MAP (Viterbi
   backtrace from the root) is used instead, and each constraint still broken costs ``violation_penalty`` (in +-1
   evidence units, i.e. times ``(a - c) / 2``). The candidate is re-scored by explaining away: each image edge
   location explained by several features counts once.
6. **Classification**: the class of the best re-scored candidate; the output logits ``(B, num_classes)`` are the
   best re-scored candidate per class (classes without a candidate rank below, by their forward score). With
   ``score="llr"`` a logit is a log-likelihood ratio in nats against the background (positive: the object explains
   the image better than background does).

Score normalisation: with the +-1 score a feature found counts as much as a feature missed, so a model is ahead of
background whenever more than half of its features find an edge. In a pool of 9x9 displacements, with orientation
pooling, a feature of the *wrong* digit finds an edge about two times in three (measured ``b`` about 0.67-0.69 on
sklearn digits at 32 px, against ``q`` about 0.87-0.89 for the right digit), so the +-1 score grows with the number
of features even for the wrong model, and feature-rich models won: at 100 training digits per class, wrong winners
sat at the 76th percentile of feature count (right ones at the 66th) and class 0 (most features) took 10 of the 45
test 4s. The LLR charges a miss ``|c|`` (about 1.1-1.2 nats) against a hit's ``a`` (about 0.24-0.27 nats), i.e. a
model gains only where it finds more than about 80 % of its features, which is the per-feature Bayes decision of
object against background. The per-feature *average* (``hits / K``), the other obvious normalisation, is not used:
it lets a small model that is part of a larger digit (a 1 inside a 4) explain that digit as well (it scored 0.84-0.87
against 0.89-0.90 for the sum, forward pass only, on 150 test digits).

Shapes: input ``(B, C, H, W)`` in [0, 1] (channels averaged), resized to ``work_size`` and padded by the pool radius
plus a margin; output ``(B, num_classes)``. Before :meth:`RCN.fit` the output is zeros.

Deviations from the paper/reference: images are ``work_size`` (default 32) instead of 112 px, with scaled-down
pool (R=4, 9x9 instead of 25x25), suppression radius and tolerance; loopy BP is off by default (``n_iters=0``; the
reference runs up to 300 iterations) and a violated decode falls back to the tree MAP with a penalty instead of
scoring -inf; the re-score counts each explained edge location once instead of the reference's filter-overlap
weighting; the default "llr" score, with rates estimated from the training images, is ours: the reference scores
with the +-1 evidence (our "sum"); the forward pass is pruned by an upper bound (same candidates); no global
translation search beyond the pools (the reference has none either); edge filters are derivative-of-Gaussian rather
than the reference's Gabor-like filters; only the two-level model (no feature hierarchy, no CAPTCHA parser: see
:mod:`baselines.rcn_reader`).

Example::

    >>> import torch, baselines
    >>> model = baselines.create_model("rcn", num_classes=2, in_chans=1)
    >>> x = torch.zeros(2, 1, 32, 32); x[0, :, 8:24, 8:24] = 1.0; x[1, :, 6:26, 14:18] = 1.0
    >>> model.fit(x, torch.tensor([0, 1]))
    >>> model(x).argmax(1).tolist()
    [0, 1]
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
from torch import Tensor

from ._registry import register_model

__all__ = [
    "RCN",
    "backtrace_tree",
    "dilate",
    "edge_features",
    "learn_laterals",
    "loopy_max_product",
    "oriented_filters",
    "rcn",
    "sparsify",
    "tree_max_product",
]


SCORES = ("llr", "sum")
_SYMMETRIC_RATES = (0.9, 0.1)  # q = 1 - b: the "llr" score is then the "sum" score times log 9


# ----------------------------------------------------------------------------------------------- edge features
def oriented_filters(num_orients: int = 16, sigma: float = 1.0) -> Tensor:
    """``(num_orients, 1, k, k)`` derivative-of-Gaussian filters; filter ``i`` responds to an intensity increase
    along ``theta_i = 2 pi i / num_orients`` (x to the right, y down), e.g. ``i = 0``: dark left, bright right."""
    half = max(1, int(math.ceil(3 * sigma)))
    ax = torch.arange(-half, half + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    g = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    gx, gy = xx * g, yy * g  # d/dx and d/dy of the Gaussian, up to sign and scale (correlation with the image)
    norm = gx.abs().sum() / 2
    th = torch.arange(num_orients, dtype=torch.float32) * (2 * math.pi / num_orients)
    k = torch.cos(th)[:, None, None] * gx + torch.sin(th)[:, None, None] * gy
    return (k / norm).unsqueeze(1)


def edge_features(images: Tensor, filters: Tensor, threshold: float = 0.1) -> tuple[Tensor, Tensor]:
    """Binary oriented edge map and its strengths from ``(B, H, W)`` images in [0, 1].

    Returns ``(E, S)``, both ``(B, F, H, W)``: ``E`` is 1 where orientation ``f`` is the best one at the pixel, its
    rectified response is at least ``threshold`` and not smaller than at the two neighbours across the edge
    (non-max suppression along the gradient direction, a tie kept on the dark side); ``S`` is that response where ``E`` is 1, else 0.
    """
    nf = filters.shape[0]
    pad = filters.shape[-1] // 2
    x = F.pad(images.unsqueeze(1).float(), (pad,) * 4, mode="replicate")
    resp = F.conv2d(x, filters.to(x)).clamp_min(0)  # (B, F, H, W)
    best, arg = resp.max(1)  # (B, H, W)
    th = arg.float() * (2 * math.pi / nf)
    dy, dx = torch.sin(th).round().long(), torch.cos(th).round().long()
    B, H, W = best.shape
    bp = F.pad(best, (1, 1, 1, 1))
    yy = torch.arange(H).view(1, H, 1) + 1
    xx = torch.arange(W).view(1, 1, W) + 1
    bidx = torch.arange(B).view(B, 1, 1)
    fwd = bp[bidx, yy + dy, xx + dx]
    bwd = bp[bidx, yy - dy, xx - dx]
    keep = (best >= threshold) & (best >= fwd) & (best > bwd)  # ties across the edge: keep one pixel
    E = torch.zeros_like(resp)
    E.scatter_(1, arg.unsqueeze(1), keep.unsqueeze(1).float())
    return E, E * resp


def pool_orientations(E: Tensor) -> Tensor:
    """Cross-channel pooling: ``max(E[f-1], E[f], E[f+1])`` with circular orientation index."""
    return torch.maximum(E, torch.maximum(E.roll(1, dims=1), E.roll(-1, dims=1)))


# ------------------------------------------------------------------------------------------------------ learning
def sparsify(E: np.ndarray, S: np.ndarray, suppress_radius: int = 2) -> np.ndarray:
    """Greedy dictionary building: ``(K, 3)`` int features ``(f, r, c)`` from a ``(F, H, W)`` edge map, strongest
    first, suppressing every other edge within ``suppress_radius`` (Chebyshev, all orientations)."""
    f, r, c = np.nonzero(E)
    if len(f) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    order = np.argsort(-S[f, r, c], kind="stable")
    taken = np.zeros(E.shape[1:], dtype=bool)
    out = []
    for i in order:
        if taken[r[i], c[i]]:
            continue
        out.append((f[i], r[i], c[i]))
        taken[max(0, r[i] - suppress_radius): r[i] + suppress_radius + 1,
              max(0, c[i] - suppress_radius): c[i] + suppress_radius + 1] = True
    return np.asarray(out, dtype=np.int64)


def learn_laterals(
    pos: np.ndarray, perturb_factor: float = 2.0, tolerance: float = 1.0, max_cxn_length: float = math.inf
) -> np.ndarray:
    """Lateral constraints ``(E, 3)`` int rows ``(i, j, r_ij)`` for pool centres ``pos`` ``(K, 2)``.

    Pairs are visited nearest first; a pair ``(i, j)`` at distance ``d`` gets an edge with ``r = max(1, round(d /
    perturb_factor))`` when the constraints so far allow more relative displacement between them (the shortest path
    in radii) than ``d / perturb_factor + tolerance``. Pairs in different components are always joined, so the
    graph is connected.
    """
    K = len(pos)
    if K < 2:
        return np.zeros((0, 3), dtype=np.int64)
    diff = pos[:, None, :].astype(np.float64) - pos[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    iu, ju = np.triu_indices(K, 1)
    order = np.argsort(dist[iu, ju], kind="stable")
    G = np.full((K, K), np.inf)
    np.fill_diagonal(G, 0.0)
    edges = []
    for t in order:
        i, j = iu[t], ju[t]
        d = dist[i, j]
        if d > max_cxn_length and np.isfinite(G[i, j]):
            continue
        if G[i, j] <= d / perturb_factor + tolerance:
            continue
        r = max(1, int(round(d / perturb_factor)))
        edges.append((i, j, r))
        G = np.minimum(G, np.minimum(G[:, i:i + 1] + r + G[j:j + 1, :], G[:, j:j + 1] + r + G[i:i + 1, :]))
    return np.asarray(edges, dtype=np.int64)


def spanning_tree(K: int, laterals: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(parent, radius, depth)`` of the minimum spanning tree (Euclidean length) of the lateral graph, rooted at
    feature 0; the root's parent is -1."""
    parent = np.full(K, -1, dtype=np.int64)
    radius = np.zeros(K, dtype=np.int64)
    depth = np.zeros(K, dtype=np.int64)
    if K < 2:
        return parent, radius, depth
    i, j, r = laterals.T
    length = np.sqrt(((pos[i] - pos[j]) ** 2).sum(1)) + 1e-6
    rad = {}
    for a, b, rr in zip(i, j, r):
        rad[(a, b)] = rad[(b, a)] = rr
    mst = minimum_spanning_tree(csr_matrix((length, (i, j)), shape=(K, K)))
    order, pred = breadth_first_order(mst, 0, directed=False, return_predecessors=True)
    for n in order[1:]:
        parent[n] = pred[n]
        radius[n] = rad[(n, pred[n])]
        depth[n] = depth[pred[n]] + 1
    return parent, radius, depth


# ----------------------------------------------------------------------------------------------------- inference
def _max3(x: Tensor) -> Tensor:
    """3x3 max filter over the last two dimensions, outside counting as -inf (separable shifted maxima)."""
    y = x.clone()
    torch.maximum(y[..., 1:, :], x[..., :-1, :], out=y[..., 1:, :])
    torch.maximum(y[..., :-1, :], x[..., 1:, :], out=y[..., :-1, :])
    z = y.clone()
    torch.maximum(z[..., :, 1:], y[..., :, :-1], out=z[..., :, 1:])
    torch.maximum(z[..., :, :-1], y[..., :, 1:], out=z[..., :, :-1])
    return z


def dilate(x: Tensor, radius: Tensor) -> Tensor:
    """Grey dilation of every ``(P, P)`` map in ``x`` ``(N, P, P)`` by a ``(2 r_n + 1)^2`` square (``radius`` ``(N,)``),
    outside the map counting as -inf: ``out[n, u, v] = max_{|u'-u|, |v'-v| <= r_n} x[n, u', v']`` (``r`` repeated
    3x3 maxima of shifted slices; no pooling kernel, whose CPU version also computes indices)."""
    if x.shape[0] == 0:
        return x.clone()
    rmax = min(int(radius.max()), max(x.shape[-2:]) - 1)
    rmin = int(radius.min())
    r = radius.view(-1, 1, 1)
    cur = out = x
    for s in range(1, rmax + 1):
        cur = _max3(cur)
        out = cur if s <= rmin else torch.where(r >= s, cur, out)
    return out if rmax > 0 else x.clone()


def tree_max_product(ev: Tensor, parent: Tensor, radius: Tensor, depth: Tensor, inplace: bool = False) -> Tensor:
    """Upward max-product on a forest: ``ev`` ``(B, N, P, P)`` node evidence over displacements, ``parent``,
    ``radius``, ``depth`` ``(N,)`` (parent -1 at roots). Returns the upward beliefs ``(B, N, P, P)``: a root's
    ``max`` is the MAP score of its tree. ``inplace=True`` accumulates into ``ev`` itself (saves a copy)."""
    bel = ev if inplace else ev.clone()
    B, N, P, _ = ev.shape
    for d in range(int(depth.max()) if N else 0, 0, -1):
        sel = torch.nonzero(depth == d).squeeze(1)
        msg = dilate(bel[:, sel].reshape(-1, P, P), radius[sel].repeat(B)).view(B, len(sel), P, P)
        bel.index_add_(1, parent[sel], msg)
    return bel


def _window_argmax(bel: Tensor, centre: Tensor, radius: Tensor) -> Tensor:
    """Flat argmax of every ``(P, P)`` map in ``bel`` ``(N, P, P)`` within ``radius`` of ``centre`` ``(N, 2)``."""
    P = bel.shape[-1]
    u = torch.arange(P)
    inside = ((u.view(1, P, 1) - centre[:, 0].view(-1, 1, 1)).abs() <= radius.view(-1, 1, 1)) & (
        (u.view(1, 1, P) - centre[:, 1].view(-1, 1, 1)).abs() <= radius.view(-1, 1, 1))
    return bel.masked_fill(~inside, -math.inf).flatten(1).argmax(1)


def backtrace_tree(bel: Tensor, parent: Tensor, radius: Tensor, depth: Tensor) -> Tensor:
    """Top-down Viterbi backtrace of :func:`tree_max_product`'s beliefs ``(B, N, P, P)``: the MAP displacement
    ``(B, N, 2)`` (row, col indices in the pool) of every node; roots take their argmax, children the argmax of
    their upward belief within their radius of the parent's choice."""
    B, N, P, _ = bel.shape
    out = torch.zeros(B, N, 2, dtype=torch.long)
    roots = torch.nonzero(parent < 0).squeeze(1)
    a = bel[:, roots].flatten(2).argmax(2)
    out[:, roots] = torch.stack([a // P, a % P], -1)
    for d in range(1, int(depth.max()) + 1 if N else 1):
        sel = torch.nonzero(depth == d).squeeze(1)
        centre = out[:, parent[sel]].reshape(-1, 2)
        a = _window_argmax(bel[:, sel].reshape(-1, P, P), centre, radius[sel].repeat(B)).view(B, len(sel))
        out[:, sel] = torch.stack([a // P, a % P], -1)
    return out


def loopy_max_product(ev: Tensor, src: Tensor, dst: Tensor, radius: Tensor, n_iters: int = 20,
                      damping: float = 0.5) -> Tensor:
    """Loopy max-product with parallel damped updates. ``ev`` ``(N, P, P)``; directed edges ``src -> dst`` ``(E,)``
    (both directions present, edge ``e``'s reverse at ``e ^ 1``) with ``radius``. Returns max-marginals
    ``(N, P, P)``."""
    msg = torch.zeros(src.shape[0], *ev.shape[1:])
    rev = torch.arange(src.shape[0]) ^ 1
    for _ in range(n_iters):
        bel = ev.index_add(0, dst, msg)
        new = dilate(bel[src] - msg[rev], radius)
        new = new - new.flatten(1).amax(1).view(-1, 1, 1)
        msg = damping * msg + (1 - damping) * new
    return ev.index_add(0, dst, msg)


# --------------------------------------------------------------------------------------------------------- model
class RCN(nn.Module):
    """Two-level RCN classifier; see the module docstring. Learns with :meth:`fit`, no gradients; the filter bank
    is a frozen parameter, everything learnt lives in buffers (``rates``: the fitted ``(q, b)`` of ``score="llr"``).

    Scoring and speed keywords: ``score`` ("llr", default, or "sum"), ``object_rate`` / ``background_rate`` (``q``,
    ``b``; None: estimated by :meth:`fit` from ``calib_per_class`` images per class), ``prune`` (branch and bound
    over models, exact; False scores every model), ``chunk`` (millions of pool entries per vectorised block)."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, work_size: int = 32, num_orients: int = 16,
                 sigma: float = 1.0, edge_threshold: float = 0.1, suppress_radius: int = 2, pool_radius: int = 4,
                 perturb_factor: float = 2.0, tolerance: float = 2.0, num_candidates: int = 10, n_iters: int = 0,
                 damping: float = 0.5, violation_penalty: float = 0.25, chunk: int = 2, score: str = "llr",
                 object_rate: float | None = None, background_rate: float | None = None, calib_per_class: int = 5,
                 prune: bool = True) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        for name, v in (("object_rate", object_rate), ("background_rate", background_rate)):
            if v is not None and not 0.0 < float(v) < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1, got {v}")
        if object_rate is not None and background_rate is not None and not object_rate > background_rate:
            raise ValueError(f"object_rate ({object_rate}) must exceed background_rate ({background_rate})")
        self.score, self.prune, self.calib_per_class = score, bool(prune), int(calib_per_class)
        self.object_rate = None if object_rate is None else float(object_rate)
        self.background_rate = None if background_rate is None else float(background_rate)
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)
        self.work_size, self.pool_radius, self.margin = int(work_size), int(pool_radius), 2
        self.edge_threshold, self.suppress_radius = float(edge_threshold), int(suppress_radius)
        self.perturb_factor, self.tolerance = float(perturb_factor), float(tolerance)
        self.num_candidates, self.n_iters, self.damping = int(num_candidates), int(n_iters), float(damping)
        self.violation_penalty, self.chunk = float(violation_penalty), int(chunk)
        self.filters = nn.Parameter(oriented_filters(num_orients, sigma), requires_grad=False)
        self.input_size = (self.in_chans, self.work_size, self.work_size)
        self._set_buffers(torch.zeros(0, 0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                          torch.zeros(0, 0, 3, dtype=torch.long), torch.zeros(0, 0, 3, dtype=torch.long))
        # (object_rate q, background_rate b) of the "llr" score; set by fit (calibrated or given)
        self.register_buffer("rates", torch.tensor(_SYMMETRIC_RATES))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # state dicts saved before the "llr" score have no rates: they load with the symmetric rates
        state_dict.setdefault(prefix + "rates", torch.tensor(_SYMMETRIC_RATES))
        # the learnt buffers take the saved sizes, so a fitted state dict loads into an unfitted model
        for name in ("feats", "labels", "tree", "laterals"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _set_buffers(self, feats: Tensor, labels: Tensor, tree: Tensor, laterals: Tensor) -> None:
        self.register_buffer("feats", feats)  # (M, Kmax, 3) (f, r, c) in padded coordinates, -1 padded
        self.register_buffer("labels", labels)  # (M,) class of each model
        self.register_buffer("tree", tree)  # (M, Kmax, 3) (parent, radius, depth), parent -1 at root/padding
        self.register_buffer("laterals", laterals)  # (M, Emax, 3) (i, j, r), -1 padded

    # ---------------------------------------------------------------------------------------- preprocessing
    @property
    def pad(self) -> int:
        return self.pool_radius + self.margin

    def preprocess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` images -> padded edge map and strengths ``(B, F, S + 2 pad, S + 2 pad)``."""
        x = x.detach().float().cpu()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = x.mean(1, keepdim=True)
        if x.shape[-1] != self.work_size or x.shape[-2] != self.work_size:
            x = F.interpolate(x, size=(self.work_size, self.work_size), mode="bilinear", align_corners=False,
                              antialias=True)
        x = F.pad(x, (self.pad,) * 4)
        return edge_features(x[:, 0], self.filters.detach().cpu(), self.edge_threshold)

    # ---------------------------------------------------------------------------------------------- learning
    @torch.no_grad()
    def fit(self, inputs: Tensor, targets: Tensor) -> None:
        """Build one model (features, laterals, spanning tree) per training image into the buffers."""
        E, S = self.preprocess(inputs)
        En, Sn = E.numpy(), S.numpy()
        models = []
        for n in range(len(En)):
            fr = sparsify(En[n], Sn[n], self.suppress_radius)
            lat = learn_laterals(fr[:, 1:], self.perturb_factor, self.tolerance)
            models.append((fr, lat, spanning_tree(len(fr), lat, fr[:, 1:])))
        M = len(models)
        K = max([len(m[0]) for m in models] + [1])
        Em = max([len(m[1]) for m in models] + [1])
        feats = torch.full((M, K, 3), -1, dtype=torch.long)
        tree = torch.full((M, K, 3), -1, dtype=torch.long)
        lats = torch.full((M, Em, 3), -1, dtype=torch.long)
        for m, (fr, lat, (par, rad, dep)) in enumerate(models):
            k = len(fr)
            feats[m, :k] = torch.from_numpy(fr)
            tree[m, :k] = torch.from_numpy(np.stack([par, rad, dep], 1))
            lats[m, :len(lat)] = torch.from_numpy(lat)
        self._set_buffers(feats, targets.detach().cpu().long().view(-1).clone(), tree, lats)
        self.rates = torch.tensor(self._calibrate(E), dtype=torch.float32)

    def _calibrate(self, E: Tensor) -> tuple[float, float]:
        """``(object_rate q, background_rate b)`` of the "llr" score: given ones, else estimated on the training edge
        maps ``E`` of the first ``calib_per_class`` images of every class as the mean fraction of a model's features
        that its forward MAP places on an edge, ``q`` over images of the model's class (its own image excluded) and
        ``b`` over images of other classes. An estimate that cannot be made (a class with one image: ``q``; one
        class: ``b``) falls back to ``q = 0.9`` and ``b = 0.1``, and ``q <= b`` to both; ``(0.9, 0.1)`` makes "llr" the
        "sum" score times ``log 9``."""
        q, b = self.object_rate, self.background_rate
        if self.score != "llr" or (q is not None and b is not None):
            return (q or _SYMMETRIC_RATES[0], b or _SYMMETRIC_RATES[1])
        labels = self.labels
        cal = torch.cat([torch.nonzero(labels == c).squeeze(1)[:max(1, self.calib_per_class)]
                         for c in labels.unique()])
        K = (self.feats[..., 0] >= 0).sum(1).float()
        s = self.forward_scores(self.evidence(E[cal]))  # (N, M) sum of +-1: hits - misses of the tree MAP
        hit = ((s + K) / (2 * K)).nan_to_num(0.0)  # fraction of features on an edge
        has = (K > 0).view(1, -1)
        same = (labels[cal].view(-1, 1) == labels.view(1, -1)) & (cal.view(-1, 1) != torch.arange(len(labels))) & has
        other = (labels[cal].view(-1, 1) != labels.view(1, -1)) & has
        if q is None:
            q = hit[same].mean().item() if same.any() else _SYMMETRIC_RATES[0]
        if b is None:
            b = hit[other].mean().item() if other.any() else _SYMMETRIC_RATES[1]
        eps = 1e-3
        q, b = min(max(q, eps), 1 - eps), min(max(b, eps), 1 - eps)
        return (q, b) if q > b else _SYMMETRIC_RATES

    # --------------------------------------------------------------------------------------------- inference
    def _pool_index(self, feats: Tensor, hw: tuple[int, int]) -> Tensor:
        """Flat indices ``(..., P, P)`` into a ``(F, H, W)`` map of every feature's pool (padding rows -> 0)."""
        H, W = hw
        R = self.pool_radius
        off = torch.arange(-R, R + 1)
        f, r, c = feats.clamp_min(0).unbind(-1)
        rr = (r[..., None, None] + off.view(-1, 1)).clamp(0, H - 1)
        cc = (c[..., None, None] + off.view(1, -1)).clamp(0, W - 1)
        return f[..., None, None] * (H * W) + rr * W + cc

    def evidence(self, E: Tensor) -> Tensor:
        """Test-time evidence ``2 pool_orientations(E) - 1`` ``(B, F, H, W)``."""
        return 2 * pool_orientations(E) - 1

    def llr_weights(self) -> tuple[float, float]:
        """``(a, c)``: a feature's score when its pool has an edge (``a``) and when not (``c``). "sum": ``(1, -1)``;
        "llr": ``(log(q / b), log((1 - q) / (1 - b)))`` with the fitted ``rates`` ``(q, b)``."""
        if self.score == "sum":
            return 1.0, -1.0
        q, b = (float(v) for v in self.rates)
        return math.log(q / b), math.log((1 - q) / (1 - b))

    def unary(self, ev: Tensor) -> Tensor:
        """The per-position feature scores of the configured ``score`` from the +-1 :meth:`evidence` ``ev``: ``ev``
        itself for "sum", ``c + (a - c) (ev + 1) / 2`` for "llr" (:meth:`llr_weights`)."""
        if self.score == "sum":
            return ev
        a, c = self.llr_weights()
        return c + (a - c) * (ev + 1) / 2

    def _unit(self) -> float:
        """Score of one +-1 evidence unit (half a hit's gain over a miss): scales ``violation_penalty``."""
        a, c = self.llr_weights()
        return (a - c) / 2

    def upper_bound(self, ev: Tensor) -> Tensor:
        """Cheap upper bound ``(B, M)`` of :meth:`forward_scores`: every feature at its best position in its pool,
        ignoring the laterals (``sum_k max_d e(f_k, r_k + d)``); -inf for a model without features."""
        R = self.pool_radius
        B, Fn, H, W = ev.shape
        pooled = F.max_pool2d(ev, 2 * R + 1, stride=1, padding=R).flatten(1)  # (B, F*H*W)
        f, r, c = self.feats.clamp_min(0).unbind(-1)
        valid = self.feats[..., 0] >= 0
        idx = (f * (H * W) + r.clamp(0, H - 1) * W + c.clamp(0, W - 1)).view(-1)
        out = pooled[:, idx].view(B, *f.shape).masked_fill(~valid, 0.0).sum(2)
        return out.masked_fill(~valid.any(1).view(1, -1), -math.inf)

    def pair_scores(self, ev: Tensor, b_idx: Tensor, m_idx: Tensor) -> Tensor:
        """Forward (tree max-product) scores ``(N,)`` of models ``m_idx`` on images ``b_idx`` of ``ev``
        ``(B, F, H, W)``: equal to ``forward_scores(ev)[b_idx, m_idx]``, computed only for those pairs (ordered by
        feature count), in chunks of at most about ``chunk`` million pool entries. Only real features become nodes
        (no padding), sorted by tree depth so that every level of the upward pass is one contiguous slice."""
        N = b_idx.shape[0]
        out = torch.full((N,), -math.inf)
        if N == 0:
            return out
        B, Fn, H, W = ev.shape
        P = 2 * self.pool_radius + 1
        nfeat = (self.feats[..., 0] >= 0).sum(1)
        order = nfeat[m_idx].argsort(stable=True)
        R = self.pool_radius
        # every pool as a (P, P) window view; replicate padding = the clamped indices of _pool_index
        win = F.pad(ev, (R,) * 4, mode="replicate").unfold(2, P, 1).unfold(3, P, 1)  # (B, F, H, W, P, P)
        i0 = 0
        step = max(1, self.chunk * 1_000_000 // (max(1, int(nfeat[m_idx].max())) * P * P))
        while i0 < N:
            sel = order[i0:i0 + step]
            K = max(1, int(nfeat[m_idx[sel]].max()))
            n = len(sel)
            feats, tree = self.feats[m_idx[sel], :K], self.tree[m_idx[sel], :K]
            valid = feats[..., 0] >= 0
            # nodes of valid features only, sorted by depth so that every tree level is a contiguous slice
            depth = tree[..., 2][valid]
            perm = depth.argsort(stable=True)
            pair = torch.arange(n).view(n, 1).expand(n, K)[valid][perm]
            f, r, c = (t[valid][perm] for t in feats.unbind(-1))
            depth = depth[perm]
            slot = torch.full((n, K), -1, dtype=torch.long)  # node index of (pair, feature)
            slot[valid.nonzero(as_tuple=True)] = torch.empty_like(perm).scatter_(0, perm, torch.arange(len(perm)))
            par_k = tree[..., 0][valid][perm]
            parent = torch.where(par_k >= 0, slot[pair, par_k.clamp_min(0)], -1)
            radius = tree[..., 1][valid][perm]
            bel = win[b_idx[sel][pair], f, r.clamp(0, H - 1), c.clamp(0, W - 1)]  # (nodes, P, P)
            starts = torch.searchsorted(depth, torch.arange(int(depth.max()) + 2 if len(depth) else 1)).tolist()
            for d in range(len(starts) - 2, 0, -1):
                lo, hi = starts[d], starts[d + 1]
                if hi > lo:
                    bel.index_add_(0, parent[lo:hi], dilate(bel[lo:hi], radius[lo:hi]))
            roots = slice(0, starts[1]) if len(starts) > 1 else slice(0, 0)
            out[sel] = torch.zeros(n).index_add_(0, pair[roots], bel[roots].flatten(1).amax(1))
            out[sel] = out[sel].masked_fill(~valid.any(1), -math.inf)
            i0 += n
        return out

    def pruned_forward_scores(self, ev: Tensor, num_candidates: int, round_size: int = 0) -> tuple[Tensor, Tensor]:
        """Branch and bound on :meth:`upper_bound`: ``(scores, computed)`` ``(B, M)``, the exact forward scores of
        every model that could be among the ``num_candidates`` best of its image or the best of its class, -inf
        elsewhere (``computed`` False). Models are scored best bound first, ``round_size`` per image per round
        (default ``max(2 num_candidates, 32)``), until every unscored model's bound is below both the
        ``num_candidates``-th best score so far and its class's best score (ties are scored), so the candidates
        (top ``num_candidates``, ties to the lower index) and the per-class maxima equal those of
        :meth:`forward_scores`."""
        B, M = ev.shape[0], self.feats.shape[0]
        bound = self.upper_bound(ev) + 1e-3  # slack for float summation order
        order = bound.argsort(dim=1, descending=True, stable=True)
        fwd = torch.full((B, M), -math.inf)
        done = ~torch.isfinite(bound)  # featureless models: -inf, nothing to compute
        C = min(int(num_candidates), M)
        S = int(round_size) or max(2 * C, 32)
        nc = int(self.labels.max()) + 1 if M else 0
        labels = self.labels.expand(B, -1)
        while True:
            thr = fwd.topk(C, 1).values[:, -1:] if C > 0 else torch.full((B, 1), math.inf)
            cls = torch.full((B, nc), -math.inf).scatter_reduce(1, labels, fwd, "amax").gather(1, labels)
            need = ~done & (bound >= torch.minimum(thr, cls))
            if not need.any():
                return fwd, done & torch.isfinite(bound)
            need_sorted = need.gather(1, order)
            take_sorted = need_sorted & (need_sorted.cumsum(1) <= S)
            take = torch.zeros_like(need).scatter(1, order, take_sorted)
            b_idx, m_idx = take.nonzero(as_tuple=True)
            fwd[b_idx, m_idx] = self.pair_scores(ev, b_idx, m_idx)
            done |= take

    def forward_scores(self, ev: Tensor) -> Tensor:
        """Bottom-up max-product score ``(B, M)`` of every model (tree of its laterals), in chunks of models."""
        B = ev.shape[0]
        M, K, _ = self.feats.shape
        P = 2 * self.pool_radius + 1
        flat = ev.flatten(1)
        out = torch.full((B, M), -math.inf)
        step = max(1, self.chunk * 1_000_000 // max(1, B * K * P * P))
        for m0 in range(0, M, step):
            sl = slice(m0, min(M, m0 + step))
            feats, tree = self.feats[sl], self.tree[sl]
            n = feats.shape[0]
            valid = (feats[..., 0] >= 0).reshape(-1)
            idx = self._pool_index(feats, ev.shape[-2:]).reshape(n * K, P * P)
            e = flat[:, idx].view(B, n * K, P, P).masked_fill(~valid.view(1, -1, 1, 1), 0.0)
            base = (torch.arange(n) * K).view(n, 1)
            parent = torch.where(tree[..., 0] >= 0, tree[..., 0] + base, -1).reshape(-1)
            depth = torch.where(valid, tree[..., 2].reshape(-1), -1)
            bel = tree_max_product(e, parent, tree[..., 1].reshape(-1), depth)
            roots = (parent < 0) & valid
            score = torch.zeros(B, n * K)
            score[:, roots] = bel[:, roots].flatten(2).amax(2)
            s = score.view(B, n, K).sum(2)
            has = valid.view(n, K).any(1)
            out[:, sl] = s.masked_fill(~has.view(1, n), -math.inf)
        return out

    def backtrace(self, ev: Tensor, model_idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top-down pass for models ``model_idx`` ``(B, C)`` on evidence ``ev`` ``(B, F, H, W)``.

        Returns ``(positions, score, violations)``: ``positions`` ``(B, C, K, 3)`` the explaining features
        ``(f, row, col)`` of each model at its decoded pool positions (-1 rows for padding), ``score`` ``(B, C)``
        the explained-away re-score, ``violations`` ``(B, C)`` the number of broken lateral constraints.
        """
        B, C = model_idx.shape
        K = self.feats.shape[1]
        R = self.pool_radius
        P = 2 * R + 1
        feats = self.feats[model_idx]  # (B, C, K, 3)
        tree = self.tree[model_idx]
        lats = self.laterals[model_idx]  # (B, C, Em, 3)
        valid = feats[..., 0] >= 0
        idx = self._pool_index(feats, ev.shape[-2:]).view(B, C * K, P * P)
        e = torch.gather(ev.flatten(1), 1, idx.flatten(1)).view(B * C * K, P, P)
        e = e.masked_fill(~valid.view(-1, 1, 1), 0.0)
        base = (torch.arange(B * C) * K).view(B, C, 1)
        parent = torch.where(tree[..., 0] >= 0, tree[..., 0] + base, -1).reshape(-1)
        depth = torch.where(valid, tree[..., 2], -1).reshape(-1)
        radius = tree[..., 1].reshape(-1)
        bel = tree_max_product(e.unsqueeze(0), parent, radius, depth)
        d_tree = backtrace_tree(bel, parent, radius, depth)[0]  # (N, 2)
        lv = lats[..., 0] >= 0
        li = (lats[..., 0] + base)[lv]
        lj = (lats[..., 1] + base)[lv]
        lr = lats[..., 2][lv]
        d = d_tree
        if self.n_iters > 0 and len(li):
            src = torch.stack([li, lj], 1).reshape(-1)
            dst = torch.stack([lj, li], 1).reshape(-1)
            mm = loopy_max_product(e, src, dst, lr.repeat_interleave(2), self.n_iters, self.damping)
            a = mm.flatten(1).argmax(1)
            d_bp = torch.stack([a // P, a % P], -1)
            bad = ((d_bp[li] - d_bp[lj]).abs().amax(1) > lr).long()
            cand_of_edge = li // K
            viol_bp = torch.zeros(B * C, dtype=torch.long).index_add_(0, cand_of_edge, bad)
            use_bp = (viol_bp == 0).repeat_interleave(K)
            d = torch.where(use_bp.view(-1, 1), d_bp, d_tree)
        broken = ((d[li] - d[lj]).abs().amax(1) > lr).long()
        violations = torch.zeros(B * C, dtype=torch.long).index_add_(0, li // K, broken).view(B, C)
        f, r, c = feats.unbind(-1)
        rows = r + d[:, 0].view(B, C, K) - R
        cols = c + d[:, 1].view(B, C, K) - R
        positions = torch.stack([f, rows, cols], -1).masked_fill(~valid.unsqueeze(-1), -1)
        # explaining away: an image edge location (with orientation pooling: same location) explained twice counts once
        Hh, Ww = ev.shape[-2:]
        ev_at = e.flatten(1).gather(1, (d[:, 0] * P + d[:, 1]).view(-1, 1)).view(B, C, K)
        loc = torch.where(valid, rows.clamp(0, Hh - 1) * Ww + cols.clamp(0, Ww - 1), -1)
        srt, order = loc.sort(-1)
        dup = torch.zeros_like(valid)
        dup[..., 1:] = (srt[..., 1:] == srt[..., :-1]) & (srt[..., 1:] >= 0)
        dup = torch.zeros_like(dup).scatter(-1, order, dup)
        score = ev_at.masked_fill(~valid | dup, 0.0).sum(-1) - self.violation_penalty * self._unit() * violations
        return positions, score, violations

    @torch.no_grad()
    def explain(self, x: Tensor) -> dict[str, Tensor]:
        """Full inference on ``x``: forward scores ``(B, M)`` (with ``prune=True`` -inf for the models the bound
        ruled out: neither a candidate nor their class's best), candidates ``(B, C)``, their backtraced features
        ``(B, C, K, 3)``, re-scores and the winning model ``(B,)`` with its features ``(B, K, 3)``."""
        E, _ = self.preprocess(x)
        ev = self.unary(self.evidence(E))
        C = min(self.num_candidates, self.feats.shape[0])
        if self.prune:
            fwd, _ = self.pruned_forward_scores(ev, C)
        else:
            fwd = self.forward_scores(ev)
        top, cand = fwd.sort(dim=1, descending=True, stable=True)  # ties: the lower model index first
        top, cand = top[:, :C], cand[:, :C]
        positions, score, violations = self.backtrace(ev, cand)
        score = torch.where(torch.isfinite(top), score, -math.inf)
        best = score.argmax(1)
        ar = torch.arange(len(best))
        return {"forward": fwd, "candidates": cand, "positions": positions, "scores": score,
                "violations": violations, "winner": cand[ar, best], "winner_positions": positions[ar, best],
                "edges": E}

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if self.feats.shape[0] == 0:
            return torch.zeros(B, self.num_classes, device=x.device)
        out = self.explain(x)
        fwd, cand, score = out["forward"], out["candidates"], out["scores"]
        nc = self.num_classes
        cls_fwd = torch.full((B, nc), -math.inf).scatter_reduce(1, self.labels.expand(B, -1), fwd, "amax")
        cls_bt = torch.full((B, nc), -math.inf).scatter_reduce(1, self.labels[cand], score, "amax")
        low = score.masked_fill(~torch.isfinite(score), math.inf).amin(1, keepdim=True)
        low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
        top = fwd.amax(1, keepdim=True)
        fallback = low - 1.0 + (cls_fwd - top) / (1.0 + (cls_fwd - top).abs())  # below every candidate, same order
        logits = torch.where(torch.isfinite(cls_bt), cls_bt, fallback)
        logits = torch.where(torch.isfinite(logits), logits, low - 3.0)
        return logits.to(x.device)


@register_model(family="RCN", source="hand-written (paper)", paper="George et al. 2017", staged=False)
def rcn(*, num_classes: int = 10, in_chans: int = 1, work_size: int = 32, num_orients: int = 16, sigma: float = 1.0,
        edge_threshold: float = 0.1, suppress_radius: int = 2, pool_radius: int = 4, perturb_factor: float = 2.0,
        tolerance: float = 2.0, num_candidates: int = 10, n_iters: int = 0, damping: float = 0.5,
        violation_penalty: float = 0.25, chunk: int = 2, score: str = "llr", object_rate: float | None = None,
        background_rate: float | None = None, calib_per_class: int = 5, prune: bool = True) -> RCN:
    """Recursive Cortical Network (two-level, one model per training image), learnt by ``fit`` without gradients."""
    return RCN(num_classes=num_classes, in_chans=in_chans, work_size=work_size, num_orients=num_orients, sigma=sigma,
               edge_threshold=edge_threshold, suppress_radius=suppress_radius, pool_radius=pool_radius,
               perturb_factor=perturb_factor, tolerance=tolerance, num_candidates=num_candidates, n_iters=n_iters,
               damping=damping, violation_penalty=violation_penalty, chunk=chunk, score=score,
               object_rate=object_rate, background_rate=background_rate, calib_per_class=calib_per_class,
               prune=prune)
