"""Combined top-down/bottom-up figure-ground segmentation (Borenstein & Ullman, TPAMI 2008), learnt without gradients.

Reference: E. Borenstein and S. Ullman, "Combined top-down/bottom-up segmentation", IEEE TPAMI 30(12), 2008.
Re-implemented from the equations below (no code copied); see reference/methods.md section 11.2.

Per image (``(C, H, W)`` in [0, 1]):

* **bottom-up**: Felzenszwalb-Huttenlocher segments ``s`` (:mod:`baselines.graph_segmentation`, scale ``k``), their
  region adjacency (boundary length ``L_st``, mean contrast ``c_st``) and a class-blind figure cue: the colour
  distance ``d_s`` of a segment's mean to the nearest segment that touches the image border (``d_s = 0`` for border
  segments; the border is taken to be background), thresholded, ``b_s = [d_s > tau_bu]``;
* **top-down**: the class-specific figure map ``T(p)`` of matched figure-ground fragments (:mod:`baselines.fragments`);
* **combination**: labels ``l_s in {0 ground, 1 figure}`` minimising

      E(l) = sum_s sum_{p in s} [ l_s tau (1 - T(p)) + (1 - l_s)(1 - tau) T(p) ]             (top-down, weighted L1)
           + mu sum_s |s| [ l_s (1 - b_s) + (1 - l_s) b_s ]                                  (bottom-up cue)
           + lambda sum_{s~t} L_st exp(-c_st^2 / (2 <c^2>)) [l_s != l_t]                     (do not cut weak edges)

  exactly, by an s-t minimum cut (:mod:`baselines.min_cut`); ``<c^2>`` is the image's mean squared boundary
  contrast (Boykov & Jolly 2001; Rother et al. 2004). ``tau = 1/2`` gives Borenstein & Ullman's ``sum_p |l(p) - T(p)|``.

Modes (``mode``): ``bottom_up`` labels ``l_s = b_s`` (no class knowledge); ``top_down`` labels pixels
``T(p) > tau`` (no segments); ``combined`` minimises ``E``. :meth:`TDBUSegmentation.fit` selects the fragments on the
first ``1 - tune_fraction`` of the training images and picks ``tau`` (0.1 .. 0.9), ``tau_bu`` (between observed
``d_s``), then for ``combined`` ``lambda`` x ``mu`` x ``tau`` within 0.1 of its top-down value, on the rest, by grid
search for the best mean IoU over {ground, figure}.

Deviations from the paper: bottom-up segments are one flat Felzenszwalb-Huttenlocher level with a Potts graph cut
instead of the SWA hierarchy with exact dynamic programming on the tree (the cut penalises separating adjacent
low-contrast segments, where the paper penalises splitting salient tree nodes); fragments are grey-level NCC matches
without the paper's object-position voting or its automatic figure-ground learning from unlabelled images (masks are
averaged from labelled training masks); no per-region confidence output.

Shapes: input ``(B, C, H, W)``; output logits ``(B, 2, H, W)`` (channel 0 zeros; channel 1 positive where figure:
``T - tau`` in ``top_down`` mode, +-1 otherwise). Before :meth:`fit` the output is all ground.

Example::

    >>> import torch, baselines
    >>> x = torch.zeros(8, 1, 24, 24); y = torch.zeros(8, 24, 24, dtype=torch.long)
    >>> for i in range(8):
    ...     o = 3 + i
    ...     x[i, 0, o:o + 9, o:o + 9] = 1.0; y[i, o:o + 9, o:o + 9] = 1
    ...     x[i, 0, 20, 1:4] = 1.0                                  # a distractor bar: not figure
    >>> model = baselines.create_model("tdbu_segmentation", num_classes=2, in_chans=1, num_candidates=40,
    ...                                num_fragments=8, sizes=(5, 7))
    >>> model.fit(x, y)
    >>> pred = model(x).argmax(1)
    >>> float(((pred == 1) & (y == 1)).sum() / ((pred == 1) | (y == 1)).sum()) > 0.9
    True
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ._registry import register_model
from .fragments import Fragments, select_fragments, topdown_map
from .graph_segmentation import felzenszwalb, region_adjacency, segment_stats
from .min_cut import min_cut

__all__ = ["MODES", "TDBUSegmentation", "border_contrast", "tdbu_segmentation"]

MODES = ("bottom_up", "top_down", "combined")
_TAUS = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())
_FRAGMENT_FIELDS = ("templates", "supports", "masks", "theta", "weight", "prior")


def border_contrast(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``d_s`` ``(S,)``: colour distance of each segment's mean to the nearest border segment's mean (0 on the
    border)."""
    _, mean, on_border = segment_stats(labels, image)
    border = on_border > 0
    d = np.sqrt(((mean[:, None, :] - mean[None, border, :]) ** 2).sum(-1)).min(1)
    d[border] = 0.0
    return d


