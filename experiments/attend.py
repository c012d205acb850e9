"""Seeing what a trained run attends to: readout grids and the notes' visualisations, saved as PNG files.

``run_attend(run_dir, method, images, out_dir)`` rebuilds a trained run (its ``config.yaml`` and
``checkpoints/last.pt``, loaded with ``weights_only=True``) and writes ``attend_<method>.png``: one row per test
image with the input, the readout's map for every class present in it (overlaid on the input; maps resized to the
image on the receptive fields of their layer, see :func:`feedback.readout.resize_maps`), the point the pointing game
would take (a cross: green if it hits the class's mask within the tolerance, red if not), and the ground-truth
mask. With ``extras=True`` it also writes the visualisations listed in reference/notes.txt ("layer activations
(maybe average over channels); visualize the weights; feed a bunch of images and keep track of which activate a
neuron most; t-SNE embedding of images; occluding"):

====================  ===============================================================================
``activations.png``   every stage's output for a few images, averaged over channels
``weights.png``       the first convolution's kernels, averaged over input channels
``top_units.png``     for a few units of the last spatial stage, the test images that activate them most
``tsne.png``          t-SNE (van der Maaten & Hinton 2008, scikit-learn) of the penultimate features
``occlusion.png``     occlusion-sensitivity maps (Zeiler & Fergus 2014) of the present classes
====================  ===============================================================================

With ``wandb_mode`` "offline" or "online" the images are also logged to a W&B run in ``out_dir`` (job type
``attend``); a dashboard failure never stops the command.

The CLI form is ``feedback attend <run-dir> --method <name> [--images N] [--out DIR] [--extras]``.

Example::

    from experiments.attend import run_attend
    paths = run_attend("runs/pointing_game/backbone=resnet18_small-30f7b3/seed0", "contrastive", 8, "figures")
    # {'attend': PosixPath('figures/attend_contrastive.png')}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "first_layer_weights",
    "penultimate_features",
    "plot_activations",
    "plot_occlusion",
    "plot_readout_grid",
    "plot_top_units",
    "plot_tsne",
    "plot_weights",
    "run_attend",
    "stage_activations",
    "top_activating",
    "tsne_embedding",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _staged(model: nn.Module) -> nn.Module:
    if hasattr(model, "stages"):
        return model
    if hasattr(model, "backbone") and hasattr(model.backbone, "stages"):
        return model.backbone
    raise TypeError(f"{type(model).__name__} is not a Staged model (stem, stages, head)")


def _img(x: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> an array for imshow (grey or RGB)."""
    x = x.detach().float().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()


def _present(labels: Tensor) -> list[int]:
    return [int(labels)] if labels.dim() == 0 else [int(c) for c in (labels > 0).nonzero().flatten()]


# --------------------------------------------------------------------------------------------------- readout grid


