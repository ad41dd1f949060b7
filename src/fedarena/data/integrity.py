"""Dataset file integrity: known hashes checked before parsing, and pickles parsed without running code.

Every dataset file is hashed before it is parsed, also when it was already on disk (a
planted or damaged file is refused before a byte of it is interpreted). The known hashes
live here, in the code:

* IDX files (MNIST, Fashion-MNIST): the SHA-256 of the canonical downloads and of the
  offline copies documented in ``shared/data/README.md`` (an MNIST 10k subset and a
  repackaged Fashion-MNIST; same format, other bytes).
* CIFAR-10: the SHA-256 of ``cifar-10-python.tar.gz``. Its batches are read from the
  verified tarball in memory. Extracted batches (``cifar-10-batches-py/``, when no
  tarball is there) are checked against the MD5 values published with the dataset's
  reference loaders (torchvision ``CIFAR10.train_list``/``test_list``): no SHA-256 of the
  extracted batches is published.

``data.verify=false`` accepts files with other hashes (a user's own repackaged copy);
parsing stays code-free either way: CIFAR-10 batches go through
:func:`restricted_unpickle`, which admits numpy array reconstruction and plain
containers only, never an arbitrary import.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

#: SHA-256 of the offline copies of ``shared/data`` (see its README): other bytes than
#: the canonical downloads, same content format.
OFFLINE_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "40b41a9026ed0a370c080401cadfec66ba616489c434b4317724bc23a1fd2c0b",
        "train-labels-idx1-ubyte.gz": "ab281301ddeca0e43566beef3599d6a77ff39f3647bf876cf721c612ecf8ef20",
        "t10k-images-idx3-ubyte.gz": "98357793cef2cf973ffc0144d3021809a8c7e66061dcd663bb79230cbb014ea7",
        "t10k-labels-idx1-ubyte.gz": "2bbc1b7897d1fb06dd02a3b20afe4faa587af344340eaf40f7b81d580fca02c6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "fb51381c2a787544c6f93c0b34f40f977d04bf47c370e052d062002ebec965b0",
        "train-labels-idx1-ubyte.gz": "7aae7312bec13c4276ba4f508cb808236a247c7c5c5d603bcd44f9efd6debac4",
        "t10k-images-idx3-ubyte.gz": "ce5807910b1ce24da10a7945e0c2a7b71952d43df92560efb01dc78c2457f3b6",
        "t10k-labels-idx1-ubyte.gz": "6bdc149cf8a23f9cae3b9494cbc09c26232a42dc6aac25f6d77a258f51ffda9a",
    },
}

#: MD5 of the extracted CIFAR-10 python batches, as published with torchvision's loader.
CIFAR10_BATCH_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, known: set[str], algorithm: str = "sha256") -> None:
    """Raise :class:`DataError` unless ``path``'s hash is one of ``known``."""
    got = file_hash(path, algorithm)
    if got not in known:
        label = {"sha256": "SHA-256", "md5": "MD5"}.get(algorithm, algorithm.upper())
        raise DataError(
            f"data.root: {path} has {label} {got}, not a known copy of this file; it was not read "
            "(delete it and set data.download=true, or set data.verify=false to use your own copy)"
        )


#: the only globals a CIFAR-10 batch may name (numpy array and dtype reconstruction)
def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    rec = multiarray._reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): rec,
        ("numpy._core.multiarray", "_reconstruct"): rec,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, latin-1 only."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refuses _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refuses global {module}.{name} (only numpy arrays are admitted)")
        return obj


def restricted_unpickle(raw: bytes, source: str) -> Any:
    """Parse a pickle that may hold only numpy arrays, dicts, lists, strings and numbers.

    Any other global (``os.system``, ``builtins.eval``, ...) is refused before it is
    called: a planted file raises :class:`DataError` and runs nothing."""
    try:
        return _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"data.root: {source} is not a plain data pickle ({e}); it was not used") from None


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    """Raise :class:`DataError` when a label is outside ``0..num_classes-1``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.max() if labels.max() >= num_classes else labels.min())
        raise DataError(f"data.root: {source} holds label {bad}, outside 0..{num_classes - 1}; the file is damaged")
