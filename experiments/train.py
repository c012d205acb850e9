"""One training run, top to bottom: data, model, optimizer, the loop, evaluation, the run directory.

A run directory ``runs/<experiment>/<cell>/seed<k>/`` ends up holding:

- ``config.yaml``: the full resolved config (written first);
- ``metrics.jsonl``: one JSON line per log call, appended and flushed (the source of truth);
- ``checkpoints/last.pt``: model, optimizer, step, epoch and RNG states, written atomically (temp file +
  ``os.replace``) at the end of every epoch; it loads with ``torch.load(..., weights_only=True)``;
- ``wandb/offline-run-*``: the offline W&B mirror (unless ``log.wandb=disabled``);
- ``result.json``: the final metrics, the compute cost and the environment;
- ``DONE``: written last; a sweep skips run directories that have it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
from omegaconf import OmegaConf

import baselines
from experiments.config import ConfigError, ExperimentConfig, accepted_kwargs, to_dict
from experiments.data import DatasetSplits, ImageSet, create_dataset, dataset_builder
from experiments.tasks import create_task
from experiments.tracking import RunLogger
from feedback import FeedbackNet, feedback_class, feedback_cost

__all__ = ["build_model", "load_data", "seed_everything", "select_device", "train_run"]


# --------------------------------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad value '{name}' for 'train.device'; choose from: auto, cpu, cuda, cuda:N") from None


def load_data(cfg: ExperimentConfig) -> DatasetSplits:
    """Build the dataset named in the config, checking its options against the builder's signature."""
    options = accepted_kwargs(data_builder(cfg), cfg.data.options, "data.options", reserved=("seed",))
    try:
        return create_dataset(cfg.data.name, seed=cfg.data.seed, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"data '{cfg.data.name}': {str(e).splitlines()[0]}") from None


def data_builder(cfg: ExperimentConfig) -> Any:
    """The dataset builder named in the config (its keyword signature lists the valid ``data.options``)."""
    try:
        return dataset_builder(cfg.data.name)
    except (KeyError, ValueError) as e:
        raise ConfigError(str(e).strip("'\"")) from None


def backbone_builder(cfg: ExperimentConfig) -> Any:
    try:
        return baselines.model_entrypoint(cfg.model.backbone)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def feedback_builder(cfg: ExperimentConfig) -> Any:
    try:
        return feedback_class(cfg.model.feedback).__init__
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_model(cfg: ExperimentConfig, data: DatasetSplits) -> FeedbackNet:
    """The backbone from ``baselines`` with the feedback kind from ``feedback`` around it."""
    m = cfg.model
    fb_args = accepted_kwargs(feedback_builder(cfg), m.feedback_args, "model.feedback_args", reserved=("shapes",))
    bb_args = accepted_kwargs(backbone_builder(cfg), m.backbone_args, "model.backbone_args",
                              reserved=("num_classes", "in_chans"))
    try:
        backbone = baselines.create_model(m.backbone, num_classes=data.num_classes, in_chans=data.in_chans, **bb_args)
        return FeedbackNet(
            backbone, m.feedback, steps=m.steps, readout=m.readout,
            input_size=(data.in_chans, data.image_size, data.image_size), feedback_kwargs=fb_args,
            norm_stats=m.norm_stats,
        )
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"model {m.backbone} + {m.feedback}: {str(e).splitlines()[0]}") from None


def batches(ds: ImageSet, batch_size: int, *, shuffle: bool, seed: int, epoch: int) -> Iterator[tuple[Any, Any]]:
    """Mini-batches of ``(images, labels)``; the shuffle is a pure function of (seed, epoch)."""
    n = len(ds)
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield ds.images[idx], ds.labels[idx]


