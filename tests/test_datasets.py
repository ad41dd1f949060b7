"""Dataset loaders: IDX reader on generated files, offline data, missing-file message, digits, synthetic."""

import gzip
import struct

import numpy as np
import pytest
import torch

from fedarena.data.datasets import (
    IDX_FILES,
    SOURCES,
    load_cifar10,
    load_digits_dataset,
    load_fashion_mnist,
    load_mnist,
    load_synthetic,
    read_idx,
)
from fedarena.errors import ConfigError, DataNotFoundError
from fedarena.registry import DATASETS


def _write_idx(path, a: np.ndarray, code: int, gz: bool = True) -> None:
    """IDX by hand: 0x0000, type code, ndim, big-endian uint32 dims, big-endian data."""
    body = struct.pack(">HBB", 0, code, a.ndim) + struct.pack(">" + "I" * a.ndim, *a.shape) + a.tobytes()
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(body)


def test_read_idx_roundtrip_uint8_gz(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    _write_idx(tmp_path / "x-idx3-ubyte.gz", a, 0x08)
    b = read_idx(tmp_path / "x-idx3-ubyte.gz")
    assert b.shape == (2, 3, 4) and b.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_read_idx_labels_and_bigendian_types(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(tmp_path / "l-idx1-ubyte", labels, 0x08, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "l-idx1-ubyte"), labels)
    f = np.array([[1.5, -2.0], [0.25, 1e3]], dtype=">f4")
    _write_idx(tmp_path / "f.gz", f, 0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.gz"), f.astype(np.float32))
    i = np.array([70000, -3], dtype=">i4")
    _write_idx(tmp_path / "i.gz", i, 0x0C)
    assert read_idx(tmp_path / "i.gz").tolist() == [70000, -3]


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x1f\x00\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="type code"):
        read_idx(bad)
    _write_idx(bad, np.zeros(5, dtype=np.uint8), 0x08)
    raw = gzip.open(bad).read()
    with gzip.open(bad, "wb") as fh:
        fh.write(raw[:-2])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)


def _fake_mnist_folder(root, name="mnist", n_train=12, n_test=5):
    folder = root / name
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    xtr = g.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    xte = g.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    yte = (np.arange(n_test) % 10).astype(np.uint8)
    for fname, a in zip(IDX_FILES, (xtr, ytr, xte, yte)):
        _write_idx(folder / fname, a, 0x08)
    return xtr, ytr, xte, yte


def test_mnist_loader_on_generated_files(tmp_path):
    xtr, ytr, xte, yte = _fake_mnist_folder(tmp_path)
    d = load_mnist(root=str(tmp_path), download=False, verify=False)  # generated files: no known hash
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert torch.allclose(d.x_train[3, 0], torch.from_numpy(xtr[3]).float() / 255)
    assert d.y_train.dtype == torch.int64 and d.y_train.tolist() == ytr.tolist()
    assert d.num_classes == 10 and d.mean == (0.1307,) and d.std == (0.3081,)


