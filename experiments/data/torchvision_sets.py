"""Real image datasets a user has on disk, read through torchvision: MNIST, Fashion-MNIST, CIFAR-10/100, SVHN.

Nothing is downloaded unless asked: ``data.options.root`` names the folder holding the files in torchvision's
layout (``<root>/MNIST/raw/*-ubyte``, ``<root>/FashionMNIST/raw/*-ubyte``, ``<root>/cifar-10-batches-py/``,
``<root>/cifar-100-python/``, ``<root>/{train,test}_32x32.mat``), and ``data.options.download=true`` lets
torchvision fetch them there first. CIFAR and SVHN files are checked against torchvision's MD5 sums unless
``verify=false`` (for copies converted or cut down by hand; the tests write small files in these formats).

Every split is loaded into memory as float32 in ``[0, 1]``, ``(N, C, H, W)`` (MNIST and Fashion-MNIST: 1 channel,
28 px; the others: 3 channels, 32 px), resized to ``image_size`` when given (bilinear, antialiased), optionally cut
to a random ``num_train``/``num_test`` subset drawn from ``seed``. Labels are the datasets' own class indices
(SVHN's "10" for the digit 0 becomes 0, as torchvision does).

Example::

    from experiments.data import create_dataset

    splits = create_dataset("cifar10", root="/data/torchvision", image_size=32, num_train=5000)
    splits.train.images.shape, splits.num_classes          # (5000, 3, 32, 32), 10
    # feedback run quickstart data.name=mnist data.options.root=/data/torchvision data.options.image_size=32
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._registry import DatasetSplits, ImageSet, register_dataset
from .digits import resize_images

__all__ = ["cifar10", "cifar100", "fashion_mnist", "mnist", "svhn"]


def _root(root: str, name: str) -> str:
    if not root:
        raise ValueError(f"dataset '{name}' needs data.options.root: the folder holding its files (torchvision's "
                         "layout); add data.options.download=true to let torchvision fetch them there")
    return str(Path(root).expanduser())


def _open(cls: Any, name: str, root: str, download: bool, **kw: Any) -> Any:
    try:
        return cls(_root(root, name), download=download, **kw)
    except RuntimeError as e:
        verify = " or data.options.verify=false to skip the MD5 check" if name.startswith(("cifar", "svhn")) else ""
        raise FileNotFoundError(f"dataset '{name}' not found under {root} ({str(e).splitlines()[0]}); "
                                f"set data.options.download=true to fetch it{verify}") from None


def _subset(n: int, k: int, seed: int, salt: int) -> torch.Tensor | None:
    if k <= 0 or k >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + salt))[:k].sort().values


def _imageset(images: np.ndarray, labels: np.ndarray, *, image_size: int, keep: torch.Tensor | None) -> ImageSet:
    """uint8 (N, C, H, W) and int labels -> an ImageSet of float32 [0, 1] images."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if keep is not None:
        x, y = x[keep], y[keep]
    x = x.float().div_(255.0)
    if image_size and image_size != x.shape[-1]:
        x = resize_images(x, image_size)
    return ImageSet(images=x, labels=y, source_ids=torch.arange(len(y))[:, None] if keep is None else keep[:, None])


def _splits(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *, classes: list[str],
            image_size: int, num_train: int, num_test: int, seed: int, description: str) -> DatasetSplits:
    tr = _imageset(*train, image_size=image_size, keep=_subset(len(train[1]), num_train, seed, 1))
    te = _imageset(*test, image_size=image_size, keep=_subset(len(test[1]), num_test, seed, 2))
    return DatasetSplits(train=tr, test=te, num_classes=len(classes), in_chans=tr.images.shape[1],
                         image_size=tr.images.shape[-1], multilabel=False, class_names=[str(c) for c in classes],
                         description=description)


def _mnist_like(cls_name: str, name: str, *, root: str, download: bool, image_size: int, num_train: int,
                num_test: int, seed: int) -> DatasetSplits:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    parts = []
    for train in (True, False):
        ds = _open(cls, name, root, download, train=train)
        parts.append((ds.data.numpy()[:, None], ds.targets.numpy()))
    return _splits(parts[0], parts[1], classes=list(ds.classes), image_size=image_size, num_train=num_train,
                   num_test=num_test, seed=seed, description=f"{name} from {root}")


