"""Typed experiment configs: a dataclass schema, YAML files, ``key=value`` overrides and a grid.

An experiment is ``experiments/configs/<name>.yaml`` (or a path to a YAML file). Its keys mirror
:class:`ExperimentConfig`; a top-level ``grid:`` maps dotted keys to lists of values and expands into cells.
On the command line ``train.lr=0.01`` overrides a key and ``model.steps=1,3`` (a comma outside brackets) makes
or replaces a grid axis, as in Hydra's multirun syntax.

Merging and type conversion are done by OmegaConf structured configs. Before OmegaConf sees anything, every key
of the file and of the command line is checked against the schema, so a typo is an error that names the key and
suggests the closest valid one (Hydra silently merges typos inside YAML files; we don't). All errors raised here
are :class:`ConfigError`, whose message is one line meant for the user.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "ConfigError",
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LogConfig",
    "ModelConfig",
    "RUNTIME_KEYS",
    "TrainConfig",
    "accepted_kwargs",
    "check_kwargs",
    "check_kwargs_used",
    "config_hash",
    "run_hash",
    "list_experiments",
    "load_experiment",
    "parse_overrides",
    "to_dict",
]


class ConfigError(ValueError):
    """A user-facing configuration error; its message is a single line."""


# --------------------------------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    backbone: str = "lenet5"  # a name from `feedback list models`
    backbone_args: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the backbone builder
    feedback: str = "none"  # a name from `feedback list feedback`
    feedback_args: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the feedback kind
    steps: int = 1  # bottom-up passes T; steps=1 is the backbone exactly
    readout: str = "last"  # "last" step's logits or the "mean" over steps
    norm_stats: str = "per_step"  # batch-norm running statistics per step ("per_step") or one set ("shared")
    preset: str = "default"  # "small": the backbone's registered small-input configuration and image size


@dataclass
class AugmentConfig:
    """Training-time augmentation, applied per batch on the device (see experiments/augment.py); all off by default."""

    rotate: float = 0.0  # maximum rotation in degrees (uniform in [-rotate, rotate])
    shift: float = 0.0  # maximum translation in pixels (uniform per axis)
    scale: float = 0.0  # maximum relative zoom (uniform in [1 - scale, 1 + scale])
    hflip: bool = False  # random horizontal flips (wrong for digits; right for natural images)
    color: float = 0.0  # recolouring strength: random brightness, contrast and (RGB) per-channel gains
    noise: float = 0.0  # std of additive Gaussian pixel noise


@dataclass
class DataConfig:
    name: str = "digits"  # a name from `feedback list datasets`
    seed: int = 0  # the data seed, fixed across training seeds so seeds differ only in training
    options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the dataset builder
    batch_size: int = 64  # the global batch: under torchrun every rank takes batch_size / world_size of it
    eval_batch_size: int = 256
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # auto: on a GPU, keep the training split in GPU memory (batches gathered there, no host copy per step) when it
    # takes under a quarter of the free memory; always | never
    on_device: str = "auto"


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 5
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | constant; a pure function of the global step
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 disables clipping
    supervise: str = "all"  # "all": mean loss over every step's logits; "readout": loss on the readout only
    multilabel_loss: str = "softmax"  # multi-label data: "softmax" (CE to the normalised multi-hot) | "bce"
    aux_weight: float = 1.0  # weight of the feedback kind's auxiliary losses
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # autocast; bfloat16 on CPU, the amp_dtype on CUDA (float16 gets a GradScaler)
    amp_dtype: str = "bfloat16"  # bfloat16 | float16
    channels_last: bool = False  # NHWC memory format for model and inputs (faster convolutions on CPU and GPU)
    compile: bool = False  # torch.compile the model for training (before DDP wrapping)
    # under torchrun: shard parameters, gradients and optimizer state over the ranks (FSDP2 `fully_shard`, one unit
    # per backbone stage, the stem, the head and the feedback kind) instead of replicating them (DDP)
    fsdp: bool = False
    sync_bn: bool = False  # under torchrun on GPUs: batch-norm statistics over the whole global batch (SyncBatchNorm)
    deterministic: bool = False  # deterministic kernels (CUBLAS_WORKSPACE_CONFIG, cudnn); else cudnn.benchmark on CUDA
    grad_checkpoint: bool = False  # recompute every stage in the backward pass (torch.utils.checkpoint): less memory
    average: str = "none"  # weight averaging: none | ema (exponential moving average) | swa (stochastic weight averaging)
    ema_decay: float = 0.999  # average=ema: decay per optimizer step
    swa_start: float = 0.75  # average=swa: fraction of the epochs after which each epoch's weights join the average
    log_every: int = 10  # optimizer steps between train-metric lines
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: only at the end of every epoch)
    stop_after_steps: int = 0  # stop (checkpoint, exit without DONE) after this many global steps; 0 never
    resume: str = "auto"  # auto: resume from checkpoints/last.pt if its config matches, refuse if it differs;
    #                       force: resume even if the config changed; never: set the old run aside and start over


@dataclass
class EvalConfig:
    """Evaluation beyond clean test accuracy, run once at the end of training (see experiments/evaluate.py)."""

    noise: List[float] = field(default_factory=list)  # Gaussian pixel-noise stds, e.g. [0.1, 0.3]
    occlusion: List[int] = field(default_factory=list)  # side lengths in pixels of a random grey occluding square
    attacks: List[str] = field(default_factory=list)  # fgsm | pgd | ... (experiments.attacks)
    eps: List[float] = field(default_factory=lambda: [0.03])  # attack budgets (L-inf, images in [0, 1])
    attack_through: List[str] = field(default_factory=lambda: ["loop", "first"])  # the whole T-step loop, first pass only
    attack_images: int = 256  # test images attacked (attacks are costly)
    tta: bool = False  # test-time augmentation: average softmax over shifted (and, with hflip, flipped) copies
    mc_dropout: int = 0  # average softmax over this many dropout resamples (0: off)
    samples: int = 16  # prediction samples drawn as an image (samples.png and wandb); 0: none
    # the pointing game (experiments/pointing.py) with these readouts, e.g. [centre, gradient, excitation,
    # contrastive, wta] ("name@layer" picks the map layer); needs a dataset with masks or boxes (cluttered_digits)
    pointing: List[str] = field(default_factory=list)
    pointing_gt: str = "mask"  # mask | box
    pointing_images: int = 0  # test images played (0: all)


@dataclass
class LogConfig:
    wandb: str = "offline"  # offline (default, sync later with `wandb sync`) | online | disabled
    project: str = "feedback"
    entity: Optional[str] = None
    progress: bool = True  # progress bars per sweep and per run
    tensorboard: bool = False  # also write TensorBoard event files to <run_dir>/tb (needs the tensorboard package)
    diagnostics: bool = False  # per-module gradient norms and dead/zero ReLU shares at every log step (diag/*)
    examples: int = 4  # test samples drawn by the task's examples hook (segment, detect, caption) after the final
    # evaluation, into <run_dir>/examples/ and wandb (experiments/examples.py); 0: none; tasks without the hook: none
    examples_every: int = 0  # also draw them after every this many epochs (0: only after the final evaluation)


@dataclass
class ExperimentConfig:
    name: str = ""  # the experiment name; defaults to the YAML file's stem
    description: str = ""
    task: str = "auto"  # the dataset's task (classify, tokens, regress: docs/tasks.md); set it only to assert one
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("auto", "classify", "tokens", "regress", "detect", "segment", "caption"),
    "model.readout": ("last", "mean"),
    "data.on_device": ("auto", "always", "never"),
    "eval.pointing_gt": ("mask", "box"),
    "model.norm_stats": ("per_step", "shared"),
    "model.preset": ("default", "small"),
    "train.optimizer": ("adamw", "sgd"),
    "train.schedule": ("cosine", "constant"),
    "train.supervise": ("all", "readout"),
    "train.multilabel_loss": ("softmax", "bce"),
    "train.amp_dtype": ("bfloat16", "float16"),
    "train.average": ("none", "ema", "swa"),
    "train.resume": ("auto", "force", "never"),
    "log.wandb": ("offline", "online", "disabled"),
}
# dict-valued fields: free keys below them, checked later against the builder's signature
FREE_DICTS = ("model.backbone_args", "model.feedback_args", "data.options")


# --------------------------------------------------------------------------------------------------- helpers


def _suggest(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _schema_fields(cls: type) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_keys(data: Any, cls: type, prefix: str, where: str) -> None:
    """Raise ConfigError for the first key in ``data`` that is not in the dataclass ``cls`` (recursively)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    fields = _schema_fields(cls)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            valid = sorted(fields)
            raise ConfigError(
                f"{where}: unknown key '{full}'{_suggest(str(key), valid, prefix)}; valid keys"
                f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(valid)}"
            )
        sub = fields[key].type
        sub_cls = {"ModelConfig": ModelConfig, "DataConfig": DataConfig, "TrainConfig": TrainConfig,
                   "LogConfig": LogConfig, "EvalConfig": EvalConfig, "AugmentConfig": AugmentConfig,
                   }.get(sub if isinstance(sub, str) else getattr(sub, "__name__", ""))
        if sub_cls is not None:
            _check_keys(value, sub_cls, f"{full}.", where)


