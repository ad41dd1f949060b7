"""Datasets: loaders that return a :class:`TensorDataset` of raw images in [0, 1].

Inputs are stored raw (pixel values in [0, 1], shape ``(N, C, H, W)``); the per-dataset
normalisation (``mean``/``std``) is applied when a batch is fed to the model, so data
poisoning (triggers) works on the raw pixels, as in the papers' code.

Files for ``mnist``/``fashion-mnist`` are the canonical IDX gz files under
``<data.root>/<dataset>/``; ``cifar10`` reads the python pickle batches under
``<data.root>/cifar10/`` (the tarball, read in memory, or its extracted
``cifar-10-batches-py/``). Missing files are downloaded from the canonical sources
(:data:`SOURCES`) when ``data.download`` is true; otherwise
:class:`~fedarena.errors.DataNotFoundError` says, in one line, which files to put where.
Every file is checked against its known hashes before it is parsed, also when it was
already on disk (:mod:`fedarena.data.integrity`; ``data.verify=false`` accepts other
copies), and nothing is ever unpickled with the plain pickle module.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError, DataNotFoundError
from ..registry import DATASETS
from .integrity import CIFAR10_BATCH_MD5, OFFLINE_SHA256, check_labels, restricted_unpickle, verify_file


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
def load_digits_dataset(*, root: Optional[str] = None, download: bool = True, verify: bool = True) -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), scaled to [0, 1]; fixed stratified 80/20 split.

    The split is ``train_test_split(test_size=0.2, stratify=y, random_state=0)``: the same
    1,437 / 360 images in every run, whatever the run's seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return TensorDataset(
        "digits",
        torch.from_numpy(xtr),
        torch.from_numpy(ytr),
        torch.from_numpy(xte),
        torch.from_numpy(yte),
        10,
        (0.5,),
        (0.5,),
    )


# ---------------------------------------------------------------- synthetic
MAX_SYNTHETIC_PIXELS = 5 * 10**8  # 2 GiB of float32


@DATASETS.register("synthetic")
def load_synthetic(
    *,
    root: Optional[str] = None,
    download: bool = True,
    verify: bool = True,
    num_classes: int = 10,
    image_size: int = 8,
    channels: int = 1,
    train_size: int = 2000,
    test_size: int = 500,
    noise: float = 0.35,
    synthetic_seed: int = 0,
) -> TensorDataset:
    """Generated class-conditional images: one random prototype per class plus Gaussian noise, clipped to [0, 1].

    Options are set under ``data.synthetic`` (e.g. ``--set data.synthetic.image_size=32``).
    Class ``c``'s prototype has i.i.d. uniform pixels; a sample is its prototype plus
    ``noise * N(0, 1)`` per pixel. Labels are balanced (``i mod num_classes``, shuffled).
    The data depend only on ``synthetic_seed``, not on the run's seed.
    """
    for key, value, low, high in (
        ("num_classes", num_classes, 2, 10_000),
        ("image_size", image_size, 1, 512),
        ("channels", channels, 1, 16),
        ("train_size", train_size, 1, 10**7),
        ("test_size", test_size, 1, 10**7),
        ("noise", noise, 0, 1e6),
    ):
        if not low <= value <= high:
            raise ConfigError(
                f"data.synthetic.{key}", f"must be in {low}..{high:g} (got {value!r})", f"{low}..{high:g}"
            )
    pixels = (train_size + test_size) * channels * image_size**2
    if pixels > MAX_SYNTHETIC_PIXELS:
        raise ConfigError(
            "data.synthetic.train_size",
            f"the generated set would hold {pixels:.3g} pixel values ({4 * pixels / 2**30:.1f} GiB)",
            f"(train_size + test_size) * channels * image_size^2 <= {MAX_SYNTHETIC_PIXELS:.0e}",
        )
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
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``) into a NumPy array.

    Format (LeCun et al., the MNIST page): two zero bytes, a type code (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
    dimensions, one big-endian uint32 per dimension, then the data in C order.
    Raises ``ValueError`` for a bad magic number, an unknown type or a truncated file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    if dtype_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code {dtype_code:#x}")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[dtype_code])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - 4 - 4 * ndim
    if have < need:
        raise ValueError(f"{path}: truncated IDX data ({have} of {need} bytes)")
    data = np.frombuffer(raw, dtype=dtype, count=need // dtype.itemsize, offset=4 + 4 * ndim)
    return data.reshape(dims)


IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

#: Canonical download locations and the SHA-256 of each file. Sources of the hashes:
#: MNIST (PyTorch's mirror of LeCun's files, byte-identical to the originals) and
#: Fashion-MNIST (the Zalando bucket): tensorflow_datasets' ``url_checksums/mnist.txt``
#: (same files on the CVDF mirror: same sizes and MD5s as torchvision's ossci list) and
#: ``url_checksums/fashion_mnist.txt``; CIFAR-10 python tarball: Keras'
#: ``datasets/cifar10.py`` (``file_hash`` of the same URL).
SOURCES: dict[str, dict] = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion-mnist": {
        # this S3 website endpoint serves http only; integrity comes from the SHA-256 check
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/",
        "sha256": {CIFAR10_TARBALL: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
    },
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_folder(name: str, root: Optional[str]) -> Path:
    """``<data.root>/<name>`` (``data.root`` defaults to :func:`default_root`)."""
    return (Path(root).expanduser() if root else default_root()) / name


def download(dataset: str, filename: str, folder: Path) -> Path:
    """Download ``filename`` of ``dataset`` into ``folder`` and check its SHA-256."""
    src = SOURCES[dataset]
    url = src["url"] + filename
    path = folder / filename
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    h = hashlib.sha256()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "fedarena"})
        with urllib.request.urlopen(req, timeout=60) as resp, open(tmp, "wb") as out:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
    except Exception as e:  # network errors
        tmp.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"data.download: could not download {url} ({type(e).__name__}: {e}); put the file at {path} "
            "and set data.download=false"
        ) from None
    want = src["sha256"].get(filename)
    got = h.hexdigest()
    if want and got != want:
        tmp.unlink()
        raise DataNotFoundError(f"data.download: {url} has SHA-256 {got}, expected {want}; not used")
    tmp.rename(path)
    return path


def require(dataset: str, folder: Path, files: tuple[str, ...], download_missing: bool) -> list[Path]:
    """Paths of ``files`` under ``folder``; missing ones are downloaded when allowed, else
    one :class:`DataNotFoundError` line names all of them and where they come from."""
    missing = [f for f in files if not (folder / f).exists()]
    if missing and not download_missing:
        raise DataNotFoundError(
            f"data.root: {dataset} files missing in {folder}: {', '.join(missing)}; put them there "
            f"(from {SOURCES[dataset]['url']}), point data.root at the folder that holds {dataset}/, "
            "or set data.download=true"
        )
    for f in missing:
        download(dataset, f, folder)
    return [folder / f for f in files]


def fetch(dataset: str, filename: str, folder: Path, download: bool) -> Path:
    """Return ``folder/filename``, downloading and checking it if missing and allowed."""
    return require(dataset, folder, (filename,), download)[0]


def known_sha256(dataset: str, filename: str) -> set[str]:
    """Hashes accepted for a file: the canonical download and the documented offline copy."""
    return {
        h
        for h in (
            SOURCES.get(dataset, {}).get("sha256", {}).get(filename),
            OFFLINE_SHA256.get(dataset, {}).get(filename),
        )
        if h
    }


def read_idx_checked(path: Path, dataset: Optional[str] = None, verify: bool = False) -> np.ndarray:
    """:func:`read_idx` that reports a damaged (or, with ``verify``, unknown) file as one
    :class:`DataError` line, before parsing it."""
    if verify and dataset:
        verify_file(path, known_sha256(dataset, path.name))
    try:
        return read_idx(path)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            f"data.root: {path} is damaged ({e}); delete it and set data.download=true, or replace it"
        ) from None


def check_idx_split(folder: Path, x: np.ndarray, y: np.ndarray, split: str, num_classes: int = 10) -> None:
    """Images ``(N, H, W)`` with ``N`` labels in ``0..num_classes-1``, else one :class:`DataError` line."""
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"data.root: {folder}: {split} images {x.shape} and labels {y.shape} do not match")
    check_labels(y, num_classes, f"{folder}/{split}-labels")


def _load_idx_dataset(
    name: str, root: Optional[str], download: bool, mean: float, std: float, verify: bool = True
) -> TensorDataset:
    folder = dataset_folder(name, root)
    files = require(name, folder, IDX_FILES, download)
    xtr, ytr, xte, yte = (read_idx_checked(f, name, verify) for f in files)
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        check_idx_split(folder, x, y, split)

    def img(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    return TensorDataset(
        name,
        img(xtr),
        torch.from_numpy(ytr.astype(np.int64)),
        img(xte),
        torch.from_numpy(yte.astype(np.int64)),
        10,
        (mean,),
        (std,),
    )


@DATASETS.register("mnist")
def load_mnist(*, root: Optional[str] = None, download: bool = True, verify: bool = True) -> TensorDataset:
    """MNIST (LeCun et al. 1998), IDX gz files under ``<data.root>/mnist/``; normalised with mean 0.1307, std 0.3081."""
    return _load_idx_dataset("mnist", root, download, 0.1307, 0.3081, verify)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(*, root: Optional[str] = None, download: bool = True, verify: bool = True) -> TensorDataset:
    """Fashion-MNIST (Xiao et al. 2017), IDX gz files under ``<data.root>/fashion-mnist/``; mean 0.2860, std 0.3530."""
    return _load_idx_dataset("fashion-mnist", root, download, 0.2860, 0.3530, verify)


def _cifar_batches(folder: Path, download: bool, verify: bool) -> dict[str, bytes]:
    """The raw bytes of the six CIFAR-10 batches: from the tarball (SHA-256 checked, read
    in memory, never extracted), else from an extracted ``cifar-10-batches-py/`` (MD5
    checked, see :mod:`fedarena.data.integrity`)."""
    batches = folder / "cifar-10-batches-py"
    tar_path = folder / CIFAR10_TARBALL
    if not tar_path.exists() and all((batches / f).exists() for f in CIFAR10_BATCHES):
        out = {}
        for f in CIFAR10_BATCHES:
            if verify:
                verify_file(batches / f, {CIFAR10_BATCH_MD5[f]}, "md5")
            out[f] = (batches / f).read_bytes()
        return out
    if not tar_path.exists() and not download:
        raise DataNotFoundError(
            f"data.root: cifar10 files missing: put {CIFAR10_TARBALL} (from {SOURCES['cifar10']['url']}) in "
            f"{folder}, or its extracted cifar-10-batches-py/ ({', '.join(CIFAR10_BATCHES)}) there, "
            "or set data.download=true"
        )
    tar_path = fetch("cifar10", CIFAR10_TARBALL, folder, download)
    if verify:
        verify_file(tar_path, known_sha256("cifar10", CIFAR10_TARBALL))
    out = {}
    try:
        with tarfile.open(tar_path) as t:
            for f in CIFAR10_BATCHES:
                member = t.extractfile(f"cifar-10-batches-py/{f}")
                if member is None:
                    raise KeyError(f)
                out[f] = member.read()
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise DataError(f"data.root: {tar_path} is damaged or incomplete ({type(e).__name__}: {e})") from None
    return out


def _cifar_arrays(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    d = restricted_unpickle(raw, source)
    try:
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d["labels"], dtype=np.int64)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"data.root: {source} is not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if len(x) != len(y):
        raise DataError(f"data.root: {source} holds {len(x)} images and {len(y)} labels")
    check_labels(y, 10, source)
    return x, y


@DATASETS.register("cifar10")
def load_cifar10(*, root: Optional[str] = None, download: bool = True, verify: bool = True) -> TensorDataset:
    """CIFAR-10 (Krizhevsky 2009), python batches from ``<data.root>/cifar10/cifar-10-python.tar.gz`` (or extracted)."""
    folder = dataset_folder("cifar10", root)
    raw = _cifar_batches(folder, download, verify)

    def load(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_cifar_arrays(raw[f], str(folder / f)) for f in files]
        xs, ys = zip(*parts)
        return torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0), torch.from_numpy(np.concatenate(ys))

    xtr, ytr = load(CIFAR10_BATCHES[:5])
    xte, yte = load(CIFAR10_BATCHES[5:])
    return TensorDataset("cifar10", xtr, ytr, xte, yte, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
