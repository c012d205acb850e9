"""One training run, top to bottom: data, model, optimizer, the loop, evaluation, the run directory.

A run directory ``runs/<experiment>/<cell>/seed<k>/`` ends up holding:

- ``config.yaml``: the full resolved config (written first);
- ``metrics.jsonl``: one JSON line per log call, appended and flushed (the source of truth);
- ``checkpoints/last.pt``: everything needed to resume exactly (see :mod:`experiments.checkpoint`), written
  atomically every ``train.checkpoint_every`` optimizer steps, at the end of every epoch and when the run is
  stopped by a signal; it loads with ``torch.load(..., weights_only=True)``;
- ``wandb/offline-run-*``: the offline W&B mirror (unless ``log.wandb=disabled``), one directory per segment of
  a resumed run;
- ``predictions.pt`` (test logits and labels, for ensembles at results time), ``samples.png``;
- ``examples/epoch_<EEE>/*.png`` and ``examples/examples.jsonl``: a few predicted test samples drawn by the task's
  ``examples`` hook (segment, detect, caption; ``log.examples``, docs/tasks.md section 8), also logged to wandb;
- ``result.json``: the final metrics, the compute cost (parameters, FLOPs, time per step, peak memory) and the
  environment;
- ``DONE``: written last by the sweep; a sweep skips run directories that have it.

**Exact resume.** ``train_run`` on a run directory holding a checkpoint continues from it: the shuffle is a pure
function of (seed, epoch), the learning rate a pure function of the step, and the checkpoint restores the RNG
states and the position inside the epoch, so a run stopped at any step and resumed (in a fresh process) ends with
bit-identical parameters and ``metrics.jsonl`` lines on CPU (tested). A checkpoint of a different config is
refused (:class:`~experiments.config.ConfigError`) unless ``train.resume=force``; ``train.resume=never`` sets the
old directory aside (``<cell>/.attempts/``) and starts over.

**Signals.** During a run SIGTERM and SIGINT set a flag that the loop polls after every optimizer step (every
evaluation batch): the run writes a checkpoint, flushes ``metrics.jsonl``, finishes the wandb run with exit code
``128 + signum`` and raises ``SystemExit(128 + signum)``. A second signal exits at once. SIGKILL loses the steps
since the last checkpoint and nothing already in ``metrics.jsonl``.

**Many GPUs.** ``torchrun --nproc_per_node=N -m experiments.train <experiment> [key=value ...]`` runs every cell of
the experiment with DDP (see :mod:`experiments.distributed`): ``data.batch_size`` is the global batch, split evenly
over the ranks; metrics are reduced over the ranks; only rank 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from omegaconf import OmegaConf

import baselines
from experiments import routing_models as routing_models  # noqa: F401
from experiments.augment import augment_batch, is_active
from experiments.averaging import WeightAverage
from experiments.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    VERSION,
    atomic_save,
    capture_rng,
    load_checkpoint,
    restore_rng,
    set_aside,
)
from experiments.config import (
    ConfigError,
    ExperimentConfig,
    accepted_kwargs,
    config_hash,
    kwarg_names,
    run_hash,
    to_dict,
)
from experiments.data import DatasetSplits, ImageSet, SampleSet, create_dataset, dataset_builder, index_inputs
from experiments.data import to_device as _to
from experiments.distributed import (
    SINGLE,
    DistEnv,
    all_gather_objects,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    shard_batch,
)
from experiments.evaluate import (
    Interrupted,
    attack_metrics,
    evaluate,
    predict_mc_dropout,
    predict_tta,
    robustness,
    sample_figure,
    save_predictions,
)
from experiments.examples import write_examples
from experiments.fsdp import full_states, load_states, shard_model
from experiments.optim import lr_factor, lr_scales, make_optimizer
from experiments.tasks import create_task
from experiments.tracking import NullLogger, RunLogger, truncate_metrics
from feedback import FeedbackNet, PlainNet, feedback_class, feedback_cost
from feedback.cost import plain_cost

__all__ = [
    "RunStopped",
    "TrainStep",
    "WeightAverage",
    "apply_runtime",
    "build_model",
    "enable_grad_checkpointing",
    "epoch_order",
    "evaluate",
    "load_data",
    "lr_factor",
    "lr_scales",
    "main",
    "make_optimizer",
    "seed_everything",
    "select_device",
    "train_run",
]


class RunStopped(Exception):
    """The run stopped on purpose (``train.stop_after_steps``) after writing a checkpoint; it is not finished."""


# --------------------------------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str, env: DistEnv = SINGLE) -> torch.device:
    """``auto`` picks CUDA when present (``cuda:<LOCAL_RANK>`` under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", env.local_rank if env.world_size > 1 else torch.cuda.current_device())
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=auto or cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad value '{name}' for 'train.device'; choose from: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and env.world_size > 1:
        return torch.device("cuda", env.local_rank)
    return dev


def apply_runtime(cfg: ExperimentConfig) -> None:
    """Process-wide switches, set on every run (a sweep in one process must not inherit the previous run's).

    ``train.deterministic``: deterministic kernels everywhere (``CUBLAS_WORKSPACE_CONFIG=:4096:8``,
    ``torch.use_deterministic_algorithms(True, warn_only=True)``, cudnn deterministic, no cudnn autotuning); otherwise cudnn
    picks the fastest convolution algorithms (``cudnn.benchmark``), which pays off for fixed input sizes.
    """
    t = cfg.train
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(t.deterministic, warn_only=True)  # warn, not fail, on ops without one
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic


def preset_args(cfg: ExperimentConfig) -> tuple[dict[str, Any], int | None]:
    """The backbone arguments and image size of ``model.preset`` (``small``: the registry's small-input config)."""
    if cfg.model.preset != "small":
        return {}, None
    try:
        info = baselines.model_info(cfg.model.backbone)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # no registered small configuration: the default one is already small (perceptron, MLP)
    size = info.get("small_input_size") or (info.get("input_size") or (None, None, None))[-1]
    args = {k: v for k, v in dict(info.get("small") or {}).items() if k not in ("num_classes", "in_chans")}
    return args, size


def load_data(cfg: ExperimentConfig) -> DatasetSplits:
    """Build the dataset named in the config, checking its options against the builder's signature.

    With ``model.preset=small`` and no explicit ``data.options.image_size``, images are resized to the backbone's
    registered small input size (when the dataset builder takes ``image_size``).
    """
    builder = data_builder(cfg)
    options = accepted_kwargs(builder, cfg.data.options, "data.options", reserved=("seed",))
    _, size = preset_args(cfg)
    if size is not None and "image_size" not in options and "image_size" in (kwarg_names(builder) or []):
        options["image_size"] = size
    try:
        return create_dataset(cfg.data.name, seed=cfg.data.seed, **options)
    except (TypeError, ValueError, FileNotFoundError) as e:
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


def build_model(cfg: ExperimentConfig, data: DatasetSplits) -> FeedbackNet | PlainNet:
    """The backbone from ``baselines`` with the feedback kind from ``feedback`` around it.

    ``model.backbone_args`` reach the backbone builder, so switches a backbone has (timm ResNets: ``drop_rate``,
    ``drop_path_rate``, ``norm_layer``) are config switches without code here. A model without the Staged view
    (registered with ``staged=False``: sequence, set, graph and implicit models) is wrapped in
    :class:`~feedback.PlainNet` and takes no feedback kind (docs/tasks.md).
    """
    m = cfg.model
    if not baselines.model_info(m.backbone)["staged"]:
        if m.feedback != "none" or m.steps != 1:
            raise ConfigError(f"model {m.backbone} has no Staged view for feedback to attach to; use "
                              f"model.feedback=none and model.steps=1 (got {m.feedback}, {m.steps} steps)")
        bb_args = accepted_kwargs(backbone_builder(cfg), m.backbone_args, "model.backbone_args",
                                  reserved=("num_classes", "in_chans"))
        bb_args = preset_args(cfg)[0] | bb_args
        try:
            return PlainNet(baselines.create_model(m.backbone, num_classes=data.num_classes, in_chans=data.in_chans,
                                                   **bb_args))
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"model {m.backbone}: {str(e).splitlines()[0]}") from None
    fb_args = accepted_kwargs(feedback_builder(cfg), m.feedback_args, "model.feedback_args", reserved=("shapes",))
    generic = {k: v for k, v in m.backbone_args.items() if k in baselines.GENERIC_OPTIONS}  # e.g. coordconv
    bb_args = accepted_kwargs(backbone_builder(cfg), m.backbone_args, "model.backbone_args",
                              reserved=("num_classes", "in_chans"))
    bb_args = preset_args(cfg)[0] | bb_args | generic
    try:
        backbone = baselines.create_model(m.backbone, num_classes=data.num_classes, in_chans=data.in_chans, **bb_args)
        if cfg.train.sync_bn:  # before FeedbackNet collects the stage norms for its per-step statistics
            backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
        return FeedbackNet(
            backbone, m.feedback, steps=m.steps, readout=m.readout,
            input_size=(data.in_chans, data.image_size, data.image_size), feedback_kwargs=fb_args,
            norm_stats=m.norm_stats,
        )
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"model {m.backbone} + {m.feedback}: {str(e).splitlines()[0]}") from None