def _key_path_valid(key: str, where: str) -> None:
    """Check a dotted key from the command line or a grid against the schema."""
    parts = key.split(".")
    for free in FREE_DICTS:
        if key.startswith(free + "."):
            _key_path_valid(free, where)
            return
    nested: dict = {}
    cur = nested
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = None
    _check_keys(nested, ExperimentConfig, "", where)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes: ``1,3`` -> ['1', '3'], ``[1,2]`` -> ['[1,2]']."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def parse_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Split ``key=value`` strings into plain overrides and grid axes (``key=a,b``)."""
    plain: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=3)")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("+") or key.startswith("~"):
            raise ConfigError(f"override '{item}': adding or deleting keys is not supported; the schema is fixed")
        if key.startswith("grid."):
            key = key[len("grid."):]
            values = _parse_value(text)
            grid[key] = values if isinstance(values, list) else [values]
            continue
        pieces = _split_top_level(text)
        if len(pieces) > 1:
            grid[key] = [_parse_value(p) for p in pieces]
        else:
            plain[key] = _parse_value(text)
    return plain, grid


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return out


def _merge(base: Any, patch: dict, where: str) -> Any:
    try:
        return OmegaConf.merge(base, patch)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        raise ConfigError(f"{where}: bad value for '{key}': {msg}") from None


