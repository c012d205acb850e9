"""Evaluation of a trained run: accuracy at every feedback step, robustness, attacks, TTA, MC dropout, samples.

All functions take the model, a task (:mod:`experiments.tasks`) and an :class:`~experiments.data.ImageSet`, and
return flat ``{name: value}`` dicts that the runner logs as ``test/<name>`` and writes to ``result.json``.

- :func:`evaluate`: the readout's ``loss``, ``acc``, ``hit`` and ``acc_step<t>`` for every step t (what the extra
  top-down steps bought is ``acc - acc_step1``). Under torchrun every rank scores its share of the test set and the
  sums are all-reduced, so the numbers are exact, not averages of averages.
- :func:`robustness`: the same metrics under additive Gaussian pixel noise of each std (``noise<std>/acc``) and
  under a grey square of each side length pasted at a random place (``occlusion<side>/acc``). The perturbations
  are drawn from a CPU generator seeded by (seed, batch index), so every model of an ablation sees the same
  corrupted images, on any device, whatever the batch size of other runs.
- :func:`attack_metrics`: adversarial accuracy under the attacks of :mod:`experiments.attacks` (written
  separately), attacking the whole T-step loop (``loop``: gradients through every top-down step, the readout's
  loss) and the first bottom-up pass only (``first``: the step-1 logits' loss; the adversarial images are then
  scored by the whole loop, so it measures whether feedback repairs an attack on the feedforward pass).
  Contract: ``experiments.attacks.<name>(forward, x, y, *, eps, loss_fn) -> x_adv`` with ``forward`` mapping
  images to logits.
- :func:`predict_tta` (test-time augmentation: mean softmax over the image and copies shifted by 2 pixels, plus
  mirrored copies when training used flips) and :func:`predict_mc_dropout` (mean softmax over dropout resamples,
  Gal & Ghahramani 2016, "Dropout as a Bayesian approximation", ICML), both returning log-probabilities that the
  task's metrics read like logits.
- :func:`save_predictions` keeps the test logits of a run (``predictions.pt``) so that ``feedback results`` can
  score an ensemble of seeds (mean softmax) without the models; :func:`sample_figure` draws prediction samples.

Example:
    >>> import torch, baselines
    >>> from feedback import FeedbackNet
    >>> from experiments.data import create_dataset
    >>> from experiments.tasks import create_task
    >>> data = create_dataset("digits", seed=0, image_size=32)
    >>> net = FeedbackNet(baselines.create_model("lenet5_relu", num_classes=10), "deconv", steps=2,
    ...                   input_size=(1, 32, 32))
    >>> m = evaluate(net, create_task("classify", multilabel=False), data.test, batch_size=256)
    >>> sorted(m)
    ['acc', 'acc_step1', 'acc_step2', 'hit', 'loss']
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from experiments.data import index_inputs
from experiments.data import to_device as _to
from experiments.distributed import SINGLE, DistEnv, all_gather_objects, all_reduce_sums

__all__ = [
    "attack_metrics",
    "attacks_module",
    "evaluate",
    "predict_mc_dropout",
    "predict_tta",
    "robustness",
    "sample_figure",
    "save_predictions",
]

Predict = Callable[[Tensor], tuple[Tensor, list[Tensor]]]


class Interrupted(Exception):
    """Raised inside an evaluation when the run was asked to stop (a signal): the caller checkpoints and exits."""


def _sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def _forward(model: nn.Module) -> Predict:
    def predict(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        out = model(x)
        return out.logits, out.per_step

    return predict


def evaluate(model: nn.Module, task: Any, ds: Any, *, batch_size: int, device: torch.device | str = "cpu",
             amp: Callable[[], Any] = contextlib.nullcontext,
             memory_format: torch.memory_format = torch.contiguous_format, env: DistEnv = SINGLE,
             transform: Callable[[Tensor, Tensor, int], Tensor] | None = None, predict: Predict | None = None,
             should_stop: Callable[[], bool] | None = None, limit: int | None = None,
             keep_logits: list[Tensor] | None = None) -> dict[str, float]:
    """Test metrics of the readout and of every step: ``loss``, the task's metrics (``acc``, ``hit`` for ``classify``)
    and ``<step_metric>_step<t>`` (``acc_step<t>``), plus what the task derives (``psnr`` for ``regress``).

    Args:
        transform: ``f(x, y, batch_index) -> x'`` applied to each CPU batch before the forward (corruptions,
            attacks).
        predict: ``f(x) -> (logits, per_step)`` replacing the plain forward (TTA, MC dropout).
        should_stop: polled once per batch; raises :class:`Interrupted` when it returns True.
        limit: score only the first ``limit`` test images.
        keep_logits: if given, this rank's readout logits are appended to it (CPU, float32, in test order).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    predict = predict or _forward(model)
    n_total = len(ds) if limit is None else min(limit, len(ds))
    sums: dict[str, float] = {}
    state = task.init_state() if hasattr(task, "init_state") else None  # set-level metrics (mIoU, mAP, BLEU)
    try:
        with torch.no_grad():
            for b, start in enumerate(range(0, n_total, batch_size)):
                if should_stop is not None and should_stop():
                    raise Interrupted
                idx = torch.arange(start, min(start + batch_size, n_total))
                idx = idx[env.rank :: env.world_size]
                if len(idx) == 0:
                    if keep_logits is not None:
                        keep_logits.append(None)  # type: ignore[arg-type]  # keeps batches aligned across ranks
                    if _sharded(model):  # FSDP's forward is a collective: every rank runs every batch
                        with amp():
                            predict(_to(index_inputs(ds.inputs, torch.arange(start, start + 1)), device,
                                        memory_format))
                    continue
                x, y = index_inputs(ds.inputs, idx), ds.targets[idx]
                if transform is not None:
                    x = transform(x, y, b)
                x, y = _to(x, device, memory_format), y.to(device)
                with amp():
                    logits, per_step = predict(x)
                if keep_logits is not None:
                    keep_logits.append(logits.float().cpu())
                _accumulate(sums, task, logits, per_step, y)
                if state is not None:
                    task.update(state, logits.detach().float().cpu(), y.cpu())
    finally:
        model.train(was_training)
    sums = all_reduce_sums(dict(sorted(sums.items())), env)
    n = sums.pop("n", 0.0)
    metrics = {k: v / max(n, 1.0) for k, v in sums.items()}
    if state is not None:
        if env.world_size > 1:
            state = task.merge(all_gather_objects(state, env))
        metrics.update(task.compute(state))
    return task.finalize(metrics) if hasattr(task, "finalize") else metrics