def _miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean IoU over {ground, figure} of boolean arrays (classes absent from both left out)."""
    ious = []
    for p, g in ((pred, gt), (~pred, ~gt)):
        union = (p | g).sum()
        if union:
            ious.append((p & g).sum() / union)
    return float(np.mean(ious))


class TDBUSegmentation(nn.Module):
    """Borenstein & Ullman's combined segmentation (module docstring); learnt by :meth:`fit`, no gradients."""

    def __init__(self, *, num_classes: int = 2, in_chans: int = 1, mode: str = "combined", k: float = 0.5,
                 min_size: int = 4, sigma: float = 0.5, sizes: tuple[int, ...] = (7, 11), num_candidates: int = 300,
                 num_fragments: int = 40, false_alarm: float = 0.1, prior_strength: float = 1.0,
                 tune_fraction: float = 0.5, lambdas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0),
                 mus: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0), seed: int = 0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from: {', '.join(MODES)}")
        if num_classes != 2:
            raise ValueError(f"tdbu_segmentation segments figure from ground: num_classes must be 2, got {num_classes}")
        if not 0.0 < tune_fraction < 1.0:
            raise ValueError(f"tune_fraction must be in (0, 1), got {tune_fraction}")
        self.num_classes, self.in_chans, self.mode = num_classes, in_chans, mode
        self.k, self.min_size, self.sigma = float(k), int(min_size), float(sigma)
        self.sizes, self.num_candidates, self.num_fragments = tuple(int(s) for s in sizes), num_candidates, num_fragments
        self.false_alarm, self.prior_strength, self.tune_fraction = false_alarm, prior_strength, tune_fraction
        self.lambdas, self.mus, self.seed = tuple(lambdas), tuple(mus), seed
        s = max(self.sizes)
        for name, shape in (("templates", (0, 1, s, s)), ("supports", (0, 1, s, s)), ("masks", (0, 1, s, s)),
                            ("theta", (0,)), ("weight", (0,)), ("prior", ())):
            self.register_buffer(name, torch.zeros(shape))
        for name, value in (("tau", 0.5), ("tau_bu", 0.1), ("lam", 0.0), ("mu", 0.0)):
            self.register_buffer(name, torch.tensor(value))

    # ------------------------------------------------------------------ the three parts, one image at a time
    def fragments(self) -> Fragments:
        return Fragments(**{f: getattr(self, f) for f in _FRAGMENT_FIELDS})

    def bottom_up(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Segments ``(H, W)``, their adjacency, pairwise weights and border contrast ``d_s`` of one image."""
        labels = felzenszwalb(image, k=self.k, min_size=self.min_size, sigma=self.sigma)
        pairs, length, contrast = region_adjacency(labels, image)
        beta = 1.0 / (2.0 * float((contrast**2).mean())) if len(contrast) and (contrast > 0).any() else 0.0
        return {"labels": labels, "pairs": pairs, "w": length * np.exp(-beta * contrast**2),
                "d": border_contrast(labels, image), "count": np.bincount(labels.ravel())}

    def combine(self, bu: dict[str, np.ndarray], T: np.ndarray, *, tau: float, tau_bu: float, lam: float,
                mu: float) -> np.ndarray:
        """The minimum-energy figure mask ``(H, W)`` bool of the module docstring's ``E``."""
        lab = bu["labels"].ravel()
        n = len(bu["count"])
        t_sum = np.bincount(lab, weights=T.ravel(), minlength=n)
        b = (bu["d"] > tau_bu).astype(np.float64)
        u0 = (1 - tau) * t_sum + mu * bu["count"] * b
        u1 = tau * (bu["count"] - t_sum) + mu * bu["count"] * (1 - b)
        seg = min_cut(np.stack([u0, u1], 1), bu["pairs"], lam * bu["w"])
        return seg[bu["labels"]].astype(bool)

    def _label(self, bu: dict[str, np.ndarray], T: np.ndarray, mode: str, **p: float) -> np.ndarray:
        if mode == "top_down":
            return T > p["tau"]
        if mode == "bottom_up":
            return (bu["d"] > p["tau_bu"])[bu["labels"]]
        return self.combine(bu, T, **p)

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def fit(self, images: Tensor, targets: Tensor) -> None:
        """Select fragments on the first part of the training set, tune the mode's parameters on the rest.

        ``images`` ``(N, C, H, W)``; ``targets`` ``(N, H, W)``: 1 figure, 0 ground (255 / -100 count as ground)."""
        fig = targets == 1
        n = images.shape[0]
        n_tune = max(1, int(round(n * self.tune_fraction)))
        if n - n_tune < 2:
            raise ValueError(f"tdbu_segmentation.fit needs at least 3 training images, got {n}")
        frags = select_fragments(images[: n - n_tune], fig[: n - n_tune], sizes=self.sizes,
                                 num_candidates=self.num_candidates, num_fragments=self.num_fragments,
                                 false_alarm=self.false_alarm, seed=self.seed)
        for f in _FRAGMENT_FIELDS:
            setattr(self, f, getattr(frags, f).float().clone())
        x, gt = images[n - n_tune:], fig[n - n_tune:].numpy()
        T = topdown_map(x, frags, strength=self.prior_strength)[0].numpy()
        bus = [self.bottom_up(img) for img in x.double().numpy()] if self.mode != "top_down" else []
        d_all = np.concatenate([bu["d"] for bu in bus]) if bus else np.zeros(1)
        vals = np.unique(np.quantile(d_all[d_all > 0], np.linspace(0, 1, 41))) if (d_all > 0).any() else np.zeros(1)
        grid_bu = np.concatenate([[0.0], (vals[:-1] + vals[1:]) / 2])  # cuts between the observed contrasts

        def score(mode: str, **p: float) -> float:
            if mode == "top_down":
                return _miou(T > p["tau"], gt)
            return _miou(np.stack([self._label(bu, t, mode, **p) for bu, t in zip(bus, T)]), gt)

        tau = max(_TAUS, key=lambda v: score("top_down", tau=v))
        tau_bu = max(grid_bu, key=lambda v: score("bottom_up", tau_bu=v)) if bus else 0.1
        best = {"lam": 0.0, "mu": 0.0}
        if self.mode == "combined":
            taus = [t for t in _TAUS if abs(t - tau) < 0.11]  # tau again, next to the top-down optimum
            cand = [{"tau": t, "lam": lam, "mu": mu} for t in taus for lam in self.lambdas for mu in self.mus]
            best = max(cand, key=lambda c: score("combined", tau_bu=tau_bu, **c))
            tau = best["tau"]
        self.tau.fill_(float(tau))
        self.tau_bu.fill_(float(tau_bu))
        self.lam.fill_(best["lam"])
        self.mu.fill_(best["mu"])

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        out = torch.zeros(B, 2, H, W, device=x.device)
        if self.templates.shape[0] == 0:
            out[:, 1] = -1.0
            return out
        T = topdown_map(x.cpu(), self.fragments(), strength=self.prior_strength)[0]
        if self.mode == "top_down":
            out[:, 1] = (T - self.tau).to(x.device)
            return out
        p = {"tau": float(self.tau), "tau_bu": float(self.tau_bu), "lam": float(self.lam), "mu": float(self.mu)}
        labs = [self._label(self.bottom_up(img), t, self.mode, **p) for img, t in zip(x.double().cpu().numpy(),
                                                                                      T.numpy())]
        out[:, 1] = torch.from_numpy(np.stack(labs)).float().mul(2).sub(1).to(x.device)
        return out


@register_model(family="TDBU", source="hand-written (paper)", paper="Borenstein & Ullman 2008", staged=False)
def tdbu_segmentation(*, num_classes: int = 2, in_chans: int = 1, mode: str = "combined", k: float = 0.5,
                      min_size: int = 4, sigma: float = 0.5, sizes: tuple[int, ...] = (7, 11),
                      num_candidates: int = 300, num_fragments: int = 40, false_alarm: float = 0.1,
                      prior_strength: float = 1.0, tune_fraction: float = 0.5,
                      lambdas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0),
                      mus: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0), seed: int = 0) -> TDBUSegmentation:
    """Borenstein & Ullman's combined top-down/bottom-up figure-ground segmentation (``mode``: bottom_up, top_down,
    combined), learnt by ``fit`` without gradients."""
    return TDBUSegmentation(num_classes=num_classes, in_chans=in_chans, mode=mode, k=k, min_size=min_size, sigma=sigma,
                            sizes=sizes, num_candidates=num_candidates, num_fragments=num_fragments,
                            false_alarm=false_alarm, prior_strength=prior_strength, tune_fraction=tune_fraction,
                            lambdas=lambdas, mus=mus, seed=seed)