def to_dict(cfg: Any) -> dict:
    """A plain nested dict of a config (dataclass instance or OmegaConf node)."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# Keys that say how or where a run executes, not what it computes: they are left out of the cell name's hash and of
# the resume check, so `train.device=cuda`, more threads, a checkpoint interval, torch.compile or a different runs
# folder neither make a new cell nor block resuming a run. (channels_last, compile and grad_checkpoint change float
# rounding at most; the dashboard settings change nothing that is computed.)
RUNTIME_KEYS: tuple[str, ...] = (
    "description", "runs_dir", "log", "train.device", "train.threads", "train.log_every", "train.checkpoint_every",
    "train.stop_after_steps", "train.resume", "train.compile", "train.channels_last", "train.grad_checkpoint", "train.fsdp",
    "train.deterministic", "eval.samples", "data.on_device",
)


def config_hash(cfg: ExperimentConfig | dict, exclude: tuple[str, ...] = ("train.seed",)) -> str:
    """A short stable hash of a config, leaving out ``exclude`` (dotted keys) and the :data:`RUNTIME_KEYS`."""
    d = json.loads(json.dumps(to_dict(cfg) if not isinstance(cfg, dict) else cfg, sort_keys=True, default=str))
    for key in exclude + RUNTIME_KEYS:
        cur = d
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.get(p, {})
        cur.pop(parts[-1], None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:6]


def run_hash(cfg: ExperimentConfig | dict) -> str:
    """The hash a checkpoint records: every setting that changes what a run computes, the seed included."""
    return config_hash(cfg, exclude=())


# --------------------------------------------------------------------------------------------------- loading


def _config_dir() -> Path:
    return Path(str(resources.files("experiments") / "configs"))


def list_experiments() -> list[str]:
    """The named experiment configs shipped in ``experiments/configs``."""
    return sorted(p.stem for p in _config_dir().glob("*.yaml"))


def _experiment_path(name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        p = Path(name)
        if not p.is_file():
            raise ConfigError(f"experiment file '{name}' does not exist")
        return p
    p = _config_dir() / f"{name}.yaml"
    if not p.is_file():
        names = list_experiments()
        raise ConfigError(f"unknown experiment '{name}'{_suggest(name, names)}; choose from: {', '.join(names)}")
    return p


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def load_experiment(name: str, overrides: list[str] | None = None) -> tuple[ExperimentConfig, dict[str, list[Any]]]:
    """Load ``name`` (a shipped experiment or a YAML path) with command-line ``overrides``.

    Returns:
        the base config (command-line plain overrides applied, grid axes not yet applied) and the grid
        ``{dotted key: [values]}``; command-line axes replace file axes, and a plain override of a key removes its
        file axis. A file's ``exclude:`` list (of ``{dotted key: value}`` mappings; a cell matching every entry of
        one mapping is left out) comes back under the grid key ``"exclude"``.
    """
    path = _experiment_path(name)
    data = _read_yaml(path)
    file_grid = data.pop("grid", None) or {}
    if not isinstance(file_grid, dict):
        raise ConfigError(f"{path}: 'grid' must map dotted keys to lists of values")
    exclude = data.pop("exclude", None) or []
    if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
        raise ConfigError(f"{path}: 'exclude' must be a list of mappings {{dotted key: value}}")
    for entry in exclude:
        for key in entry:
            _key_path_valid(key, f"{path} exclude")
    _check_keys(data, ExperimentConfig, "", str(path))
    plain, cli_grid = parse_overrides(overrides or [])
    for key in list(plain) + list(cli_grid):
        _key_path_valid(key, "command line")
    for key, values in file_grid.items():
        _key_path_valid(key, f"{path} grid")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid axis '{key}' must be a non-empty list of values, got {values!r}")
    grid = {k: v for k, v in file_grid.items() if k not in plain}
    grid.update(cli_grid)

    base = OmegaConf.structured(ExperimentConfig)
    base = _merge(base, data, str(path))
    for key, value in plain.items():
        base = _merge(base, _nest(key, value), "command line")
    if not base.name:
        base.name = path.stem
    for key, values in grid.items():  # every grid value must type-check too
        for v in values:
            _merge(base, _nest(key, v), f"grid axis '{key}'")
    cfg: ExperimentConfig = OmegaConf.to_object(base)  # type: ignore[assignment]
    check_choices(cfg)
    if exclude:
        grid["exclude"] = exclude
    return cfg, grid


def apply_overrides(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-key ``values`` applied (type-checked)."""
    node = OmegaConf.structured(cfg)
    for key, value in values.items():
        node = _merge(node, _nest(key, value), f"grid axis '{key}'")
    out: ExperimentConfig = OmegaConf.to_object(node)  # type: ignore[assignment]
    check_choices(out)
    return out


