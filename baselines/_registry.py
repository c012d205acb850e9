"""Registry of baseline architectures, mirrored into timm's registry.

Every baseline is a keyword-only *entry point* ``fn(*, num_classes, in_chans, **kwargs) -> nn.Module`` registered
under ``fn.__name__`` with :func:`register_model`. :func:`create_model` builds one by name and :func:`list_models`
lists the names (DESIGN.md section 3.1).

timm has no plugin discovery: ``@timm.models.register_model`` fills a global dict at import time
(reference/architectures.md section 7). So :func:`register_model` also registers a small *adapter* with timm, and
``timm.create_model(name)`` works for every baseline once ``baselines`` is imported. The adapter

- accepts and drops what ``timm.create_model`` always passes (``pretrained_cfg``, ``pretrained_cfg_overlay``,
  ``cache_dir``), and raises ``ValueError`` for ``pretrained=True`` (this project ships no weights) and for
  ``features_only=True`` (use the Staged view, ``model.stem`` / ``model.stages``, instead);
- calls the entry point with timm's keyword arguments only, so the entry point's own defaults apply
  (``timm.create_model("lenet5")`` is the 1-channel LeNet-5), whereas :func:`create_model` always passes
  ``num_classes`` and ``in_chans`` (defaults 10 and 3);
- sets ``model.pretrained_cfg`` (architecture, ``input_size``, ``num_classes``) when the model has none, so that
  ``timm.data.resolve_data_config(model=model)`` sees the right input size;
- looks the entry point up by name at call time, so re-importing a family module (``importlib.reload``) needs no
  second timm registration: the existing adapter is kept and timm never warns about overwriting.

Names that timm already owns are never re-registered with timm (timm would only warn and overwrite its own model).
An entry point whose network is *identical* to timm's model of the same name (``resnet18``) is registered with
``@register_model(timm_owned=True)``: ``timm.create_model(name)`` then returns timm's own model, the same network
with the same parameter count (a plain timm model, without the Staged attributes). Any other clash with a timm
name raises ``ValueError``.

Metadata: :func:`register_model` also takes keyword arguments that describe the model (``family``, ``source``,
``paper``, ``min_input_size``, ``max_input_size``, ``small``, ``small_input_size``, ``slow``); :func:`model_info`
returns them with what a build at the entry point's defaults shows (parameter count, stage count, channels,
strides, input size). Generic options that :func:`create_model` applies to every model after building it are listed
in :data:`GENERIC_OPTIONS` (``coordconv``: replace the first convolution by a :class:`baselines.coordconv.CoordConv2d`).

Example (registration is global and permanent, so the registering examples are skipped by doctest):
    >>> import torch.nn as nn
    >>> @register_model  # doctest: +SKIP
    ... def my_mlp(*, num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    ...     return nn.Linear(in_chans, num_classes)
    >>> create_model("my_mlp", num_classes=4).out_features  # doctest: +SKIP
    4
    >>> import timm
    >>> timm.create_model("my_mlp", in_chans=5).in_features  # doctest: +SKIP
    5
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any, Callable, Mapping, TypeVar

import timm.models
import torch
import torch.nn as nn

__all__ = ["GENERIC_OPTIONS", "create_model", "list_models", "model_entrypoint", "model_info", "register_model"]

# Options that create_model (and the timm adapter) handle for every model, whatever its entry point takes:
# name -> (type, default, what it does).
GENERIC_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "coordconv": (
        bool,
        False,
        "replace the first Conv2d of the stem (or of stage 0 if the stem has none) by a CoordConv2d with two "
        "coordinate channels (Liu et al. 2018)",
    ),
}

# The metadata keys register_model takes, and their defaults.
INFO_KEYS: dict[str, Any] = {
    "family": None,  # e.g. "ResNet"; default: the defining module's name
    "source": None,  # e.g. "timm resnet34", "hand-written (paper)"
    "paper": None,  # short citation, e.g. "He et al. 2016"
    "min_input_size": None,  # smallest sensible square input side (px); None: not stated
    "max_input_size": None,  # largest accepted square input side (px); None: no limit
    "small": None,  # create_model keyword arguments of a fast configuration (may set num_classes / in_chans)
    "small_input_size": None,  # input side for that configuration; None: the built model's own input size
    "slow": False,  # True if even the small configuration is too slow for the fast test tier on a CPU
    "staged": True,  # False for models without the Staged view (sequence, set, graph, implicit models: docs/tasks.md)
}

EntryPoint = Callable[..., nn.Module]
F = TypeVar("F", bound=EntryPoint)

# Marks the adapters this module registers with timm, so a re-import can recognise its own registration.
_ADAPTER_FLAG = "_baselines_entrypoint"

# name -> entry point. Kept across ``importlib.reload`` of this module, so a reload does not forget the models
# that the (not reloaded) family modules registered.
_REGISTRY: dict[str, EntryPoint] = globals().get("_REGISTRY", {})
# name -> the metadata given to register_model (INFO_KEYS); kept across reloads like _REGISTRY.
_INFO: dict[str, dict[str, Any]] = globals().get("_INFO", {})
# (name, entry point) -> what a default build shows; filled on demand by model_info.
_BUILT_INFO: dict[tuple[str, EntryPoint], dict[str, Any]] = globals().get("_BUILT_INFO", {})


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _check_signature(fn: EntryPoint) -> None:
    """Entry points must be keyword-only and accept ``num_classes`` and ``in_chans``."""
    params = inspect.signature(fn).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if positional:
        raise TypeError(
            f"entry point {_qualified(fn)} must be keyword-only, got positional parameter(s) {', '.join(positional)}: "
            f"write def {fn.__name__}(*, num_classes: int = ..., in_chans: int = ..., **kwargs)"
        )
    names = {p.name for p in params}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    missing = [k for k in ("num_classes", "in_chans") if k not in names and not has_var_kw]
    if missing:
        raise TypeError(f"entry point {_qualified(fn)} must accept {', '.join(missing)}")


def _timm_adapter(name: str, module: str) -> EntryPoint:
    """The entry point registered with timm for ``name``: drops timm's pretrained-weight arguments."""

    def adapter(
        *,
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Any = None,
        cache_dir: Any = None,
        **kwargs: Any,
    ) -> nn.Module:
        del pretrained_cfg, pretrained_cfg_overlay, cache_dir  # no weights to resolve
        if pretrained:
            raise ValueError(
                f"baselines model {name!r} has no pretrained weights (this project ships none); "
                f"use timm.create_model({name!r}, pretrained=False) and train it"
            )
        if kwargs.pop("features_only", False):
            raise ValueError(
                f"baselines model {name!r} does not support features_only=True; "
                "use its Staged view instead: run model.stem, then each of model.stages, to get every stage output"
            )
        generic = {k: kwargs.pop(k) for k in list(kwargs) if k in GENERIC_OPTIONS}
        model = _apply_generic(_REGISTRY[name](**kwargs), name, **generic)
        if not hasattr(model, "pretrained_cfg"):
            cfg: dict[str, Any] = {"architecture": name}
            if hasattr(model, "input_size"):
                cfg["input_size"] = tuple(model.input_size)
            if hasattr(model, "num_classes"):
                cfg["num_classes"] = model.num_classes
            model.pretrained_cfg = cfg
        return model

    adapter.__name__ = adapter.__qualname__ = name
    # The family module that defines the entry point: timm files the name under that module's last component and
    # adds it to that module's __all__ (where the entry point of the same name is an attribute, so star-imports work).
    adapter.__module__ = module
    adapter.__doc__ = f"timm entry point for the baselines model {name!r} (see baselines.create_model)."
    setattr(adapter, _ADAPTER_FLAG, True)
    return adapter