def lr_factor(step: int, total: int, cfg: ExperimentConfig) -> float:
    """The learning-rate multiplier at optimizer step ``step``: linear warm-up, then cosine to 0 or constant."""
    w = cfg.train.warmup_steps
    if w and step < w:
        return (step + 1) / w
    if cfg.train.schedule == "constant":
        return 1.0
    progress = (step - w) / max(1, total - w)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    t = cfg.train
    # no weight decay on biases and norm parameters (1-D tensors), the usual timm/nanoGPT practice
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=t.lr)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment() -> dict[str, Any]:
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "platform": platform.platform(), "git": _git_sha(), "cuda": torch.cuda.is_available()}


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state = {"python": list(random.getstate()[1]), "torch": torch.get_rng_state(),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


# --------------------------------------------------------------------------------------------------- loop


def _to(x: torch.Tensor, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """Move a batch to the device, in channels_last when asked and the batch is an image batch (4-D)."""
    if x.dim() == 4:
        return x.to(device, non_blocking=True, memory_format=memory_format)
    return x.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: FeedbackNet, task: Any, ds: ImageSet, cfg: ExperimentConfig, device: torch.device,
             amp: Any, memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Test metrics of the readout and of every step: ``acc``, ``hit``, ``loss``, ``acc_step<t>``."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for x, y in batches(ds, cfg.data.eval_batch_size, shuffle=False, seed=0, epoch=0):
        x, y = _to(x, device, memory_format), y.to(device)
        with amp():
            out = model(x)
        b = x.shape[0]
        n += b
        sums["loss"] = sums.get("loss", 0.0) + task.loss(out.logits, y).item() * b
        for k, v in task.correct(out.logits, y).items():
            sums[k] = sums.get(k, 0.0) + v.sum().item()
        for t, logits in enumerate(out.per_step, start=1):
            sums[f"acc_step{t}"] = sums.get(f"acc_step{t}", 0.0) + task.correct(logits, y)["acc"].sum().item()
    model.train()
    return {k: v / n for k, v in sums.items()}


def train_run(cfg: ExperimentConfig, run_dir: Path, *, cell: str, variant: dict[str, Any],
              progress_position: int = 1) -> dict[str, Any]:
    """Train and evaluate one configuration in ``run_dir`` (created if needed); return the result dict."""
    t_start = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    seed_everything(cfg.train.seed)

    data = load_data(cfg)
    task = create_task(cfg.task, multilabel=data.multilabel, multilabel_loss=cfg.train.multilabel_loss)
    model = build_model(cfg, data).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    input_size = (data.in_chans, data.image_size, data.image_size)
    cost = feedback_cost(model, input_size)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.data.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))

    amp_dtype = torch.bfloat16 if (device.type == "cpu" or cfg.train.amp_dtype == "bfloat16") else torch.float16
    def amp() -> Any:  # noqa: E306 - the autocast-or-no-op pattern
        return torch.autocast(device.type, dtype=amp_dtype) if cfg.train.amp else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp and amp_dtype == torch.float16)

    tags = [cfg.name] + [f"{k.split('.')[-1]}={v}" for k, v in variant.items()]
    full_config = to_dict(cfg) | {"cell": cell, "env": environment()}
    logger = RunLogger(run_dir, config=full_config, wandb_mode=cfg.log.wandb, project=cfg.log.project,
                       entity=cfg.log.entity, group=cell, name=f"{cell}/seed{cfg.train.seed}", tags=tags)
    bar = None
    if cfg.log.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc=f"{cell[:48]} s{cfg.train.seed}", position=progress_position,
                   leave=False, dynamic_ncols=True)
    exit_code = 1
    try:
        step = 0
        model.train()
        metrics: dict[str, float] = {}
        for epoch in range(cfg.train.epochs):
            for x, y in batches(data.train, cfg.data.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch):
                x, y = _to(x, device, memory_format), y.to(device, non_blocking=True)
                with amp():
                    out = model(x)
                    if cfg.train.supervise == "all":
                        loss = torch.stack([task.loss(lg, y) for lg in out.per_step]).mean()
                    else:
                        loss = task.loss(out.logits, y)
                    aux = sum(out.aux_losses.values()) if out.aux_losses else None
                    total = loss + cfg.train.aux_weight * aux if aux is not None else loss
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if cfg.train.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower train.lr or enable grad_clip")
                if step % cfg.train.log_every == 0 or step == total_steps:
                    row = {"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0], "epoch": epoch}
                    for k, v in out.aux_losses.items():
                        row[f"train/aux/{k}"] = v.item()
                    logger.log(row, step=step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            metrics = evaluate(model, task, data.test, cfg, device, amp, memory_format)
            logger.log({f"test/{k}": v for k, v in metrics.items()} | {"epoch": epoch}, step=step)
            _atomic_save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                 "step": step, "rng": _rng_state()},
                run_dir / "checkpoints" / "last.pt",
            )
        elapsed = time.time() - t_start
        result = {
            "experiment": cfg.name, "cell": cell, "seed": cfg.train.seed, "variant": variant,
            "metrics": metrics, "cost": cost, "train_steps": total_steps, "time_s": round(elapsed, 2),
            "multilabel": data.multilabel, "wandb_dir": logger.wandb_dir, "env": full_config["env"],
        }
        logger.summary({f"test/{k}": v for k, v in metrics.items()} | {"time_s": elapsed})
        (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        exit_code = 0
        return result
    finally:
        if bar is not None:
            bar.close()
        logger.finish(exit_code=exit_code)