def _get(cfg: Any, key: str) -> Any:
    for p in key.split("."):
        cfg = getattr(cfg, p)
    return cfg


def check_choices(cfg: ExperimentConfig) -> None:
    """Enumerated string fields must hold one of their choices."""
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"bad value '{value}' for '{key}'{_suggest(str(value), list(choices))}; "
                              f"choose from: {', '.join(choices)}")
    if cfg.model.steps < 1:
        raise ConfigError(f"model.steps must be >= 1, got {cfg.model.steps}")
    if cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {cfg.train.epochs}")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    if cfg.log.examples < 0 or cfg.log.examples_every < 0:
        raise ConfigError(f"log.examples and log.examples_every must be >= 0 (0: off), got {cfg.log.examples} and "
                          f"{cfg.log.examples_every}")
    if cfg.train.checkpoint_every < 0 or cfg.train.stop_after_steps < 0:
        raise ConfigError("train.checkpoint_every and train.stop_after_steps must be >= 0")
    if not 0.0 < cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be strictly between 0 and 1, got {cfg.train.ema_decay}")
    if not 0.0 <= cfg.train.swa_start < 1.0:
        raise ConfigError(f"train.swa_start must be in [0, 1), got {cfg.train.swa_start}")
    for key in ("eval.noise", "eval.occlusion", "eval.eps"):
        values = _get(cfg, key)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ConfigError(f"{key} must be a list of non-negative numbers, got {values}")
    bad = [v for v in cfg.eval.attack_through if v not in ("loop", "first")]
    if bad:
        raise ConfigError(f"bad value '{bad[0]}' in 'eval.attack_through'; choose from: loop, first")