def _register_with_timm(name: str, fn: EntryPoint, timm_owned: bool) -> None:
    if timm.models.is_model(name):
        existing = timm.models.model_entrypoint(name)
        if getattr(existing, _ADAPTER_FLAG, False):
            return  # our own adapter from an earlier import: it resolves the entry point by name at call time
        if timm_owned:
            return  # timm's model of this name is the identical network (checked by the tests)
        raise ValueError(
            f"timm already has a model named {name!r} ({existing.__module__}.{existing.__name__}); "
            f"rename {_qualified(fn)}, or register it with @register_model(timm_owned=True) if timm's {name!r} "
            "is the identical network"
        )
    if timm_owned:
        raise ValueError(f"{_qualified(fn)} was registered with timm_owned=True, but timm has no model named {name!r}")
    timm.models.register_model(_timm_adapter(name, fn.__module__))


def _check_info(name: str, info: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(INFO_KEYS)
    for key, value in info.items():
        if key not in INFO_KEYS:
            raise TypeError(f"register_model got an unknown metadata key {key!r}; valid keys: {', '.join(INFO_KEYS)}")
        out[key] = value
    for key in ("min_input_size", "max_input_size", "small_input_size"):
        if out[key] is not None and (not isinstance(out[key], int) or out[key] < 1):
            raise ValueError(f"model {name!r}: {key} must be a positive int or None, got {out[key]!r}")
    if out["min_input_size"] and out["max_input_size"] and out["min_input_size"] > out["max_input_size"]:
        raise ValueError(
            f"model {name!r}: min_input_size {out['min_input_size']} > max_input_size {out['max_input_size']}"
        )
    if out["small"] is not None:
        if not isinstance(out["small"], Mapping):
            raise TypeError(f"model {name!r}: small must be a dict of create_model keyword arguments")
        out["small"] = dict(out["small"])
        bad = [k for k in out["small"] if k in GENERIC_OPTIONS]
        if bad:
            raise ValueError(f"model {name!r}: small must not set the generic option(s) {', '.join(bad)}")
    return out


def register_model(
    fn: F | None = None,
    *,
    timm_owned: bool = False,
    family: str | None = None,
    source: str | None = None,
    paper: str | None = None,
    min_input_size: int | None = None,
    max_input_size: int | None = None,
    small: Mapping[str, Any] | None = None,
    small_input_size: int | None = None,
    slow: bool = False,
    staged: bool = True,
) -> F | Callable[[F], F]:
    """Register a keyword-only model entry point under ``fn.__name__`` (decorator), here and in timm.

    Args:
        fn: ``fn(*, num_classes: int, in_chans: int, **kwargs) -> nn.Module``; returned unchanged.
        timm_owned: set when timm already has a model of this name that is the *identical* network (same layers,
            same parameter count): it is then left to timm, and ``timm.create_model(name)`` returns timm's model.
        family: the architecture family, e.g. ``"ResNet"`` (default: the defining module's name).
        source: where the network comes from, e.g. ``"timm resnet34"`` or ``"hand-written (paper)"``.
        paper: short citation, e.g. ``"He et al. 2016"``.
        min_input_size: smallest sensible square input side in pixels (every stage output at least 1x1).
        max_input_size: largest accepted square input side (``None``: no limit; a ViT's fixed position
            embedding accepts exactly one size).
        small: :func:`create_model` keyword arguments of a configuration that trains fast on a CPU (narrower, fewer
            cells); it may set ``num_classes`` and ``in_chans``. ``None``: the defaults are already small.
        small_input_size: the square input side for ``small`` (``None``: the built model's own input size).
        slow: even the small configuration is too slow for the fast test tier (registry-driven tests mark it slow).
        staged: the model exposes the Staged view (``stem``, ``stages``, ``head``) on image input. ``False`` for
            sequence, set, graph and implicit models, which the runner trains without a feedback kind
            (docs/tasks.md); image-only checks skip them.

    Raises:
        ValueError: the name is already registered by a different function (re-executing the same definition,
            as ``importlib.reload`` does, replaces it silently), or timm owns the name and ``timm_owned`` is unset,
            or a metadata value is invalid.
        TypeError: ``fn`` has positional parameters or cannot take ``num_classes`` / ``in_chans``.

    Example:
        >>> @register_model  # doctest: +SKIP
        ... def tiny_linear(*, num_classes: int = 10, in_chans: int = 3, **kwargs):
        ...     return nn.Linear(in_chans, num_classes)
        >>> register_model(tiny_linear)  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        ValueError: model 'tiny_linear' is already registered ...
    """

    meta = dict(
        family=family,
        source=source,
        paper=paper,
        min_input_size=min_input_size,
        max_input_size=max_input_size,
        small=small,
        small_input_size=small_input_size,
        slow=bool(slow),
        staged=bool(staged),
    )

    def decorate(f: F) -> F:
        name = f.__name__
        _check_signature(f)
        info = _check_info(name, meta)
        if info["family"] is None:
            info["family"] = f.__module__.rsplit(".", 1)[-1]
        info["timm_owned"] = bool(timm_owned)
        previous = _REGISTRY.get(name)
        if previous is not None and (previous is f or _qualified(previous) != _qualified(f)):
            raise ValueError(
                f"model {name!r} is already registered (by {_qualified(previous)}); "
                f"cannot register {_qualified(f)} under the same name"
            )
        _register_with_timm(name, f, timm_owned)
        _REGISTRY[name] = f
        _INFO[name] = info
        return f

    return decorate if fn is None else decorate(fn)


def list_models(pattern: str = "*", *, staged: bool | None = None) -> list[str]:
    """Sorted names of the registered models that match the shell-style ``pattern`` (``fnmatch``).

    ``staged=True`` keeps only the models with the Staged view (the image backbones feedback attaches to),
    ``staged=False`` only the others; ``None`` (default) lists all.

    Example:
        >>> import baselines
        >>> baselines.list_models("lenet*")
        ['lenet5', 'lenet5_relu']
    """
    names = sorted(fnmatch.filter(_REGISTRY, pattern))
    if staged is None:
        return names
    return [n for n in names if _INFO.get(n, INFO_KEYS)["staged"] == staged]


def model_entrypoint(name: str) -> EntryPoint:
    """The entry point registered as ``name`` (its keyword signature lists the model's options).

    Raises:
        ValueError: unknown name; the message lists the choices and suggests the closest one.
    """
    fn = _REGISTRY.get(name)
    if fn is None:
        names = list_models()
        message = f"unknown model {name!r}; choose from: {', '.join(names)}"
        close = difflib.get_close_matches(name.lower(), names, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        raise ValueError(message)
    return fn


def _apply_generic(model: nn.Module, name: str, *, coordconv: bool = False) -> nn.Module:
    """Apply the :data:`GENERIC_OPTIONS` to a built model."""
    if not isinstance(coordconv, bool):
        raise TypeError(f"coordconv must be True or False, got {coordconv!r}")
    if coordconv:
        from .coordconv import coordconv_  # here, not at import time: coordconv.py is a family module

        try:
            coordconv_(model)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model {name!r} cannot take coordconv=True: {e}") from None
    return model


def create_model(
    name: str, *, num_classes: int = 10, in_chans: int | None = None, coordconv: bool = False, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the classifier output (always passed to the entry point; default 10).
        in_chans: input channels; ``None`` (default) keeps the model's own default (1 for LeNet-5, 3 for ResNets).
        coordconv: replace the model's first convolution (the first ``nn.Conv2d`` of the stem, or of stage 0 if
            the stem has none) by a :class:`~baselines.coordconv.CoordConv2d` that sees two extra coordinate
            channels (Liu et al. 2018). Works for every convolutional backbone; a model without a convolution
            there raises ``ValueError``. See :func:`baselines.coordconv.coordconv_`.
        **kwargs: model-specific options, passed to the entry point.

    Raises:
        ValueError: unknown name; the message lists the choices and suggests the closest one.

    Example:
        >>> import baselines, torch
        >>> model = baselines.create_model("lenet5", num_classes=10, in_chans=1)
        >>> model(torch.zeros(2, *model.input_size)).shape
        torch.Size([2, 10])
    """
    fn = model_entrypoint(name)
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    return _apply_generic(fn(num_classes=num_classes, **kwargs), name, coordconv=coordconv)


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared parameter once


def _built_info(name: str, fn: EntryPoint) -> dict[str, Any]:
    """Build ``fn()`` at its defaults, on the meta device when it allows (no memory, no init), and describe it."""
    key = (name, fn)
    if key not in _BUILT_INFO:
        try:
            with torch.device("meta"):
                model = fn()
        except Exception:  # an entry point whose construction needs real tensors (e.g. a seeded buffer)
            model = fn()
        out: dict[str, Any] = {"num_params": _count_params(model)}
        for attr in ("input_size", "num_classes", "channels", "strides"):
            value = getattr(model, attr, None)
            out[attr] = tuple(value) if isinstance(value, (list, tuple)) else value
        stages = getattr(model, "stages", None)
        out["num_stages"] = len(stages) if stages is not None else None
        _BUILT_INFO[key] = out
    return dict(_BUILT_INFO[key])


def model_info(name: str) -> dict[str, Any]:
    """What the registry knows about model ``name``, plus what a build at the entry point's defaults shows.

    Returns a dict with ``name``, ``entry_point`` (qualified name), ``summary`` (first line of its docstring), the
    registration metadata (``family``, ``source``, ``paper``, ``min_input_size``, ``max_input_size``, ``small``,
    ``small_input_size``, ``slow``, ``timm_owned``) and, from a default build (``fn()``, on the meta device when
    possible, so even an 88M-parameter model is counted in a fraction of a second, without running it; cached):
    ``num_params``, ``num_classes``, ``input_size``, ``num_stages``, ``channels``, ``strides``.

    Raises:
        ValueError: unknown name (as :func:`model_entrypoint`).

    Example:
        >>> import baselines
        >>> info = baselines.model_info("resnet18")
        >>> info["family"], info["num_params"], info["num_stages"]
        ('ResNet', 11689512, 4)
    """
    fn = model_entrypoint(name)
    doc = inspect.getdoc(fn) or ""
    info: dict[str, Any] = {
        "name": name,
        "entry_point": _qualified(fn),
        "summary": doc.split("\n\n", 1)[0].replace("\n", " ").strip(),
    }
    meta = _INFO.get(name) or dict(INFO_KEYS, family=fn.__module__.rsplit(".", 1)[-1], timm_owned=False)
    info.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in meta.items()})
    info.update(_built_info(name, fn))
    return info
