"""Datasets: loaders that return a :class:`TensorDataset` of raw images in [0, 1].

Inputs are stored raw (pixel values in [0, 1], shape ``(N, C, H, W)``); the per-dataset
normalisation (``mean``/``std``) is applied when a batch is fed to the model, so data
poisoning (triggers) works on the raw pixels, as in the papers' code.

Files for ``mnist``/``fashion-mnist`` are the canonical IDX gz files under
``<data.root>/<dataset>/``; ``cifar10`` reads the python pickle batches under
``<data.root>/cifar10/cifar-10-batches-py/``. Missing files are downloaded (with a
SHA-256 check) when ``data.download`` is true.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataNotFoundError
from ..registry import DATASETS


@dataclass
class TensorDataset:
    """A train/test pair of raw tensors plus what is needed to feed a model."""

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def normalizer(self, device: torch.device | str = "cpu"):
        """``x -> (x - mean) / std`` per channel, for raw batches ``(..., C, H, W)``."""
        c = self.x_train.shape[1]
        mean = torch.tensor(self.mean * (c if len(self.mean) == 1 else 1), device=device).view(c, 1, 1)
        std = torch.tensor(self.std * (c if len(self.std) == 1 else 1), device=device).view(c, 1, 1)
        if torch.all(mean == 0) and torch.all(std == 1):
            return None
        return lambda x: (x - mean) / std

    def to(self, device: torch.device | str) -> "TensorDataset":
        for f in ("x_train", "y_train", "x_test", "y_test"):
            setattr(self, f, getattr(self, f).to(device))
        return self


def default_root() -> Path:
    """``$FEDARENA_DATA`` if set, else ``~/.cache/fedarena``."""
    env = os.environ.get("FEDARENA_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/fedarena").expanduser()


# ---------------------------------------------------------------- digits
@DATASETS.register("digits")
def load_digits_dataset(*, root: Optional[str] = None, download: bool = True, seed_split: int = 0) -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), scaled to [0, 1]; fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed_split)
    return TensorDataset("digits", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                         torch.from_numpy(yte), 10, (0.5,), (0.5,))


# ---------------------------------------------------------------- synthetic
@DATASETS.register("synthetic")
def load_synthetic(
    *,
    root: Optional[str] = None,
    download: bool = True,
    num_classes: int = 10,
    image_size: int = 8,
    channels: int = 1,
    train_size: int = 2000,
    test_size: int = 500,
    noise: float = 0.35,
    synthetic_seed: int = 0,
) -> TensorDataset:
    """Generated class-conditional images: each class is a random smooth prototype plus noise, clipped to [0, 1]."""
    g = np.random.default_rng(synthetic_seed)
    shape = (channels, image_size, image_size)
    protos = g.uniform(0.0, 1.0, size=(num_classes, *shape)).astype(np.float32)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = np.arange(n) % num_classes
        g.shuffle(y)
        x = protos[y] + noise * g.standard_normal((n, *shape)).astype(np.float32)
        return torch.from_numpy(np.clip(x, 0, 1)), torch.from_numpy(y.astype(np.int64))

    xtr, ytr = make(train_size)
    xte, yte = make(test_size)
    return TensorDataset("synthetic", xtr, ytr, xte, yte, num_classes, (0.5,), (0.5,))


# ---------------------------------------------------------------- IDX (MNIST family)
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    Format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
    big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX type code {dtype_code:#x}")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    return data.reshape(dims)


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: canonical download locations and SHA-256 of each file
SOURCES: dict[str, dict] = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "sha256": {},
    },
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "sha256": {},
    },
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/",
        "sha256": {"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
    },
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dataset: str, filename: str, folder: Path, download: bool) -> Path:
    """Return ``folder/filename``, downloading and checking it if missing and allowed."""
    path = folder / filename
    if path.exists():
        return path
    src = SOURCES[dataset]
    if not download:
        raise DataNotFoundError(
            f"data.root: {path} is missing; put the {dataset} files "
            f"({', '.join(IDX_FILES) if dataset != 'cifar10' else 'cifar-10-python.tar.gz or cifar-10-batches-py/'}) "
            f"under {folder} or set data.download=true"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        urllib.request.urlretrieve(src["url"] + filename, tmp)
    except Exception as e:  # network errors
        raise DataNotFoundError(
            f"data.root: could not download {src['url'] + filename} ({e}); put the file at {path}"
        ) from None
    want = src["sha256"].get(filename)
    got = sha256_of(tmp)
    if want and got != want:
        tmp.unlink()
        raise DataNotFoundError(f"data.download: {filename} has SHA-256 {got}, expected {want}")
    tmp.rename(path)
    return path


def _load_idx_dataset(name: str, root: Optional[str], download: bool, mean: float, std: float) -> TensorDataset:
    folder = (Path(root).expanduser() if root else default_root()) / name
    files = [fetch(name, f, folder, download) for f in IDX_FILES]
    xtr, ytr, xte, yte = (read_idx(f) for f in files)

    def img(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    return TensorDataset(name, img(xtr), torch.from_numpy(ytr.astype(np.int64)), img(xte),
                         torch.from_numpy(yte.astype(np.int64)), 10, (mean,), (std,))


@DATASETS.register("mnist")
def load_mnist(*, root: Optional[str] = None, download: bool = True) -> TensorDataset:
    """MNIST (LeCun et al.), IDX gz files under ``<data.root>/mnist/``."""
    return _load_idx_dataset("mnist", root, download, 0.1307, 0.3081)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(*, root: Optional[str] = None, download: bool = True) -> TensorDataset:
    """Fashion-MNIST (Xiao et al. 2017), IDX gz files under ``<data.root>/fashion-mnist/``."""
    return _load_idx_dataset("fashion-mnist", root, download, 0.2860, 0.3530)


@DATASETS.register("cifar10")
def load_cifar10(*, root: Optional[str] = None, download: bool = True) -> TensorDataset:
    """CIFAR-10 python pickle batches under ``<data.root>/cifar10/cifar-10-batches-py/``."""
    folder = (Path(root).expanduser() if root else default_root()) / "cifar10"
    batches = folder / "cifar-10-batches-py"
    if not batches.exists():
        tar = fetch("cifar10", "cifar-10-python.tar.gz", folder, download)
        with tarfile.open(tar) as t:
            t.extractall(folder, filter="data")

    def load(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            with open(batches / f, "rb") as fh:
                d = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d["labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0), torch.from_numpy(np.concatenate(ys))

    xtr, ytr = load([f"data_batch_{i}" for i in range(1, 6)])
    xte, yte = load(["test_batch"])
    return TensorDataset("cifar10", xtr, ytr, xte, yte, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