def kwarg_names(fn: Callable, reserved: tuple[str, ...] = ()) -> list[str] | None:
    """The keyword parameters of ``fn`` minus ``reserved`` (and ``self``); ``None`` if it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in reserved and n != "self"]


def accepted_kwargs(fn: Callable, kwargs: dict[str, Any], where: str, reserved: tuple[str, ...] = ()) -> dict:
    """The part of ``kwargs`` that ``fn`` takes.

    Keys a builder does not take are not passed to it, so one ``model.backbone_args`` can serve a grid over
    backbones (``channels`` reaches the ResNets, not LeNet). :func:`check_kwargs_used` makes sure every key is
    taken by at least one builder of the experiment. Reserved keys (set by the framework) are errors.
    """
    for key in kwargs:
        if key in reserved:
            raise ConfigError(f"'{where}.{key}' is set by the framework; it cannot be given in {where}")
    names = kwarg_names(fn, reserved)
    return dict(kwargs) if names is None else {k: v for k, v in kwargs.items() if k in names}


def check_kwargs_used(kwargs: dict[str, Any], builders: dict[str, Callable], where: str,
                      reserved: tuple[str, ...] = (), generic: tuple[str, ...] = ()) -> None:
    """Every key of ``kwargs`` must be taken by at least one of ``builders`` ({name: fn}); else a ConfigError.

    ``generic`` keys are valid for every builder (``baselines.GENERIC_OPTIONS`` such as ``coordconv``).
    """
    kwargs = {k: v for k, v in kwargs.items() if k not in generic}
    valid: list[str] = list(generic)
    for fn in builders.values():
        names = kwarg_names(fn, reserved)
        if names is None:
            return
        valid += [n for n in names if n not in valid]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"unknown key '{where}.{key}'{_suggest(key, valid, where + '.')} for {', '.join(builders)}; "
                f"valid keys: {', '.join(valid) or '(none)'}"
            )


def check_kwargs(fn: Callable, kwargs: dict[str, Any], where: str, reserved: tuple[str, ...] = ()) -> None:
    """Every key of ``kwargs`` must be a keyword parameter of ``fn`` (unless it takes ``**kwargs``)."""
    accepted_kwargs(fn, kwargs, where, reserved)
    check_kwargs_used(kwargs, {getattr(fn, "__qualname__", "builder"): fn}, where, reserved)


def flat_dict(d: dict, prefix: str = "") -> Dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and f"{prefix}{k}" not in FREE_DICTS:
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

