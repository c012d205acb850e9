"""Dataset containers and the dataset registry.

Every dataset is a *builder*: a keyword-only, fully typed function that returns a :class:`DatasetSplits`.
Its signature is the set of valid options, so the config layer can validate a config against
``inspect.signature(dataset_builder(name))`` before anything is built.

Example::

    from experiments.data import create_dataset, list_datasets

    print(list_datasets())                       # ['cluttered_digits', 'digits']
    splits = create_dataset("digits", seed=1, image_size=16)
    x, y = splits.train.images, splits.train.labels   # (N, 1, 16, 16) float32, (N,) int64
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = [
    "DatasetSplits",
    "ImageSet",
    "SampleSet",
    "index_inputs",
    "num_samples",
    "to_device",
    "create_dataset",
    "dataset_builder",
    "list_datasets",
    "register_dataset",
]

DatasetBuilder = Callable[..., "DatasetSplits"]

_DATASETS: dict[str, DatasetBuilder] = {}


def num_samples(inputs: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """The number of samples (first dimension) of an input tensor or of a dict input's tensors (which must agree)."""
    if isinstance(inputs, dict):
        sizes = {k: int(v.shape[0]) for k, v in inputs.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"the tensors of a dict input must share their first dimension, got {sizes}")
        return next(iter(sizes.values()))
    return int(inputs.shape[0])


