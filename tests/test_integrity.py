"""Dataset files: hashes checked before parsing (also files already on disk), no code run from a pickle,
damaged files and out-of-range labels reported as one data error."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from fedarena.cli import app
from fedarena.data.datasets import IDX_FILES, load_cifar10, load_fashion_mnist, load_mnist
from fedarena.data.edge_sets import load_edge_set
from fedarena.data.integrity import restricted_unpickle
from fedarena.errors import DataError

from test_datasets import _fake_mnist_folder, _write_idx

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _Payload:
    """Unpickling this object calls ``os.system`` (writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant_batches(folder, marker, labels=None):
    folder.mkdir(parents=True)
    for name in BATCHES:
        d = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": labels or [0, 1]}
        if name == "data_batch_1" and marker is not None:
            d["evil"] = _Payload(marker)
        (folder / name).write_bytes(pickle.dumps(d))


def test_planted_cifar_batch_refused_before_parsing(tmp_path):
    marker = tmp_path / "pwned"
    _plant_batches(tmp_path / "cifar10" / "cifar-10-batches-py", marker)
    with pytest.raises(DataError, match=r"data_batch_1 has MD5 .*not a known copy"):
        load_cifar10(root=str(tmp_path), download=False)
    assert not marker.exists()


def test_planted_cifar_batch_never_runs_code_even_unverified(tmp_path):
    marker = tmp_path / "pwned"
    _plant_batches(tmp_path / "cifar10" / "cifar-10-batches-py", marker)
    with pytest.raises(DataError, match=r"not a plain data pickle .*refuses global posix.system") as e:
        load_cifar10(root=str(tmp_path), download=False, verify=False)
    assert "\n" not in str(e.value) and not marker.exists()


def test_planted_tarball_refused_and_unverified_one_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar10"
    folder.mkdir()
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in BATCHES:
            raw = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Payload(marker)})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(DataError, match="SHA-256 .*not a known copy"):
        load_cifar10(root=str(tmp_path), download=False)
    with pytest.raises(DataError, match="refuses global"):
        load_cifar10(root=str(tmp_path), download=False, verify=False)
    assert not marker.exists()


def test_restricted_unpickle_admits_arrays_only():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = restricted_unpickle(pickle.dumps({b"data": a, "labels": [1, 2], "n": 1.5}, protocol=2), "x")
    np.testing.assert_array_equal(out[b"data"], a)
    for evil in (pickle.dumps(eval), pickle.dumps(os.getcwd), b"not a pickle"):
        with pytest.raises(DataError):
            restricted_unpickle(evil, "x")


def test_cifar_labels_out_of_range(tmp_path):
    _plant_batches(tmp_path / "cifar10" / "cifar-10-batches-py", None, labels=[0, 255])
    with pytest.raises(DataError, match="holds label 255, outside 0..9"):
        load_cifar10(root=str(tmp_path), download=False, verify=False)


def test_idx_file_of_unknown_hash_refused_before_parsing(tmp_path):
    _fake_mnist_folder(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz has SHA-256 .*data.verify=false"):
        load_mnist(root=str(tmp_path), download=False)


def test_idx_labels_out_of_range(tmp_path):
    _fake_mnist_folder(tmp_path)
    _write_idx(tmp_path / "mnist" / IDX_FILES[1], np.full(12, 255, dtype=np.uint8), 0x08)
    with pytest.raises(DataError, match="holds label 255, outside 0..9"):
        load_mnist(root=str(tmp_path), download=False, verify=False)


def test_damaged_mnist_tail_is_a_data_error(tmp_path):
    _fake_mnist_folder(tmp_path)
    (tmp_path / "mnist" / IDX_FILES[2]).write_bytes(b"\x1f\x8b garbage")
    for verify in (False, True):
        with pytest.raises(
            DataError, match="t10k-images-idx3-ubyte.gz is damaged" if not verify else "not a known copy"
        ) as e:
            load_edge_set("mnist", (1, 28, 28), root=str(tmp_path), verify=verify)
        assert "\n" not in str(e.value)


def test_npz_with_pickled_objects_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "tail.npz"
    np.savez(p, x=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(DataError, match="object .pickled. arrays are refused"):
        load_edge_set(str(p), (1, 8, 8))
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match="not a plain-array .npz"):
        load_edge_set(str(tmp_path / "bad.npz"), (1, 8, 8))
    assert not marker.exists()


def test_shared_offline_copies_pass_verification(shared_data):
    d = load_fashion_mnist(root=str(shared_data), download=False)
    assert len(d.y_train) == 60000
    assert len(load_mnist(root=str(shared_data), download=False).y_train) == 8000


def test_cli_planted_cifar_exit_2_one_line(tmp_path):
    marker = tmp_path / "pwned"
    _plant_batches(tmp_path / "cifar10" / "cifar-10-batches-py", marker)
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--quiet",
            "--set",
            "data.dataset=cifar10",
            "--set",
            f"data.root={tmp_path}",
            "--set",
            "data.download=false",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2 and "not a known copy" in res.output and "Traceback" not in res.output
    assert not marker.exists()