def _nbytes(x: Any) -> int:
    return sum(_nbytes(v) for v in x.values()) if isinstance(x, dict) else x.numel() * x.element_size()


def train_split_on_device(ds: ImageSet | SampleSet, device: torch.device, policy: str = "auto") -> Any:
    """The training split with its inputs and targets in device memory, or ``ds`` unchanged.

    Gathering a shuffled batch from CPU memory and copying it to the GPU every step costs a large share of a fast
    GPU's step (a ResNet-50 batch of 128 at 224 px is 77 MB); a dataset that fits is better gathered on the GPU.
    ``policy``: ``auto`` moves it on CUDA when it takes under a quarter of the free memory, ``always`` moves it on
    any non-CPU device, ``never`` keeps it on the host. Only inputs and targets move (boxes and masks stay).
    """
    if device.type == "cpu" or policy == "never":
        return ds
    size = _nbytes(ds.inputs) + _nbytes(ds.targets)
    if policy == "auto" and (device.type != "cuda" or size > torch.cuda.mem_get_info(device)[0] // 4):
        return ds
    if isinstance(ds, ImageSet):
        return dataclasses.replace(ds, images=ds.images.to(device), labels=ds.labels.to(device))
    return SampleSet(inputs=_to(ds.inputs, device, torch.contiguous_format), targets=ds.targets.to(device))


def fit_model(model: nn.Module, data: DatasetSplits) -> bool:
    """Fit a model that learns without gradients, if ``model`` is one; returns whether it was.

    Such a model (wrapped in :class:`~feedback.PlainNet`) has a method ``fit(inputs, targets)`` and no parameter
    that requires a gradient; everything it learns lives in buffers, so checkpoints and ``weights_only`` loading
    work as for any model. The runner calls ``fit`` on the whole training split, then evaluates it as usual.
    """
    inner = model.backbone if isinstance(model, PlainNet) else None
    fit = getattr(inner, "fit", None)
    if not callable(fit) or any(p.requires_grad for p in model.parameters()):
        return False
    fit(data.train.inputs, data.train.targets)
    return True


def make_task(cfg: ExperimentConfig, data: DatasetSplits) -> Any:
    """The dataset's task (``task: auto``), or the config's, which must then be the dataset's; and the checks that
    the config asks nothing of the data it cannot give (image augmentation and corruptions need images)."""
    name = data.task if cfg.task == "auto" else cfg.task
    if name != data.task:
        raise ConfigError(f"task {cfg.task!r} does not fit data '{cfg.data.name}', whose task is {data.task!r}; "
                          "leave task at auto")
    if not data.image_size:
        e = cfg.eval
        asked = [k for k, v in (("data.augment", is_active(**dataclasses.asdict(cfg.data.augment))),
                                ("eval.noise", e.noise), ("eval.occlusion", e.occlusion), ("eval.attacks", e.attacks),
                                ("eval.tta", e.tta)) if v]
        if asked:
            raise ConfigError(f"{', '.join(asked)} need image data; data '{cfg.data.name}' is not images "
                              "(turn them off)")
    if cfg.eval.pointing:
        if data.test.masks is None and data.test.boxes is None:
            raise ConfigError(f"eval.pointing needs a test set with masks or boxes; data '{cfg.data.name}' has "
                              "neither (use cluttered_digits)")
        from experiments.pointing import method_spec

        for spec in cfg.eval.pointing:
            try:
                method_spec(spec)
            except ValueError as e:
                raise ConfigError(f"eval.pointing: {e}") from None
    if name not in ("classify", "tokens", "regress") and is_active(**dataclasses.asdict(cfg.data.augment)):
        raise ConfigError(f"data.augment moves the images but not the {name} targets (boxes, masks); turn it off")
    if name != "classify" and cfg.eval.mc_dropout:
        raise ConfigError(f"eval.mc_dropout averages class probabilities; task {name!r} has none (set it to 0)")
    try:
        return create_task(name, multilabel=data.multilabel, multilabel_loss=cfg.train.multilabel_loss)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def epoch_order(n: int, *, seed: int, epoch: int, world_size: int = 1) -> torch.Tensor:
    """The epoch's sample order: a pure function of (seed, epoch), the same on every rank.

    Under DDP the order is padded with its first indices to a multiple of ``world_size`` (as
    ``DistributedSampler`` does), so every rank gets the same number of samples in every batch.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    pad = (-n) % world_size
    return torch.cat([order, order[:pad]]) if pad else order


def batches(ds: ImageSet | SampleSet, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
            start: int = 0) -> Iterator[tuple[Any, Any]]:
    """Mini-batches of ``(inputs, targets)`` from batch ``start`` on; the shuffle is a pure function of (seed, epoch)."""
    n = len(ds)
    order = epoch_order(n, seed=seed, epoch=epoch) if shuffle else torch.arange(n)
    for i in range(start * batch_size, n, batch_size):
        idx = order[i : i + batch_size]
        yield index_inputs(ds.inputs, idx), ds.targets[idx]


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment() -> dict[str, Any]:
    import timm

    env = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
           "platform": platform.platform(), "git": _git_sha(), "cuda": torch.cuda.is_available(),
           "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


# --------------------------------------------------------------------------------------------------- model switches


def _frozen_running_stats(module: nn.Module) -> contextlib.AbstractContextManager:
    """Batch-norm running statistics of ``module`` come out of the block as they went in."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                 for m in norms]
        try:
            yield
        finally:
            with torch.no_grad():
                for m, old in zip(norms, saved):
                    bufs = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                    for b, o in zip(bufs, old):
                        b.copy_(o)

    return ctx()


def _checkpointed_forward(forward: Callable[..., Any], module: nn.Module, *args: Any) -> Any:
    from torch.utils.checkpoint import checkpoint

    if not (module.training and torch.is_grad_enabled()):
        return forward(*args)
    calls = {"n": 0}

    def run(*a: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return forward(*a)
        # the recomputation in the backward pass: same outputs (train-mode batch norm uses batch statistics),
        # but it must not update the running statistics a second time (nor those of the wrong feedback step)
        with _frozen_running_stats(module):
            return forward(*a)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)


def enable_grad_checkpointing(model: FeedbackNet) -> int:
    """Recompute every backbone stage in the backward pass instead of storing its activations.

    Each stage module's ``forward`` is replaced (on the instance) by one that runs it under
    ``torch.utils.checkpoint`` (non-reentrant, RNG preserved, so dropout masks repeat exactly) in training mode
    with gradients on; parameter names and state dicts are unchanged. Returns the number of stages wrapped.
    """
    stages = model.backbone.stages
    for stage in stages:
        if "forward" not in stage.__dict__:
            # functools.partial over the bound method deep-copies with the module (weight averaging copies models)
            import functools

            stage.forward = functools.partial(_checkpointed_forward, stage.forward, stage)
    return len(stages)


class TrainStep:
    """One optimizer step: forward under autocast (or not), loss over the steps, backward, clip, step.

    The loss is returned as a tensor, never ``.item()``-ed here: a host sync per step costs GPU throughput, so the
    loop reads it only when it logs.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, task: Any,
                 *, amp: Callable[[], Any], supervise: str = "all", aux_weight: float = 1.0,
                 grad_clip: float = 0.0) -> None:
        self.model, self.optimizer, self.scheduler, self.scaler, self.task = model, optimizer, scheduler, scaler, task
        self.amp, self.supervise, self.aux_weight, self.grad_clip = amp, supervise, aux_weight, grad_clip
        inner = getattr(model, "module", model)  # DDP's wrapped module
        inner = getattr(inner, "_orig_mod", inner)  # torch.compile's original module
        self.pass_target = bool(getattr(inner, "takes_target", False))  # models that compute their own loss
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Any]:
        with self.amp():
            out = self.model(x, target=y) if self.pass_target else self.model(x)
            if not out.per_step:  # the model computed its own losses (feedback.PlainNet's docstring)
                loss = total = sum(out.aux_losses.values())
            else:
                if self.supervise == "all":
                    loss = torch.stack([self.task.loss(lg, y) for lg in out.per_step]).mean()
                else:
                    loss = self.task.loss(out.logits, y)
                total = loss + self.aux_weight * sum(out.aux_losses.values()) if out.aux_losses else loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach(), out


# --------------------------------------------------------------------------------------------------- signals

_STOP = {"signum": 0}


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While a run trains, SIGTERM and SIGINT ask it to stop at the next step boundary; a second one exits now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _STOP["signum"]:
            raise SystemExit(128 + signum)
        _STOP["signum"] = signum

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _STOP["signum"] = 0
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _STOP["signum"] = 0


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Ask the running loop to checkpoint and exit as if it had received ``signum`` (for tests and launchers)."""
    _STOP["signum"] = signum


# --------------------------------------------------------------------------------------------------- the run


def _reference_params(backbone: str) -> dict[str, Any] | None:
    """The backbone architecture's published parameter count against ours at that configuration (not the trained
    configuration: ``model.preset: small`` narrows it), for the paper's zoo table; ``None`` without a reference."""
    import baselines

    try:
        return baselines.check_reference(backbone)
    except Exception:  # a model that cannot build on the meta device: the run does not need this
        return None


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    import resource

    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _gather_logits(chunks: list[torch.Tensor | None], env: DistEnv) -> torch.Tensor | None:
    """Re-interleave the per-rank test logits (batch ``b``'s rows ``rank::world``) into test order on rank 0."""
    everyone = all_gather_objects(chunks, env)
    if env.world_size == 1:
        return torch.cat([c for c in chunks if c is not None]) if chunks else None
    out = []
    for b in range(len(everyone[0])):
        parts = [everyone[r][b] for r in range(env.world_size)]
        parts = [p for p in parts if p is not None]
        n = sum(p.shape[0] for p in parts)
        merged = torch.empty(n, parts[0].shape[-1])
        for r, p in enumerate(parts):
            merged[r::env.world_size] = p
        out.append(merged)
    return torch.cat(out) if out else None


def train_run(cfg: ExperimentConfig, run_dir: Path, *, cell: str, variant: dict[str, Any],
              progress_position: int = 1, env: DistEnv = SINGLE) -> dict[str, Any]:
    """Train and evaluate one configuration in ``run_dir``, resuming from its checkpoint if it has one.

    Returns:
        the result dict (also written to ``result.json``).

    Raises:
        ConfigError: a checkpoint of another config is there (and ``train.resume`` is not ``force``).
        RunStopped: ``train.stop_after_steps`` was reached (a checkpoint was written).
        SystemExit: ``128 + signum`` after SIGTERM/SIGINT (a checkpoint was written).
        FloatingPointError: the loss went NaN or infinite.
    """
    run_dir = Path(run_dir)
    t = cfg.train
    rhash = run_hash(cfg)
    if t.resume == "never" and env.is_main and run_dir.is_dir() and any(run_dir.iterdir()):
        set_aside(run_dir)
    barrier(env)
    ckpt = None
    if t.resume != "never":
        try:
            ckpt = load_checkpoint(run_dir, set_aside_unreadable=env.is_main)
        except ValueError as e:
            raise ConfigError(f"{e}; pass train.resume=never to set the run aside and start over") from None
        if ckpt is not None and ckpt.get("run_hash") != rhash and t.resume != "force":
            raise ConfigError(
                f"{run_dir} holds a checkpoint of a different config (hash {ckpt.get('run_hash')}, this config "
                f"{rhash}); pass train.resume=force (--force) to resume it anyway or train.resume=never to start over")
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    threads_before = torch.get_num_threads()  # train.threads is for this run: an in-process sweep gets it back
    apply_runtime(cfg)
    device = select_device(t.device, env)
    seed_everything(t.seed)

    data = load_data(cfg)
    task = make_task(cfg, data)
    data = dataclasses.replace(data, train=train_split_on_device(data.train, device, cfg.data.on_device))
    model = build_model(cfg, data).to(device)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if isinstance(model, PlainNet):
        cost = plain_cost(model, _to(index_inputs(data.test.inputs, torch.arange(1)), device, memory_format))
    else:
        cost = feedback_cost(model, (data.in_chans, data.image_size, data.image_size))
    if env.rank:
        torch.manual_seed(t.seed + 1_000_003 * env.rank)  # each rank its own dropout and augmentation stream

    averaged = WeightAverage(model, kind=t.average, decay=t.ema_decay) if t.average != "none" else None
    if t.grad_checkpoint:
        enable_grad_checkpointing(model)
    if t.sync_bn and env.world_size > 1 and device.type == "cpu":
        raise ConfigError("train.sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); set it to false")
    # models learnt without gradients (the Recursive Cortical Network): fit once on the training split, at every
    # start (deterministic, so a resumed run's checkpoint fits the fitted shapes), and take no optimizer steps
    fitted = fit_model(model, data)
    fsdp = t.fsdp and env.world_size > 1 and not fitted
    if fsdp:
        if t.average != "none" or cfg.eval.attacks:
            raise ConfigError("train.fsdp does not combine with train.average or eval.attacks yet; turn them off "
                              "or use DDP (train.fsdp=false)")
        shard_model(model)
    train_model: nn.Module = torch.compile(model) if t.compile else model  # compile before DDP (as timm)
    if env.world_size > 1 and not fsdp and not fitted:
        # find_unused_parameters: a feedback kind's parameters are unused at steps=1 (and may be at some steps)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)

    optimizer = make_optimizer(model, cfg)
    B = cfg.data.batch_size
    if B % env.world_size:
        raise ConfigError(f"data.batch_size={B} must be divisible by the number of processes ({env.world_size})")
    n_train = len(data.train) + (-len(data.train)) % env.world_size
    steps_per_epoch = 0 if fitted else math.ceil(n_train / B)
    total_steps = steps_per_epoch * t.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))
    amp_dtype = torch.bfloat16 if (device.type == "cpu" or t.amp_dtype == "bfloat16") else torch.float16

    def amp() -> Any:  # the autocast-or-no-op pattern
        return torch.autocast(device.type, dtype=amp_dtype) if t.amp else contextlib.nullcontext()

    scaler = torch.amp.GradScaler(device.type, enabled=t.amp and amp_dtype == torch.float16)
    step_fn = TrainStep(train_model, optimizer, scheduler, scaler, task, amp=amp, supervise=t.supervise,
                        aux_weight=t.aux_weight, grad_clip=t.grad_clip)

    step = epoch = batch_in_epoch = 0
    metrics: dict[str, float] = {}
    metrics_avg: dict[str, float] = {}
    elapsed0, segment = 0.0, 1
    if ckpt is not None:
        if bool(ckpt.get("fsdp", False)) != fsdp:
            raise ConfigError(f"{run_dir} was checkpointed with{'' if ckpt.get('fsdp') else 'out'} FSDP; resume it "
                              f"the same way (train.fsdp={str(bool(ckpt.get('fsdp'))).lower()} with torchrun)")
        load_states(model, optimizer, ckpt["model"], ckpt["optimizer"], fsdp=fsdp)
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if averaged is not None and ckpt.get("average") is not None:
            averaged.load_state_dict(ckpt["average"])
        step, epoch, batch_in_epoch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
        metrics, metrics_avg = dict(ckpt.get("metrics", {})), dict(ckpt.get("metrics_avg", {}))
        elapsed0, segment = float(ckpt.get("elapsed", 0.0)), int(ckpt.get("segment", 1)) + 1
        if env.is_main:
            truncate_metrics(run_dir / "metrics.jsonl", int(ckpt.get("metrics_offset", 0)))

    tags = [cfg.name] + [f"{k.split('.')[-1]}={v}" for k, v in variant.items()]
    full_config = to_dict(cfg) | {"cell": cell, "env": environment(), "world_size": env.world_size}
    if env.is_main:
        # the wandb id lives in the checkpoint: a resumed run continues it, a restarted one (set aside) gets a new one
        wandb_id = (ckpt or {}).get("wandb_id") or uuid.uuid4().hex[:12]
        logger: Any = RunLogger(run_dir, config=full_config, wandb_mode=cfg.log.wandb, project=cfg.log.project,
                                entity=cfg.log.entity, group=cell, name=f"{cell}/seed{t.seed}", tags=tags,
                                resume=ckpt is not None, time_offset=elapsed0, tensorboard=cfg.log.tensorboard,
                                run_id=wandb_id)
    else:
        logger = NullLogger()
    monitor = None
    if cfg.log.diagnostics:  # gradient-vanishing and dead-unit diagnostics (experiments/tools/diagnostics.py)
        from experiments.tools.diagnostics import ReLUMonitor, grad_norms

        monitor = ReLUMonitor(model)
    bar = None
    if cfg.log.progress and env.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=f"{cell[:48]} s{t.seed}", position=progress_position,
                   leave=False, dynamic_ncols=True)
    if ckpt is not None:  # last: nothing above may draw from the generators after this
        states = ckpt["rng"]
        if len(states) == env.world_size:
            restore_rng(states[env.rank])
        elif env.is_main:
            print(f"feedback: warning: {run_dir} was checkpointed with {len(states)} process(es), resumed with "
                  f"{env.world_size}: the RNG streams restart, so the resumed run is not bit-exact", file=sys.stderr)

    def save() -> None:
        rng = all_gather_objects(capture_rng(), env)
        model_state, optimizer_state = full_states(model, optimizer, fsdp=fsdp)  # FSDP: a collective
        if env.is_main:
            atomic_save({
                "version": VERSION, "model": model_state, "optimizer": optimizer_state, "fsdp": fsdp,
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "average": averaged.state_dict() if averaged is not None else None, "rng": rng,
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "run_hash": rhash,
                "config_hash": config_hash(cfg), "metrics": metrics, "metrics_avg": metrics_avg,
                "metrics_offset": logger.offset(), "elapsed": logger.elapsed(), "segment": segment,
                "world_size": env.world_size, "wandb_id": getattr(logger, "run_id", None),
            }, run_dir / CHECKPOINT, keep_previous=run_dir / PREVIOUS)
        barrier(env)

    def stop_requested() -> int:
        return all_reduce_max(_STOP["signum"], env)

    def eval_kw() -> dict[str, Any]:
        return {"batch_size": cfg.data.eval_batch_size, "device": device, "amp": amp,
                "memory_format": memory_format, "env": env,
                "should_stop": (lambda: bool(_STOP["signum"])) if env.world_size == 1 else None}

    def examples(net: nn.Module, at_epoch: int) -> None:  # predicted examples (experiments/examples.py)
        if cfg.log.examples > 0 and hasattr(task, "examples"):
            try:  # pictures for people, like the dashboard: a drawing failure must not lose the run's results
                write_examples(task, net, data.test, n=cfg.log.examples, run_dir=run_dir if env.is_main else None,
                               epoch=at_epoch, step=step, task_name=data.task, class_names=data.class_names,
                               logger=logger, device=device, amp=amp, memory_format=memory_format)
            except Exception as e:
                print(f"feedback: warning: {run_dir}: drawing examples failed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); set log.examples=0 to skip them",
                      file=sys.stderr, flush=True)

    aug = dataclasses.asdict(cfg.data.augment)
    classify = cfg.task in ("auto", "classify") and data.task == "classify"  # logits kept for ensembles and figures
    swa_first_epoch = math.floor(t.swa_start * t.epochs)
    train_seconds, timed_steps = 0.0, 0
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    exit_code = 1
    keep: list[torch.Tensor | None] = []
    try:
        with stop_signals():
            try:
                while epoch < t.epochs:
                    if batch_in_epoch < steps_per_epoch:
                        order = epoch_order(len(data.train), seed=t.seed, epoch=epoch, world_size=env.world_size)
                        model.train()
                        t0 = time.perf_counter()
                        steps_before = step
                        for b in range(batch_in_epoch, steps_per_epoch):
                            idx = shard_batch(order[b * B : (b + 1) * B], env)
                            x = _to(index_inputs(data.train.inputs, idx), device, memory_format)
                            y = data.train.targets[idx].to(device, non_blocking=True)
                            x = augment_batch(x, **aug)
                            loss, out = step_fn(x, y)
                            nonfinite |= ~torch.isfinite(loss)
                            step, batch_in_epoch = step + 1, b + 1
                            if averaged is not None and (
                                    t.average == "ema" or (b == steps_per_epoch - 1 and epoch >= swa_first_epoch)):
                                averaged.update(model)
                            log_now = step % t.log_every == 0 or step == total_steps
                            save_now = bool(t.checkpoint_every) and step % t.checkpoint_every == 0
                            stop_now = t.stop_after_steps == step and step < total_steps
                            if log_now or save_now or stop_now:
                                if bool(nonfinite):
                                    raise FloatingPointError(f"loss is not finite by step {step}; lower train.lr "
                                                             "or set train.grad_clip")
                            if log_now:
                                row = {"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0]}
                                row.update({f"train/aux/{k}": v.item() for k, v in out.aux_losses.items()})
                                if monitor is not None:  # the step's gradients are still in .grad here
                                    row.update(grad_norms(model, prefix="diag/grad_norm/"))
                                    row.update(monitor.summary(prefix="diag/"))
                                    monitor.reset()
                                row = all_reduce_mean(row, env) | {"epoch": epoch}
                                logger.log(row, step=step)
                                if bar is not None:
                                    bar.set_postfix(loss=f"{row['train/loss']:.3f}", refresh=False)
                            if bar is not None:
                                bar.update(1)
                            poll = env.world_size == 1 or log_now or save_now or b == steps_per_epoch - 1
                            signum = stop_requested() if poll else 0
                            if signum or save_now or stop_now:
                                save()
                            if signum:
                                raise _Stop(signum)
                            if stop_now:
                                raise RunStopped(f"stopped after step {step} (train.stop_after_steps); "
                                                 "rerun to resume")
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        train_seconds += time.perf_counter() - t0
                        timed_steps += step - steps_before
                    # the epoch's training is done; evaluate it
                    last = epoch == t.epochs - 1
                    keep = []
                    metrics = evaluate(model, task, data.test, keep_logits=keep if last and classify else None,
                                       **eval_kw())
                    row = {f"test/{k}": v for k, v in metrics.items()}
                    if averaged is not None and int(averaged.n_averaged) > 0:
                        if t.average == "swa":
                            averaged.recalibrate(data.train.inputs, cfg.data.eval_batch_size, device,
                                                 memory_format, amp)
                        keep = []
                        metrics_avg = evaluate(averaged.module, task, data.test,
                                               keep_logits=keep if last and classify else None,
                                               **eval_kw())
                        row.update({f"test_avg/{k}": v for k, v in metrics_avg.items()})
                    logger.log(row | {"epoch": epoch}, step=step)
                    every = cfg.log.examples_every
                    if every and not last and (epoch + 1) % every == 0:  # the last epoch's come after the final eval
                        examples(model, epoch)
                    epoch, batch_in_epoch = epoch + 1, 0
                    save()
                    signum = stop_requested()
                    if signum:
                        raise _Stop(signum)

                # training is done: the final evaluation (of the averaged weights when averaging)
                final_model = averaged.module if averaged is not None and int(averaged.n_averaged) > 0 else model
                final = dict(metrics_avg if final_model is not model else metrics)
                extras = _final_evaluation(cfg, final_model, task, data, eval_kw(),
                                           run_dir=run_dir if env.is_main else None)
                final.update(extras)
                if extras:
                    logger.log({f"test/{k}": v for k, v in extras.items()}, step=step)
                examples(final_model, t.epochs - 1)
            except Interrupted:
                save()  # the state before the interrupted evaluation: it runs again on resume
                raise _Stop(_STOP["signum"] or signal.SIGTERM) from None

        logits = _gather_logits(keep, env) if keep else None
        compute = {"train_step_ms": round(1000 * train_seconds / timed_steps, 3) if timed_steps else None,
                   "train_images_per_s": round(timed_steps * B / train_seconds, 1) if train_seconds else None,
                   "world_size": env.world_size, "device": str(device)} | _peak_memory_mb(device)
        result = {
            "experiment": cfg.name, "cell": cell, "seed": t.seed, "variant": variant,
            "metrics": final, "cost": cost, "compute": compute, "train_steps": total_steps,
            "reference": _reference_params(cfg.model.backbone),
            "time_s": round(logger.elapsed(), 2), "segments": segment, "multilabel": data.multilabel,
            "task": data.task, "primary": task.primary, "tests": list(data.tests),
            "wandb_dir": logger.wandb_dir, "env": full_config["env"],
        }
        if averaged is not None:
            result["metrics_raw"] = metrics
        if env.is_main:
            if logits is not None:
                save_predictions(run_dir / "predictions.pt", logits, data.test.targets[: logits.shape[0]])
                if cfg.eval.samples > 0 and data.image_size:
                    k = min(cfg.eval.samples, logits.shape[0])
                    path = sample_figure(run_dir / "samples.png", data.test.inputs[:k], data.test.targets[:k],
                                         logits[:k], multilabel=data.multilabel, class_names=data.class_names)
                    logger.log_image("samples", path, step=step, caption="test predictions (red: wrong)")
            logger.summary({f"test/{k}": v for k, v in final.items()}
                           | {f"compute/{k}": v for k, v in compute.items() if isinstance(v, (int, float))}
                           | {"time_s": result["time_s"]})
            (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        exit_code = 0
        return result
    except RunStopped:
        exit_code = 0  # a deliberate pause, not a failure: the wandb segment ends cleanly
        raise
    except _Stop as s:
        exit_code = 128 + s.signum
        raise SystemExit(exit_code) from None
    finally:
        if bar is not None:
            bar.close()
        if monitor is not None:
            monitor.remove()
        logger.finish(exit_code=exit_code)
        torch.set_num_threads(threads_before)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = int(signum)


def _final_evaluation(cfg: ExperimentConfig, model: nn.Module, task: Any, data: DatasetSplits,
                      kw: dict[str, Any], run_dir: Path | None = None) -> dict[str, float]:
    """The dataset's extra test sets, then robustness, attacks, TTA, MC dropout and the pointing game (whatever
    ``eval.*`` asks for), on fixed random streams. The pointing game's full report goes to
    ``<run_dir>/pointing.json``; its accuracies are ``pointing/<method>/all`` and ``.../difficult``."""
    e = cfg.eval
    out: dict[str, float] = {}
    device = kw["device"]
    for name, ds in data.tests.items():  # e.g. longer sequences, other resolutions: test/<name>/<metric>
        out.update({f"{name}/{k}": v for k, v in evaluate(model, task, ds, **kw).items()})
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.train.seed)
        if e.noise or e.occlusion:
            out.update(robustness(model, task, data.test, noise=list(e.noise), occlusion_sizes=list(e.occlusion),
                                  seed=cfg.data.seed, **kw))
        if e.attacks:
            out.update(attack_metrics(model, task, data.test, attacks=list(e.attacks), eps=list(e.eps),
                                      through=list(e.attack_through), images=e.attack_images,
                                      batch_size=kw["batch_size"], device=device, memory_format=kw["memory_format"],
                                      env=kw["env"], should_stop=kw["should_stop"]))
        if e.tta:
            m = evaluate(model, task, data.test, predict=predict_tta(model, hflip=cfg.data.augment.hflip), **kw)
            out.update({f"tta/{k}": v for k, v in m.items()})
        if e.mc_dropout > 0:
            m = evaluate(model, task, data.test, predict=predict_mc_dropout(model, e.mc_dropout), **kw)
            out.update({f"mc_dropout/{k}": v for k, v in m.items()})
        if e.pointing:
            out.update(_pointing(cfg, model, data, run_dir))
    return out


def _pointing(cfg: ExperimentConfig, model: nn.Module, data: DatasetSplits, run_dir: Path | None) -> dict[str, float]:
    from experiments.pointing import pointing_report

    e = cfg.eval
    report = pointing_report(model, data, cfg, methods=list(e.pointing), gt=e.pointing_gt,
                             max_images=e.pointing_images or None)
    if run_dir is not None:
        (Path(run_dir) / "pointing.json").write_text(json.dumps(report, indent=2))
    return {f"pointing/{m}/{k}": float(r[k]) for m, r in report["results"].items() for k in ("all", "difficult")
            if r[k] == r[k]}


# --------------------------------------------------------------------------------------------------- torchrun entry


def main(argv: Sequence[str] | None = None) -> int:
    """``torchrun --nproc_per_node=N -m experiments.train <experiment> [key=value ...]``: every cell, with DDP.

    Rank 0 decides what each run needs (skip when done, resume, set aside; the same rules and locks as
    ``feedback sweep``) and tells the other ranks; all ranks train; rank 0 writes. Also works without torchrun (one
    process).
    """
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=main.__doc__)
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--retry-failed", action="store_true", help="run cells that failed before again")
    p.add_argument("--force", action="store_true", help="resume checkpoints even if the config changed")
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    from experiments.config import load_experiment
    from experiments.distributed import broadcast_object, destroy_distributed, init_distributed
    from experiments.sweep import claim_run, expand_grid, finish_run

    overrides = list(args.overrides) + (["train.resume=force"] if args.force else [])
    try:
        cfg, grid = load_experiment(args.experiment, overrides)
        cells = expand_grid(cfg, grid)
    except ConfigError as e:
        print(f"feedback: error: {e}", file=sys.stderr)
        return 2
    env = init_distributed(device_preference=cfg.train.device)
    failed: list[str] = []
    try:
        for spec in [r for c in cells for r in c.runs]:
            claim = claim_run(spec, retry_failed=args.retry_failed) if env.is_main else None
            action = broadcast_object(claim.action if claim is not None else None, env)  # the run dir, resolved once
            if action != "run":
                if claim is not None and action == "failed":
                    failed.append(f"{spec.cell}/seed{spec.seed} (failed earlier; --retry-failed reruns it)")
                continue
            try:
                train_run(spec.cfg, spec.run_dir, cell=spec.cell, variant=spec.variant, env=env)
                if claim is not None:
                    finish_run(spec, claim, error=None)
            except (Exception, SystemExit) as e:
                if claim is not None:
                    finish_run(spec, claim, error=e)
                if isinstance(e, (SystemExit, RunStopped)):
                    raise
                failed.append(f"{spec.cell}/seed{spec.seed}: {type(e).__name__}: {e}")
                if env.world_size > 1:
                    raise  # the other ranks are in collectives that will never finish: let torchrun end them
    except RunStopped as e:
        print(f"feedback: {e}", file=sys.stderr)
        return 0
    finally:
        destroy_distributed(env)
    for f in failed:
        print(f"feedback: failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: its exception classes (RunStopped) must be the ones
    # experiments.sweep checks for, or a planned stop under torchrun is recorded as a failure
    from experiments.train import main as _main

    sys.exit(_main())