def index_inputs(inputs: torch.Tensor | dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    """Rows ``idx`` of an input tensor, or of every tensor of a dict input."""
    if isinstance(inputs, dict):
        return {k: v[idx] for k, v in inputs.items()}
    return inputs[idx]


def to_device(x: torch.Tensor | dict[str, torch.Tensor], device: torch.device | str,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor | dict[str, torch.Tensor]:
    """Move a batch to ``device`` (non-blocking): image batches (4-D) in ``memory_format``, dict batches tensor by
    tensor."""
    if isinstance(x, dict):
        return {k: to_device(v, device, memory_format) for k, v in x.items()}
    if x.dim() == 4:
        return x.to(device, non_blocking=True, memory_format=memory_format)
    return x.to(device, non_blocking=True)


@dataclass
class SampleSet:
    """One split of any dataset: inputs and targets with the samples along dim 0 (docs/tasks.md).

    Attributes:
        inputs: a tensor ``(N, ...)``, or a dict of such tensors passed to the model as keyword arguments
            (e.g. a graph's ``{"x": (N, n, d), "adj": (N, n, n)}``).
        targets: ``(N, ...)``: class indices, per-position tokens (``-100`` where not scored), or regression
            targets, as the dataset's task reads them.

    Example:
        >>> import torch
        >>> s = SampleSet(inputs={"x": torch.zeros(4, 5, 2), "adj": torch.zeros(4, 5, 5)}, targets=torch.zeros(4))
        >>> len(s), index_inputs(s.inputs, torch.tensor([0, 2]))["adj"].shape
        (4, torch.Size([2, 5, 5]))
    """

    inputs: torch.Tensor | dict[str, torch.Tensor]
    targets: torch.Tensor

    def __post_init__(self) -> None:
        n = num_samples(self.inputs)
        if self.targets.shape[0] != n:
            raise ValueError(f"targets has {self.targets.shape[0]} rows but inputs have {n}")

    def __len__(self) -> int:
        return num_samples(self.inputs)


@dataclass
class ImageSet:
    """One split of an image dataset, as plain tensors.

    Attributes:
        images: float32 ``(N, C, H, W)`` with values in ``[0, 1]``.
        labels: int64 ``(N,)`` class indices (single-label) or float32 multi-hot ``(N, num_classes)``
            (multi-label).
        source_ids: int64 ``(N, max_objects)``: indices into scikit-learn's ``load_digits()`` of the digits
            an image shows (one per object, in the same order as ``boxes``), padded with ``-1``.
        boxes: optional float32 ``(N, max_objects, 5)``, rows ``(class, x0, y0, x1, y1)`` in pixel
            coordinates of ``images`` (pixel ``i`` spans ``[i, i + 1)``, so ``x1``/``y1`` are exclusive
            edges); padded rows are all ``-1``.
        masks: optional int64 ``(N, H, W)``: ``0`` background, ``k + 1`` where a pixel belongs to a digit
            of class ``k``.
        clutter_ids: optional int64 ``(N, num_clutter)``: indices into ``load_digits()`` of the digits the
            clutter fragments were cropped from (so source disjointness can be checked for clutter too).
        instance_masks: optional int64 ``(N, H, W)``: ``0`` background, ``j + 1`` where object ``j`` (row ``j`` of
            ``boxes``) is visible.
        captions: optional ``list[str]`` of length ``N``: one description per image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source_ids: torch.Tensor
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    clutter_ids: torch.Tensor | None = None
    instance_masks: torch.Tensor | None = None
    captions: list[str] | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4 or self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        for name in ("labels", "source_ids", "boxes", "masks", "clutter_ids", "instance_masks"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} rows but images has {n}")
        for name in ("masks", "instance_masks"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape[1:]) != tuple(self.images.shape[2:]):
                raise ValueError(f"{name} {tuple(value.shape)} do not match images {tuple(self.images.shape)}")
        if self.captions is not None and (len(self.captions) != n or not all(isinstance(c, str) for c in self.captions)):
            raise ValueError(f"captions must be a list of {n} strings, got {len(self.captions)} entries")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def inputs(self) -> torch.Tensor:
        """The images (the :class:`SampleSet` view)."""
        return self.images

    @property
    def targets(self) -> torch.Tensor:
        """The labels (the :class:`SampleSet` view)."""
        return self.labels


@dataclass
class DatasetSplits:
    """A train and a test split plus what a model and a task need to know about them.

    Attributes:
        train, test: :class:`ImageSet` (images) or :class:`SampleSet` (anything else).
        num_classes: classes (``classify``, per position for ``tokens``) or output features (``regress``).
        in_chans: image channels, input features per position, or the input vocabulary size of integer tokens.
        image_size: the square image side; ``0`` for data that are not images.
        multilabel: multi-hot labels (``classify`` only).
        task: the task that scores the data (``classify``, ``tokens``, ``regress``: :mod:`experiments.tasks`).
        tests: extra named test sets scored at the end of a run (``test/<name>/<metric>``), e.g. longer
            sequences or other resolutions.
    """

    train: ImageSet | SampleSet
    test: ImageSet | SampleSet
    num_classes: int
    in_chans: int
    image_size: int
    multilabel: bool
    class_names: list[str] = field(default_factory=list)
    description: str = ""
    task: str = "classify"
    tests: dict[str, ImageSet | SampleSet] = field(default_factory=dict)


def _unknown(kind: str, name: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (choices: {', '.join(sorted(choices)) or 'none'})")


def register_dataset(fn: DatasetBuilder) -> DatasetBuilder:
    """Register a dataset builder under ``fn.__name__`` (use as a decorator).

    The builder must take only keyword-only options (its signature is the config schema); a duplicate name or
    a positional/variadic parameter raises ValueError.
    """
    name = fn.__name__
    positional = [
        p for p, v in inspect.signature(fn).parameters.items() if v.kind is not inspect.Parameter.KEYWORD_ONLY
    ]
    if positional:
        raise ValueError(f"dataset builder {name!r} must take keyword-only options, got {positional}")
    if name in _DATASETS:
        raise ValueError(f"dataset {name!r} is already registered (by {_DATASETS[name].__module__})")
    _DATASETS[name] = fn
    return fn


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered datasets matching a shell-style ``pattern``."""
    return sorted(n for n in _DATASETS if fnmatch.fnmatchcase(n, pattern))


def dataset_builder(name: str) -> DatasetBuilder:
    """The builder registered as ``name``; inspect its signature to validate options."""
    if name not in _DATASETS:
        raise _unknown("dataset", name, list(_DATASETS))
    return _DATASETS[name]


def create_dataset(name: str, **kwargs: object) -> DatasetSplits:
    """Build dataset ``name`` with keyword options ``kwargs``.

    Unknown dataset names and unknown options raise ValueError naming the closest valid choice.
    """
    fn = dataset_builder(name)
    params = inspect.signature(fn).parameters
    valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in kwargs:
        if key not in valid:
            raise _unknown(f"option for dataset {name!r}:", key, valid)
    return fn(**kwargs)
