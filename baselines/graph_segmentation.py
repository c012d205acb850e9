"""Graph-based bottom-up segmentation (Felzenszwalb & Huttenlocher 2004) and the region adjacency graph of its segments.

Reference: P. F. Felzenszwalb and D. P. Huttenlocher, "Efficient graph-based image segmentation", IJCV 59(2), 2004.
Re-implemented from the paper's section 4 (no code copied; scikit-image is not a dependency).

Algorithm (:func:`felzenszwalb`): pixels are vertices; each pixel is joined to its 4 (or 8) neighbours by an edge of
weight ``w(p, q) = ||I(p) - I(q)||_2`` (over channels, after a Gaussian blur of std ``sigma`` per channel). Edges are
visited in non-decreasing weight; components ``C1 != C2`` joined by an edge of weight ``w`` are merged iff

    w <= MInt(C1, C2) = min(Int(C1) + k / |C1|, Int(C2) + k / |C2|),

where ``Int(C)`` is the largest edge weight of C's minimum spanning tree (kept by union-find: the merging edge is the
largest so far, as edges arrive sorted) and ``k`` sets the scale (larger ``k``: larger segments). A second pass over
the same sorted edges merges any component smaller than ``min_size`` with its neighbour (paper, section 4.1).

Region adjacency (:func:`region_adjacency`): for every pair of segments sharing a 4-neighbour boundary, the number of
boundary pixel pairs ``L_st`` and their mean contrast ``c_st = mean ||I(p) - I(q)||_2``.

Shapes: images are numpy ``(H, W)`` or ``(C, H, W)`` float arrays; labels ``(H, W)`` int64 in ``0 .. S - 1``,
numbered in raster order of each segment's first pixel.

Example:
    >>> import numpy as np
    >>> img = np.zeros((6, 6)); img[:, 3:] = 1.0
    >>> labels = felzenszwalb(img, k=1.0, min_size=1)
    >>> labels[0].tolist()
    [0, 0, 0, 1, 1, 1]
    >>> pairs, length, contrast = region_adjacency(labels, img)
    >>> pairs.tolist(), length.tolist(), contrast.tolist()
    ([[0, 1]], [6], [1.0])
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["felzenszwalb", "grid_edges", "region_adjacency", "segment_stats"]


def _as_chw(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    return image


def grid_edges(height: int, width: int, connectivity: int = 4) -> np.ndarray:
    """``(E, 2)`` int64 flat pixel indices of neighbour pairs: right and down (4), plus both diagonals (8)."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    idx = np.arange(height * width).reshape(height, width)
    parts = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])]
    if connectivity == 8:
        parts += [(idx[:-1, :-1], idx[1:, 1:]), (idx[:-1, 1:], idx[1:, :-1])]
    return np.concatenate([np.stack([a.ravel(), b.ravel()], 1) for a, b in parts])


def felzenszwalb(image: np.ndarray, *, k: float = 1.0, min_size: int = 4, sigma: float = 0.0,
                 connectivity: int = 4) -> np.ndarray:
    """Felzenszwalb-Huttenlocher segmentation of ``image`` (module docstring); returns ``(H, W)`` int64 labels."""
    if k < 0 or min_size < 1 or sigma < 0:
        raise ValueError(f"need k >= 0, min_size >= 1 and sigma >= 0, got k={k}, min_size={min_size}, sigma={sigma}")
    img = _as_chw(image)
    if sigma > 0:
        img = np.stack([gaussian_filter(c, sigma, mode="nearest") for c in img])
    _, h, w = img.shape
    edges = grid_edges(h, w, connectivity)
    flat = img.reshape(img.shape[0], -1)
    weight = np.sqrt(((flat[:, edges[:, 0]] - flat[:, edges[:, 1]]) ** 2).sum(0))
    order = np.argsort(weight, kind="stable")
    edges, weight = edges[order].tolist(), weight[order].tolist()

    parent = list(range(h * w))
    size = [1] * (h * w)
    internal = [0.0] * (h * w)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # path compression
            parent[a], a = root, parent[a]
        return root

    def union(a: int, b: int, wt: float) -> None:
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        internal[a] = max(internal[a], internal[b], wt)

    for (p, q), wt in zip(edges, weight):
        a, b = find(p), find(q)
        if a != b and wt <= min(internal[a] + k / size[a], internal[b] + k / size[b]):
            union(a, b, wt)
    for (p, q), wt in zip(edges, weight):  # enforce the minimum segment size
        a, b = find(p), find(q)
        if a != b and (size[a] < min_size or size[b] < min_size):
            union(a, b, wt)
    roots = np.fromiter((find(i) for i in range(h * w)), dtype=np.int64, count=h * w)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(len(first))  # raster order of each segment's first pixel
    return rank[inverse].reshape(h, w)


def region_adjacency(labels: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent segment pairs ``(E, 2)`` (``s < t``), boundary lengths ``L_st`` ``(E,)`` int64 (4-neighbour pixel pairs)
    and mean boundary contrasts ``c_st`` ``(E,)`` float64 (module docstring)."""
    img = _as_chw(image)
    h, w = labels.shape
    if img.shape[1:] != (h, w):
        raise ValueError(f"labels {labels.shape} and image {img.shape[1:]} must have the same (H, W)")
    edges = grid_edges(h, w, 4)
    lab = labels.ravel()
    a, b = lab[edges[:, 0]], lab[edges[:, 1]]
    cut = a != b
    flat = img.reshape(img.shape[0], -1)
    diff = np.sqrt(((flat[:, edges[cut, 0]] - flat[:, edges[cut, 1]]) ** 2).sum(0))
    s, t = np.minimum(a[cut], b[cut]), np.maximum(a[cut], b[cut])
    n = int(lab.max()) + 1 if lab.size else 0
    keys, inverse = np.unique(s * n + t, return_inverse=True)
    length = np.bincount(inverse, minlength=len(keys)).astype(np.int64)
    total = np.bincount(inverse, weights=diff, minlength=len(keys))
    pairs = np.stack([keys // max(n, 1), keys % max(n, 1)], 1).astype(np.int64)
    return pairs, length, total / np.maximum(length, 1)


def segment_stats(labels: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: pixel counts ``(S,)``, mean colours ``(S, C)`` and the number of its pixels on the image border
    ``(S,)``."""
    img = _as_chw(image)
    lab = labels.ravel()
    n = int(lab.max()) + 1
    count = np.bincount(lab, minlength=n)
    mean = np.stack([np.bincount(lab, weights=c.ravel(), minlength=n) for c in img], 1) / count[:, None]
    border = np.zeros(labels.shape, dtype=bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    on_border = np.bincount(labels[border], minlength=n)
    return count, mean, on_border