def _accumulate(sums: dict[str, float], task: Any, logits: Tensor, per_step: list[Tensor], y: Tensor) -> None:
    b = y.shape[0]
    sums["n"] = sums.get("n", 0.0) + b
    sums["loss"] = sums.get("loss", 0.0) + task.loss(logits, y).item() * b
    for k, v in task.correct(logits, y).items():
        sums[k] = sums.get(k, 0.0) + v.sum().item()
    step_metric = getattr(task, "step_metric", "acc")
    for t, lg in enumerate(per_step, start=1):
        key = f"{step_metric}_step{t}"
        sums[key] = sums.get(key, 0.0) + task.correct(lg, y)[step_metric].sum().item()


# --------------------------------------------------------------------------------------------------- corruptions


def _generator(seed: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + batch)


def gaussian_noise(std: float, seed: int = 0) -> Callable[[Tensor, Tensor, int], Tensor]:
    """A transform adding N(0, std^2) pixel noise (then clamping to [0, 1]), drawn per batch from (seed, batch)."""
    def f(x: Tensor, y: Tensor, b: int) -> Tensor:
        return (x + std * torch.randn(x.shape, generator=_generator(seed, b))).clamp(0.0, 1.0)

    return f


def occlusion(side: int, seed: int = 0, value: float = 0.5) -> Callable[[Tensor, Tensor, int], Tensor]:
    """A transform pasting a ``side`` x ``side`` square of grey ``value`` at a uniform random place per image."""
    def f(x: Tensor, y: Tensor, b: int) -> Tensor:
        n, _, h, w = x.shape
        s = min(int(side), h, w)
        g = _generator(seed, b)
        y0 = torch.randint(0, h - s + 1, (n,), generator=g)
        x0 = torch.randint(0, w - s + 1, (n,), generator=g)
        rows = torch.arange(h)[None, :, None]
        cols = torch.arange(w)[None, None, :]
        mask = ((rows >= y0[:, None, None]) & (rows < (y0 + s)[:, None, None])
                & (cols >= x0[:, None, None]) & (cols < (x0 + s)[:, None, None]))
        return torch.where(mask[:, None], torch.full_like(x, value), x)

    return f


