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
from typing import Any, Callable, TypeVar

import timm.models
import torch.nn as nn

__all__ = ["create_model", "list_models", "model_entrypoint", "register_model"]

EntryPoint = Callable[..., nn.Module]
F = TypeVar("F", bound=EntryPoint)

# Marks the adapters this module registers with timm, so a re-import can recognise its own registration.
_ADAPTER_FLAG = "_baselines_entrypoint"

# name -> entry point. Kept across ``importlib.reload`` of this module, so a reload does not forget the models
# that the (not reloaded) family modules registered.
_REGISTRY: dict[str, EntryPoint] = globals().get("_REGISTRY", {})


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
        model = _REGISTRY[name](**kwargs)
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


def register_model(fn: F | None = None, *, timm_owned: bool = False) -> F | Callable[[F], F]:
    """Register a keyword-only model entry point under ``fn.__name__`` (decorator), here and in timm.

    Args:
        fn: ``fn(*, num_classes: int, in_chans: int, **kwargs) -> nn.Module``; returned unchanged.
        timm_owned: set when timm already has a model of this name that is the *identical* network (same layers,
            same parameter count): it is then left to timm, and ``timm.create_model(name)`` returns timm's model.

    Raises:
        ValueError: the name is already registered by a different function (re-executing the same definition,
            as ``importlib.reload`` does, replaces it silently), or timm owns the name and ``timm_owned`` is unset.
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

    def decorate(f: F) -> F:
        name = f.__name__
        _check_signature(f)
        previous = _REGISTRY.get(name)
        if previous is not None and (previous is f or _qualified(previous) != _qualified(f)):
            raise ValueError(
                f"model {name!r} is already registered (by {_qualified(previous)}); "
                f"cannot register {_qualified(f)} under the same name"
            )
        _register_with_timm(name, f, timm_owned)
        _REGISTRY[name] = f
        return f

    return decorate if fn is None else decorate(fn)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models that match the shell-style ``pattern`` (``fnmatch``).

    Example:
        >>> import baselines
        >>> baselines.list_models("lenet*")
        ['lenet5', 'lenet5_relu']
    """
    return sorted(fnmatch.filter(_REGISTRY, pattern))


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


def create_model(name: str, *, num_classes: int = 10, in_chans: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the classifier output (always passed to the entry point; default 10).
        in_chans: input channels; ``None`` (default) keeps the model's own default (1 for LeNet-5, 3 for ResNets).
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
    return fn(num_classes=num_classes, **kwargs)