def test_missing_files_one_line_message(tmp_path):
    (tmp_path / "fashion-mnist").mkdir()
    _write_idx(tmp_path / "fashion-mnist" / IDX_FILES[1], np.zeros(3, dtype=np.uint8), 0x08)
    with pytest.raises(DataNotFoundError) as e:
        load_fashion_mnist(root=str(tmp_path), download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("data.root: fashion-mnist files missing in ")
    assert str(tmp_path / "fashion-mnist") in msg
    for f in (IDX_FILES[0], IDX_FILES[2], IDX_FILES[3]):
        assert f in msg
    assert IDX_FILES[1] not in msg  # present, so not listed
    assert "data.download=true" in msg and SOURCES["fashion-mnist"]["url"] in msg


def test_missing_cifar_one_line_message(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10(root=str(tmp_path), download=False)
    msg = str(e.value)
    assert "\n" not in msg and "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg
    assert str(tmp_path / "cifar10") in msg


def test_damaged_file_is_a_data_error(tmp_path):
    _fake_mnist_folder(tmp_path)
    with gzip.open(tmp_path / "mnist" / IDX_FILES[0], "wb") as fh:
        fh.write(b"\x12\x34\x08\x03")
    with pytest.raises(DataNotFoundError, match="damaged"):
        load_mnist(root=str(tmp_path), download=False, verify=False)


def test_canonical_hashes_are_complete():
    for name in ("mnist", "fashion-mnist"):
        assert set(SOURCES[name]["sha256"]) == set(IDX_FILES)
    for table in SOURCES.values():
        for h in table["sha256"].values():
            assert len(h) == 64 and int(h, 16) >= 0


def test_fashion_mnist_shared(shared_data):
    d = load_fashion_mnist(root=str(shared_data), download=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10


def test_mnist_subset_shared(shared_data):
    d = load_mnist(root=str(shared_data), download=False)
    assert d.x_train.shape == (8000, 1, 28, 28) and d.x_test.shape == (2000, 1, 28, 28)
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    assert set(d.y_train.unique().tolist()) == set(range(10))
    # raw pixel mean close to the MNIST statistic used for normalisation
    assert abs(float(d.x_train.mean()) - 0.1307) < 0.02


def test_digits_fixed_stratified_split():
    a, b = load_digits_dataset(), load_digits_dataset()
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    # stratified: every class's test share is 20% of its samples, rounded
    n_tr, n_te = torch.bincount(a.y_train, minlength=10), torch.bincount(a.y_test, minlength=10)
    share = n_te.float() / (n_tr + n_te).float()
    assert ((share - 0.2).abs() < 0.01).all()


def test_synthetic_shapes_and_determinism():
    d = load_synthetic(image_size=32, channels=3, train_size=200, test_size=50, num_classes=4)
    assert d.x_train.shape == (200, 3, 32, 32) and d.x_test.shape == (50, 3, 32, 32)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 4
    assert torch.bincount(d.y_train).tolist() == [50] * 4
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    e = load_synthetic(image_size=32, channels=3, train_size=200, test_size=50, num_classes=4)
    assert torch.equal(d.x_train, e.x_train)
    f = load_synthetic(image_size=32, channels=3, train_size=200, test_size=50, num_classes=4, synthetic_seed=1)
    assert not torch.equal(d.x_train, f.x_train)
    # the class signal is there: nearest class mean on clean data gets most test samples right
    means = torch.stack([d.x_train[d.y_train == c].mean(0) for c in range(4)])
    pred = torch.cdist(d.x_test.flatten(1), means.flatten(1)).argmin(1)
    assert float((pred == d.y_test).float().mean()) > 0.9


def test_synthetic_bad_option():
    with pytest.raises(ConfigError, match=r"^data\.synthetic\.image_size: must be in 1\.\.512"):
        load_synthetic(image_size=0)


def test_registry_names():
    assert {"digits", "synthetic", "mnist", "fashion-mnist", "cifar10"} <= set(DATASETS.names())


def _fake_cifar_tarball(folder, per_batch=4):
    """A cifar-10-python.tar.gz with the real layout (pickled dicts of uint8 rows and labels)."""
    import io
    import pickle
    import tarfile

    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    batches = {}
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            d = {"data": g.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(range(per_batch))}
            batches[name] = d
            raw = pickle.dumps(d)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


def test_cifar10_from_local_tarball(tmp_path):
    batches = _fake_cifar_tarball(tmp_path / "cifar10")
    d = load_cifar10(root=str(tmp_path), download=False, verify=False)  # generated tarball: read in memory
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    # row layout: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    row = batches["data_batch_2"]["data"][1]
    assert torch.allclose(d.x_train[5, 1, 0, :], torch.from_numpy(row[1024:1056]).float() / 255)
    assert d.y_test.tolist() == [0, 1, 2, 3] and d.mean == (0.4914, 0.4822, 0.4465)
    assert not (tmp_path / "cifar10" / "cifar-10-batches-py").exists()  # nothing extracted


class _FakeResponse:
    def __init__(self, payload: bytes):
        import io

        self._buf = io.BytesIO(payload)

    def read(self, n=-1):
        return self._buf.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_sha256(tmp_path, monkeypatch):
    import hashlib

    from fedarena.data import datasets as ds

    payload = b"not the real file"
    seen = []
    monkeypatch.setattr(
        ds.urllib.request, "urlopen", lambda req, timeout: seen.append(req.full_url) or _FakeResponse(payload)
    )
    name = IDX_FILES[3]
    with pytest.raises(DataNotFoundError, match=r"^data\.download: .* has SHA-256 .* expected f7ae60f9"):
        ds.download("mnist", name, tmp_path)
    assert seen == ["https://ossci-datasets.s3.amazonaws.com/mnist/" + name]
    assert not any(tmp_path.iterdir())  # nothing half-written is left behind
    monkeypatch.setitem(ds.SOURCES["mnist"]["sha256"], name, hashlib.sha256(payload).hexdigest())
    path = ds.download("mnist", name, tmp_path)
    assert path.read_bytes() == payload
