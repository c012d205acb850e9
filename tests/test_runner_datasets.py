"""Real datasets through torchvision from a root folder, on small files written here in the real formats:
idx-ubyte (MNIST, Fashion-MNIST), CIFAR pickle batches, SVHN .mat (scipy.io.savemat)."""

import pickle
import struct

import numpy as np
import pytest
import torch

from experiments.cli import main
from experiments.config import ConfigError, apply_overrides, load_experiment
from experiments.data import create_dataset, list_datasets
from experiments.train import load_data


def _idx(path, arr):
    codes = {1: 0x801, 3: 0x803}
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", codes[arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape))
        fh.write(arr.astype(np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n=(40, 20)):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, k in (("train", n[0]), ("t10k", n[1])):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (k, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(k) % 10)


def write_cifar(root, classes=10, n=(30, 20)):
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    key = "labels" if classes == 10 else "fine_labels"
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"] if classes == 10 \
        else ["train"]
    per = n[0] // len(names)
    for i, name in enumerate(names):
        batch = {"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), key: [(i * per + j) % classes
                                                                                for j in range(per)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    test = {"data": rng.integers(0, 256, (n[1], 3072), dtype=np.uint8), key: [j % classes for j in range(n[1])]}
    (folder / ("test_batch" if classes == 10 else "test")).write_bytes(pickle.dumps(test))
    meta_key = "label_names" if classes == 10 else "fine_label_names"
    (folder / ("batches.meta" if classes == 10 else "meta")).write_bytes(
        pickle.dumps({meta_key: [f"c{k}" for k in range(classes)]}))


def write_svhn(root, n=(30, 20)):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    for split, k in (("train", n[0]), ("test", n[1])):
        savemat(root / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, k), dtype=np.uint8),
                                              "y": (np.arange(k) % 10 + 1)[:, None].astype(np.uint8)})


def test_registered():
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"} <= set(list_datasets())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    d = create_dataset(name, root=str(tmp_path), image_size=32, num_train=25)
    assert d.train.images.shape == (25, 1, 32, 32) and d.test.images.shape == (20, 1, 32, 32)
    assert d.num_classes == 10 and d.in_chans == 1 and not d.multilabel
    assert d.train.images.dtype == torch.float32 and 0 <= d.train.images.min() and d.train.images.max() <= 1
    full = create_dataset(name, root=str(tmp_path))
    assert full.train.images.shape == (40, 1, 28, 28) and full.train.labels.tolist() == [k % 10 for k in range(40)]
    # pixel values survive: byte 255 -> 1.0
    raw = (tmp_path / folder / "raw" / "train-images-idx3-ubyte").read_bytes()[16:]
    assert full.train.images[0, 0].flatten()[:5].mul(255).round().tolist() == list(raw[:5])


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_format(tmp_path, classes):
    write_cifar(tmp_path, classes)
    name = f"cifar{classes}"
    with pytest.raises(FileNotFoundError, match="corrupted.*verify=false"):  # MD5 checked by default
        create_dataset(name, root=str(tmp_path))
    d = create_dataset(name, root=str(tmp_path), verify=False)
    assert d.train.images.shape == (30, 3, 32, 32) and d.num_classes == classes and d.class_names[1] == "c1"
    assert d.test.labels.tolist() == [j % classes for j in range(20)]


def test_svhn_format(tmp_path):
    write_svhn(tmp_path)
    d = create_dataset("svhn", root=str(tmp_path), verify=False, image_size=16)
    assert d.train.images.shape == (30, 3, 16, 16) and d.train.labels.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_missing_root_is_a_config_error(tmp_path):
    cfg, _ = load_experiment("quickstart")
    with pytest.raises(ConfigError, match="needs data.options.root"):
        load_data(apply_overrides(cfg, {"data.name": "mnist", "data.options": {}}))
    with pytest.raises(ConfigError, match=r"not found under .*download=true"):
        load_data(apply_overrides(cfg, {"data.name": "mnist", "data.options": {"root": str(tmp_path)}}))


def test_train_on_mnist_files_through_the_cli(tmp_path, capsys):
    write_mnist(tmp_path / "data")
    exp = tmp_path / "mnist_tiny.yaml"
    exp.write_text(f"""
model: {{backbone: lenet5_relu}}
data: {{name: mnist, options: {{root: {tmp_path / 'data'}, image_size: 32}}, batch_size: 16}}
train: {{epochs: 1, threads: 1}}
log: {{wandb: disabled, progress: false}}
""")
    assert main(["run", str(exp), f"runs_dir={tmp_path / 'runs'}"]) == 0, capsys.readouterr().err
    (done,) = (tmp_path / "runs" / "mnist_tiny").glob("*/seed0/DONE")
    assert (done.parent / "result.json").is_file()