def plot_readout_grid(model: nn.Module, ds: Any, method: str, indices: Sequence[int], path: str | Path, *,
                      class_names: Sequence[str] | None = None, layer: Any = None, **method_kwargs: Any) -> Path:
    """Rows of (input, map per present class with the pointing-game point, ground-truth mask) -> PNG.

    ``method_kwargs`` go to the readout (e.g. ``theta=`` for ``wta``, ``size=`` for ``occlusion``).
    """
    from experiments.pointing import ground_truth, is_hit, method_spec, point_of, tolerance_px

    plt = _plt()
    fn, kw = method_spec(method)
    kw.update(method_kwargs)
    if layer is not None:
        kw["layer"] = layer
    if getattr(model, "steps", None) == 1 and hasattr(model, "backbone"):
        model = model.backbone
    device = next(model.parameters()).device
    rows = [(i, _present(ds.labels[i])) for i in indices]
    ncols = 2 + max(len(c) for _, c in rows)
    H = ds.images.shape[-1]
    tol = tolerance_px(H)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, 1.9 * len(rows)), squeeze=False)
    for r, (i, classes) in enumerate(rows):
        x = ds.images[i : i + 1].to(device)
        ax = axes[r, 0]
        ax.imshow(_img(ds.images[i]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"test #{i}", fontsize=8)
        for j, c in enumerate(classes):
            m = fn(model, x, c, resize=True, **kw)[0, 0].float().cpu()
            u, v = point_of(m)
            hit = ds.masks is not None and is_hit((u, v), ground_truth(ds, i, c, gt="mask"), tolerance=tol)
            ax = axes[r, 1 + j]
            ax.imshow(_img(ds.images[i]), cmap="gray", vmin=0, vmax=1)
            ax.imshow(m.numpy(), cmap="jet", alpha=0.55)
            ax.plot([u], [v], marker="x", color="lime" if hit else "red", markersize=9, mew=2.5)
            name = class_names[c] if class_names else str(c)
            ax.set_title(f"{method} '{name}'", fontsize=8)
        if ds.masks is not None:
            axes[r, -1].imshow(ds.masks[i].numpy(), cmap="tab10", vmin=0, vmax=10, interpolation="nearest")
            axes[r, -1].set_title("ground truth", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    fig.suptitle(f"{method}: map per present class; x = arg-max (green: hit within {tol:.1f} px)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------- the notes


@torch.no_grad()
def stage_activations(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Stem and stage outputs of a Staged model for ``x``, averaged over channels: [(B, H, W) ...] (spatial only)."""
    st = _staged(model)
    was = st.training
    st.eval()
    try:
        h = st.stem(x)
        outs = [h]
        for stage in st.stages:
            h = stage(h)
            outs.append(h)
    finally:
        st.train(was)
    return [o.float().mean(1) for o in outs if o.dim() == 4]


def plot_activations(model: nn.Module, images: Tensor, path: str | Path) -> Path:
    """One row per image: the input, then every spatial stage's output averaged over channels."""
    plt = _plt()
    acts = stage_activations(model, images)
    names = ["stem"] + [f"stage {i}" for i in range(len(acts) - 1)]
    fig, axes = plt.subplots(len(images), 1 + len(acts), figsize=(1.8 * (1 + len(acts)), 1.8 * len(images)),
                             squeeze=False)
    for r in range(len(images)):
        axes[r, 0].imshow(_img(images[r]), cmap="gray", vmin=0, vmax=1)
        for j, a in enumerate(acts):
            axes[r, 1 + j].imshow(a[r].cpu().numpy(), cmap="viridis")
            if r == 0:
                axes[r, 1 + j].set_title(f"{names[j]} {tuple(a.shape[-2:])}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("activations averaged over channels", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def first_layer_weights(model: nn.Module) -> Tensor:
    """The first convolution's kernels averaged over input channels: (out_channels, kh, kw).

    Example:
        >>> first_layer_weights(nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU())).shape
        torch.Size([6, 5, 5])
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.weight.detach().float().mean(1).cpu()
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d")


def plot_weights(model: nn.Module, path: str | Path) -> Path:
    """A grid of the first layer's kernels (averaged over input channels), each on a symmetric colour scale."""
    plt = _plt()
    w = first_layer_weights(model)
    n = w.shape[0]
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            lim = float(w[k].abs().max()) or 1.0
            ax.imshow(w[k].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
            ax.axis("off")
    fig.suptitle(f"first-layer kernels {tuple(w.shape[1:])} (red +, blue -)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def top_activating(model: nn.Module, images: Tensor, *, stage: int, unit: int, k: int = 6,
                   batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Indices and values of the ``k`` images whose spatial maximum of channel ``unit`` of ``stages[stage]`` is
    largest (the "feed a bunch of images and keep track of which activate a neuron most" of the notes)."""
    st = _staged(model)
    grabbed: list[Tensor] = []
    hook = st.stages[stage].register_forward_hook(
        lambda m, i, o: grabbed.append(o[:, unit].flatten(1).amax(1) if o.dim() == 4 else o[:, unit]))
    was = st.training
    st.eval()
    try:
        for s in range(0, len(images), batch_size):
            st(images[s : s + batch_size])
    finally:
        hook.remove()
        st.train(was)
    scores = torch.cat(grabbed).float().cpu()
    vals, idx = scores.topk(min(k, len(scores)))
    return idx, vals


def plot_top_units(model: nn.Module, images: Tensor, path: str | Path, *, stage: int, units: Sequence[int],
                   k: int = 6) -> Path:
    """For each unit (a channel of ``stages[stage]``), the ``k`` images that activate it most."""
    plt = _plt()
    fig, axes = plt.subplots(len(units), k, figsize=(1.4 * k, 1.5 * len(units)), squeeze=False)
    for r, unit in enumerate(units):
        idx, vals = top_activating(model, images, stage=stage, unit=unit, k=k)
        for j in range(k):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(idx):
                ax.imshow(_img(images[int(idx[j])]), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"#{int(idx[j])} {float(vals[j]):.2f}", fontsize=7)
        axes[r, 0].set_ylabel(f"unit {unit}", fontsize=8)
    fig.suptitle(f"images that activate channels of stage {stage} most (spatial max)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def penultimate_features(model: nn.Module, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """The classifier's input (:func:`feedback.readout.find_classifier`) for every image: (N, D)."""
    from feedback.readout import find_classifier

    _, cls = find_classifier(model)
    feats: list[Tensor] = []
    hook = cls.register_forward_pre_hook(lambda m, a: feats.append(a[0].flatten(1).float().cpu()))
    was = model.training
    model.eval()
    try:
        for s in range(0, len(images), batch_size):
            model(images[s : s + batch_size])
    finally:
        hook.remove()
        model.train(was)
    return torch.cat(feats)[: len(images)]


def tsne_embedding(features: Tensor, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of (N, D) features (scikit-learn, PCA initialisation): (N, 2)."""
    from sklearn.manifold import TSNE

    n = features.shape[0]
    return TSNE(n_components=2, perplexity=min(perplexity, max(2.0, (n - 1) / 3)), init="pca",
                random_state=seed).fit_transform(features.numpy())


def plot_tsne(model: nn.Module, images: Tensor, labels: Tensor, path: str | Path, *, seed: int = 0) -> Path:
    """t-SNE of the penultimate features, one colour per class (multi-label scenes: the smallest class present,
    a ring marker for scenes with several classes)."""
    plt = _plt()
    emb = tsne_embedding(penultimate_features(model, images), seed=seed)
    if labels.dim() == 2:
        first = labels.float().argmax(1).numpy()
        multi = (labels.sum(1) > 1).numpy()
    else:
        first, multi = labels.numpy(), np.zeros(len(labels), dtype=bool)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(emb[~multi, 0], emb[~multi, 1], c=first[~multi], cmap="tab10", vmin=0, vmax=9, s=9)
    ring = plt.get_cmap("tab10")(first[multi] / 9.0)
    ax.scatter(emb[multi, 0], emb[multi, 1], s=16, marker="o", facecolors="none", edgecolors=ring, linewidths=0.9)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="class (smallest present)")
    ax.set_title("t-SNE of penultimate features (rings: several classes)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_occlusion(model: nn.Module, ds: Any, indices: Sequence[int], path: str | Path, *, size: int | None = None,
                   stride: int | None = None) -> Path:
    """Occlusion-sensitivity maps (drop of the class logit) of the classes present in each image."""
    return plot_readout_grid(model, ds, "occlusion", indices, path, size=size, stride=stride)


# --------------------------------------------------------------------------------------------------- entry


def _log_wandb(paths: dict[str, Path], out_dir: Path, mode: str, name: str) -> None:
    try:
        import wandb

        run = wandb.init(mode=mode, dir=str(out_dir), project="feedback", job_type="attend", name=name,
                         reinit=True)
        run.log({f"attend/{k}": wandb.Image(str(p)) for k, p in paths.items()})
        run.finish()
    except Exception as e:  # a dashboard failure never stops the command
        print(f"attend: wandb logging failed ({type(e).__name__}: {e}); the PNG files are written")


def run_attend(run_dir: str | Path, method: str, images: int, out_dir: str | Path, *, layer: Any = None,
               extras: bool = False, wandb_mode: str = "disabled", device: str = "cpu") -> dict[str, Path]:
    """Write the readout grid of ``method`` for the first ``images`` test images of a trained run (and, with
    ``extras``, the notes' visualisations) into ``out_dir``; return ``{name: path}``.

    Args:
        run_dir: a run directory with ``config.yaml`` and ``checkpoints/last.pt``.
        method: a readout name (``feedback.readout.METHODS``), optionally ``name@layer``.
        images: number of test images (rows).
        out_dir: where the PNG files go (created).
        layer: the map layer (overrides ``name@layer`` and the method's default).
        extras: also write activations, weights, top units, t-SNE and occlusion figures.
        wandb_mode: ``"disabled"`` (default), ``"offline"`` or ``"online"``.
        device: ``"cpu"``, ``"cuda"``, ...
    """
    from experiments.config import ConfigError
    from experiments.pointing import load_run, method_spec

    try:
        method_spec(method)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if images < 1:
        raise ConfigError(f"--images must be at least 1, got {images}")
    model, data, cfg = load_run(run_dir, device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = data.test
    n = min(int(images), len(ds))
    idx = list(range(n))
    safe = method.replace("@", "_at_").replace("/", "_")
    paths = {"attend": plot_readout_grid(model, ds, method, idx, out / f"attend_{safe}.png",
                                         class_names=data.class_names or None, layer=layer)}
    if extras:
        x = ds.images[: min(4, n)].to(device)
        paths["activations"] = plot_activations(model, x, out / "activations.png")
        paths["weights"] = plot_weights(model, out / "weights.png")
        st = _staged(model)
        spatial = [i for i, c in enumerate(getattr(st, "channels", [])) if getattr(st, "strides", [0])[i] > 0]
        stage = spatial[-1] if spatial else len(st.stages) - 1
        paths["top_units"] = plot_top_units(model, ds.images.to(device), out / "top_units.png", stage=stage,
                                            units=list(range(min(4, st.channels[stage] if hasattr(st, "channels")
                                                                 else 4))))
        paths["tsne"] = plot_tsne(model, ds.images.to(device), ds.labels, out / "tsne.png", seed=cfg.train.seed)
        paths["occlusion"] = plot_occlusion(model, ds, idx[: min(4, n)], out / "occlusion.png")
    if wandb_mode != "disabled":
        _log_wandb(paths, out, wandb_mode, f"attend/{Path(run_dir).name}/{safe}")
    return paths
