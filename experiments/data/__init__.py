"""Datasets: bundled (scikit-learn's digits) or generated (cluttered digit scenes), deterministic from a seed.

Importing this package registers the builders; ``create_dataset(name, **options)`` builds one.

Example::

    from experiments.data import create_dataset, dataset_builder, list_datasets

    list_datasets()                                   # ['cluttered_digits', 'digits']
    splits = create_dataset("cluttered_digits", seed=0, canvas=64, max_digits=3)
    splits.train.images.shape, splits.multilabel      # (2000, 1, 64, 64), True
    import inspect; inspect.signature(dataset_builder("digits"))   # the valid options
"""

from . import captcha_text as captcha_text
from . import captions as captions
from . import cluttered as cluttered
from . import detection as detection
from . import digits as digits
from . import distorted as distorted
from . import figure_ground as figure_ground
from . import graphs as graphs
from . import pairs as pairs
from . import scenes3d as scenes3d
from . import sequences as sequences
from . import sets as sets
from . import shapes as shapes
from . import signals as signals
from . import token_tasks as token_tasks
from . import torchvision_sets as torchvision_sets
from ._registry import (
    DatasetSplits,
    ImageSet,
    SampleSet,
    create_dataset,
    dataset_builder,
    index_inputs,
    list_datasets,
    num_samples,
    register_dataset,
    to_device,
)

__all__ = [
    "DatasetSplits",
    "ImageSet",
    "SampleSet",
    "create_dataset",
    "dataset_builder",
    "index_inputs",
    "list_datasets",
    "num_samples",
    "register_dataset",
    "to_device",
]