@register_dataset
def mnist(*, root: str = "", download: bool = False, image_size: int = 28, num_train: int = 0, num_test: int = 0,
          seed: int = 0) -> DatasetSplits:
    """MNIST (LeCun et al. 1998): 60,000 + 10,000 grey 28 px digits."""
    return _mnist_like("MNIST", "mnist", root=root, download=download, image_size=image_size, num_train=num_train,
                       num_test=num_test, seed=seed)


@register_dataset
def fashion_mnist(*, root: str = "", download: bool = False, image_size: int = 28, num_train: int = 0,
                  num_test: int = 0, seed: int = 0) -> DatasetSplits:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 grey 28 px clothing images, 10 classes."""
    return _mnist_like("FashionMNIST", "fashion_mnist", root=root, download=download, image_size=image_size,
                       num_train=num_train, num_test=num_test, seed=seed)


def _cifar(n_classes: int, *, root: str, download: bool, verify: bool, image_size: int, num_train: int,
           num_test: int, seed: int) -> DatasetSplits:
    import torchvision.datasets as tvd

    base = tvd.CIFAR10 if n_classes == 10 else tvd.CIFAR100
    name = f"cifar{n_classes}"
    cls = base
    if not verify:
        cls = type(f"Unverified{base.__name__}", (base,), {"_check_integrity": _files_exist, "_load_meta": _meta})
    parts = []
    for train in (True, False):
        ds = _open(cls, name, root, download, train=train)
        parts.append((ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)))
    return _splits(parts[0], parts[1], classes=list(ds.classes), image_size=image_size, num_train=num_train,
                   num_test=num_test, seed=seed, description=f"CIFAR-{n_classes} from {root}")


def _files_exist(self: Any) -> bool:
    import os

    return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f, _ in self.train_list + self.test_list)


def _meta(self: Any) -> None:
    import os
    import pickle

    path = os.path.join(self.root, self.base_folder, self.meta["filename"])
    if not os.path.isfile(path):
        raise RuntimeError(f"metadata file {path} not found")
    with open(path, "rb") as fh:
        self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
    self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


@register_dataset
def cifar10(*, root: str = "", download: bool = False, verify: bool = True, image_size: int = 32,
            num_train: int = 0, num_test: int = 0, seed: int = 0) -> DatasetSplits:
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 colour 32 px images, 10 classes."""
    return _cifar(10, root=root, download=download, verify=verify, image_size=image_size, num_train=num_train,
                  num_test=num_test, seed=seed)


@register_dataset
def cifar100(*, root: str = "", download: bool = False, verify: bool = True, image_size: int = 32,
             num_train: int = 0, num_test: int = 0, seed: int = 0) -> DatasetSplits:
    """CIFAR-100 (Krizhevsky 2009): 50,000 + 10,000 colour 32 px images, 100 fine classes."""
    return _cifar(100, root=root, download=download, verify=verify, image_size=image_size, num_train=num_train,
                  num_test=num_test, seed=seed)


@register_dataset
def svhn(*, root: str = "", download: bool = False, verify: bool = True, image_size: int = 32, num_train: int = 0,
         num_test: int = 0, seed: int = 0) -> DatasetSplits:
    """SVHN (Netzer et al. 2011), cropped digits: 73,257 + 26,032 colour 32 px house-number digits (no "extra")."""
    import torchvision.datasets as tvd

    cls = tvd.SVHN
    if not verify:
        cls = type("UnverifiedSVHN", (tvd.SVHN,), {
            "_check_integrity": lambda self: (Path(self.root) / self.filename).is_file()})
    parts = []
    for split in ("train", "test"):
        ds = _open(cls, "svhn", root, download, split=split)
        parts.append((ds.data, ds.labels))
    return _splits(parts[0], parts[1], classes=[str(k) for k in range(10)], image_size=image_size,
                   num_train=num_train, num_test=num_test, seed=seed, description=f"SVHN from {root}")