def robustness(model: nn.Module, task: Any, ds: Any, *, noise: list[float], occlusion_sizes: list[int],
               seed: int = 0, **kw: Any) -> dict[str, float]:
    """``noise<std>/<metric>`` and ``occlusion<side>/<metric>`` for every corruption level (see :func:`evaluate`)."""
    out: dict[str, float] = {}
    for std in noise:
        m = evaluate(model, task, ds, transform=gaussian_noise(float(std), seed), **kw)
        out.update({f"noise{std:g}/{k}": v for k, v in m.items()})
    for side in occlusion_sizes:
        m = evaluate(model, task, ds, transform=occlusion(int(side), seed), **kw)
        out.update({f"occlusion{int(side)}/{k}": v for k, v in m.items()})
    return out


# --------------------------------------------------------------------------------------------------- attacks


def attacks_module() -> Any:
    """``experiments.attacks`` if it exists in this installation, else None."""
    try:
        return importlib.import_module("experiments.attacks")
    except ModuleNotFoundError as e:
        if e.name != "experiments.attacks":
            raise
        return None


def attack_metrics(model: nn.Module, task: Any, ds: Any, *, attacks: list[str], eps: list[float],
                   through: list[str], images: int, batch_size: int, device: torch.device | str = "cpu",
                   memory_format: torch.memory_format = torch.contiguous_format, env: DistEnv = SINGLE,
                   should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """``<attack>_eps<eps>_<through>/<metric>`` on the first ``images`` test images (readout of the whole loop).

    Attacks run in float32 without autocast, with the model in eval mode (so its batch-norm statistics are fixed).
    """
    mod = attacks_module()
    if mod is None:
        raise RuntimeError("eval.attacks needs experiments.attacks, which this installation does not have")
    device = torch.device(device)
    out: dict[str, float] = {}
    for name in attacks:
        fn = getattr(mod, name, None)
        if fn is None:
            raise RuntimeError(f"experiments.attacks has no attack '{name}'")
        for e in eps:
            for mode in through:
                def fwd(x: Tensor, mode: str = mode) -> Tensor:
                    o = model(x)
                    return o.logits if mode == "loop" else o.per_step[0]

                def attacked(x: Tensor, y: Tensor, b: int, fn: Any = fn, e: float = float(e), fwd: Any = fwd) -> Tensor:
                    xd, yd = _to(x, device, memory_format), y.to(device)
                    with torch.enable_grad():
                        return fn(fwd, xd, yd, eps=e, loss_fn=task.loss).detach().cpu()

                model.eval()
                m = evaluate(model, task, ds, transform=attacked, batch_size=batch_size, device=device,
                             memory_format=memory_format, env=env,
                             should_stop=should_stop, limit=images)
                out.update({f"{name}_eps{e:g}_{mode}/{k}": v for k, v in m.items()})
    return out


# --------------------------------------------------------------------------------------------------- ensembles of predictions


def _log_mean_softmax(logit_list: list[Tensor]) -> Tensor:
    probs = torch.stack([F.softmax(lg.float(), -1) for lg in logit_list]).mean(0)
    return probs.clamp_min(1e-12).log()


def predict_tta(model: nn.Module, *, shift: int = 2, hflip: bool = False) -> Predict:
    """Mean softmax over the image, its four copies shifted by ``shift`` pixels and (``hflip``) their mirrors."""
    def shifted(x: Tensor, dy: int, dx: int) -> Tensor:
        if dy == 0 and dx == 0:
            return x
        out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        if dy > 0:
            out[..., :dy, :] = 0
        elif dy < 0:
            out[..., dy:, :] = 0
        if dx > 0:
            out[..., :, :dx] = 0
        elif dx < 0:
            out[..., :, dx:] = 0
        return out

    offsets = [(0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift)]

    def predict(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        views = [shifted(x, dy, dx) for dy, dx in offsets]
        if hflip:
            views += [v.flip(-1) for v in views]
        outs = [model(v) for v in views]
        per_step = [_log_mean_softmax([o.per_step[t] for o in outs]) for t in range(len(outs[0].per_step))]
        return _log_mean_softmax([o.logits for o in outs]), per_step

    return predict


def predict_mc_dropout(model: nn.Module, samples: int) -> Predict:
    """Mean softmax over ``samples`` forward passes with dropout active (batch norm stays in eval mode)."""
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]

    def predict(x: Tensor) -> tuple[Tensor, list[Tensor]]:
        for m in drops:
            m.train()
        try:
            outs = [model(x) for _ in range(samples)]
        finally:
            for m in drops:
                m.eval()
        per_step = [_log_mean_softmax([o.per_step[t] for o in outs]) for t in range(len(outs[0].per_step))]
        return _log_mean_softmax([o.logits for o in outs]), per_step

    return predict


def has_dropout(model: nn.Module) -> bool:
    """True if ``model`` holds a dropout module with p > 0 (or a functional dropout rate, as timm's heads)."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    return any(float(getattr(m, "drop_rate", 0.0) or 0.0) > 0 for m in model.modules())


def save_predictions(path: Path, logits: Tensor, labels: Tensor) -> None:
    """Write the test-set readout logits and labels (``predictions.pt``) for ensembles at results time."""
    torch.save({"logits": logits.float().cpu(), "labels": labels.cpu()}, path)


def ensemble_metrics(paths: list[Path], task: Any) -> dict[str, float]:
    """Metrics of the mean softmax of several runs' saved test predictions (same test set, same order)."""
    preds = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    labels = preds[0]["labels"]
    for p in preds[1:]:
        if p["labels"].shape != labels.shape or not torch.equal(p["labels"], labels):
            raise ValueError("the runs' predictions are not on the same test set")
    logits = _log_mean_softmax([p["logits"] for p in preds])
    return {k: v.float().mean().item() for k, v in task.correct(logits, labels).items()}


# --------------------------------------------------------------------------------------------------- samples


def sample_figure(path: Path, images: Tensor, labels: Tensor, logits: Tensor, *, multilabel: bool,
                  class_names: list[str] | None = None) -> Path:
    """A grid of test images titled with the prediction (green if right, red if wrong); saved as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = images.shape[0]
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    names = class_names or [str(k) for k in range(logits.shape[-1])]
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].float().cpu()
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        if multilabel:
            k = int(labels[i].sum().item())
            pred = sorted(logits[i].argsort(descending=True)[:k].tolist())
            true = sorted(torch.nonzero(labels[i]).flatten().tolist())
        else:
            pred, true = [int(logits[i].argmax())], [int(labels[i])]
        ok = pred == true
        ax.set_title(",".join(names[p] for p in pred) + ("" if ok else f" ({','.join(names[t] for t in true)})"),
                     fontsize=8, color="green" if ok else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
