"""Recursive Cortical Network (George et al., Science 2017): a generative two-level vision model learnt without gradients.

Reference: D. George et al., "A generative vision model that trains with high data efficiency and breaks text-based
CAPTCHAs", Science 358 (2017). Re-implemented from the paper and the algorithm summary in
reference/methods.md section 10 (no code copied). Vectorised with torch (gathers, max-pool dilations, index_add).

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
3. **Forward inference** (bottom-up): the score of a model is the max-product (max-sum of log evidence)
   ``max_d sum_k e(f_k, r_k + d_k) subject to the laterals``, computed exactly on the *minimum spanning tree* of
   the lateral graph (message from j to its parent i: ``m(d_i) = max_{|d_j - d_i| <= r_ij} belief_j(d_j)``, a grey
   dilation of j's belief by a ``(2r+1)^2`` square), as the reference's forward pass.
4. **Backtracing** (top-down) for the ``num_candidates`` best models of each image: loopy max-product on the full
   lateral graph (parallel damped updates, ``n_iters``), decoded into one displacement per pool; if the decode
   breaks a lateral constraint the exact tree MAP (Viterbi backtrace from the root) is used instead, and each
   constraint still broken costs ``violation_penalty``. The candidate is re-scored by explaining away: each
   image edge location explained by several features counts once.
5. **Classification**: the class of the best re-scored candidate; the output logits ``(B, num_classes)`` are the
   best re-scored candidate per class (classes without a candidate rank below, by their forward score).

Shapes: input ``(B, C, H, W)`` in [0, 1] (channels averaged), resized to ``work_size`` and padded by the pool radius
plus a margin; output ``(B, num_classes)``. Before :meth:`RCN.fit` the output is zeros.

Deviations from the paper/reference: images are ``work_size`` (default 32) instead of 112 px, with scaled-down
pool (R=4, 9x9 instead of 25x25), suppression radius and tolerance; loopy BP runs for 20 iterations instead of 300
and a violated decode falls back to the tree MAP with a penalty instead of scoring -inf; no global translation
search beyond the pools (the reference has none either); edge filters are derivative-of-Gaussian rather than the
reference's Gabor-like filters; only the two-level model (no feature hierarchy, no CAPTCHA parser).

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
def dilate(x: Tensor, radius: Tensor) -> Tensor:
    """Grey dilation of every ``(P, P)`` map in ``x`` ``(N, P, P)`` by a ``(2 r_n + 1)^2`` square (``radius`` ``(N,)``),
    outside the map counting as -inf: ``out[n, u, v] = max_{|u'-u|, |v'-v| <= r_n} x[n, u', v']``."""
    if x.shape[0] == 0:
        return x.clone()
    cur = x.unsqueeze(1)
    r = radius.view(-1, 1, 1, 1)
    out = cur
    for s in range(1, min(int(radius.max()), max(x.shape[-2:]) - 1) + 1):
        cur = F.max_pool2d(cur, 3, stride=1, padding=1)
        out = torch.where(r >= s, cur, out)
    return out[:, 0]


def tree_max_product(ev: Tensor, parent: Tensor, radius: Tensor, depth: Tensor) -> Tensor:
    """Upward max-product on a forest: ``ev`` ``(B, N, P, P)`` node evidence over displacements, ``parent``,
    ``radius``, ``depth`` ``(N,)`` (parent -1 at roots). Returns the upward beliefs ``(B, N, P, P)``: a root's
    ``max`` is the MAP score of its tree."""
    bel = ev.clone()
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
    is a frozen parameter, everything learnt lives in buffers."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, work_size: int = 32, num_orients: int = 16,
                 sigma: float = 1.0, edge_threshold: float = 0.1, suppress_radius: int = 2, pool_radius: int = 4,
                 perturb_factor: float = 2.0, tolerance: float = 2.0, num_candidates: int = 10, n_iters: int = 0,
                 damping: float = 0.5, violation_penalty: float = 0.25, chunk: int = 8) -> None:
        super().__init__()
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
        score = ev_at.masked_fill(~valid | dup, 0.0).sum(-1) - self.violation_penalty * violations
        return positions, score, violations

    @torch.no_grad()
    def explain(self, x: Tensor) -> dict[str, Tensor]:
        """Full inference on ``x``: forward scores ``(B, M)``, candidates ``(B, C)``, their backtraced features
        ``(B, C, K, 3)``, re-scores and the winning model ``(B,)`` with its features ``(B, K, 3)``."""
        E, _ = self.preprocess(x)
        ev = self.evidence(E)
        fwd = self.forward_scores(ev)
        C = min(self.num_candidates, fwd.shape[1])
        top, cand = fwd.topk(C, dim=1)
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
        violation_penalty: float = 0.25, chunk: int = 8) -> RCN:
    """Recursive Cortical Network (two-level, one model per training image), learnt by ``fit`` without gradients."""
    return RCN(num_classes=num_classes, in_chans=in_chans, work_size=work_size, num_orients=num_orients, sigma=sigma,
               edge_threshold=edge_threshold, suppress_radius=suppress_radius, pool_radius=pool_radius,
               perturb_factor=perturb_factor, tolerance=tolerance, num_candidates=num_candidates, n_iters=n_iters,
               damping=damping, violation_penalty=violation_penalty, chunk=chunk)
