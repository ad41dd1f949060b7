"""Tail ("edge-case") sets for edge-case backdoors (Wang et al., NeurIPS 2020, "Attack of the Tails").

An edge-case set holds inputs that benign clients essentially never see (the tail of
the input distribution); attackers label them with the target class. The original
attack uses photos of Southwest Airlines planes labelled "truck" on CIFAR-10. The sets
here can be shipped or generated offline. Every set is returned as raw images in
[0, 1] with the task's input shape ``(C, H, W)`` (resized with bilinear interpolation
and channel repetition when needed), split into an attacker pool (``x_train``) and a
held-out part for measuring backdoor accuracy (``x_test``).

Built-in sets (``attack.edge_set``):

* ``shapes`` -- generated, needs no file: filled axis-aligned rectangles at random
  positions and sizes (each side 1/4 to 3/4 of the image), intensity U(0.6, 1) on a
  black background, plus N(0, 0.05) pixel noise. Neither handwritten digits nor
  clothing look like this; used for ``digits``/``synthetic`` tasks in tests and quick
  reproductions. 1,000 pool + 300 held-out images from ``edge_seed``.
* ``mnist`` -- handwritten MNIST digits (of ``edge_class`` only, or all digits when
  unset), the tail for Fashion-MNIST: the IDX files under ``<root>/mnist/`` where
  ``root`` is ``attack.edge_root``, else ``$FEDARENA_DATA``, else ``~/.cache/fedarena``.
  MNIST's training images form the pool, its test images the held-out part.
* ``inverted`` -- a rare style of the task's own images: intensity-inverted copies
  ``1 - x`` (of class ``edge_class`` only, when set). The pool is made from each
  attacker's own samples, the held-out part from the test set. No file needed.
* ``rare`` -- a rare style of a real class, the closest analogue of the paper's Southwest
  planes (real airplanes, rare in CIFAR-10): the most atypical ``rare_frac`` (default
  20%) of the *test* images of class ``edge_class`` of the dataset ``edge_dataset`` (e.g.
  ``fashion-mnist``, read from ``root`` as above), atypical = farthest (L2, raw pixels)
  from the mean training image of that class. Benign clients never hold these images
  (they train on the training split) but do hold typical images of the class, so the
  model's own generalisation pulls the tail towards the true class. Split 50/50 into pool
  and held-out part with ``edge_seed``.
* a path ending in ``.npz`` -- any images: arrays ``x_train`` and ``x_test``, or a single
  ``x`` split 80/20 with ``edge_seed``. ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``;
  ``uint8`` is divided by 255, floats are clipped to [0, 1].
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError, DataNotFoundError

BUILTIN = ("shapes", "mnist", "inverted", "rare")


@dataclass
class EdgeSet:
    """A tail set. Either fixed pools (``x_train``/``x_test``) or a ``transform`` that
    maps clean raw images to tail images (derived sets such as ``inverted``)."""

    name: str
    x_train: Optional[torch.Tensor] = None
    x_test: Optional[torch.Tensor] = None
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    source_class: Optional[int] = None  # derived sets: which clean class is transformed (None: all)

    @property
    def derived(self) -> bool:
        return self.transform is not None


def fit_shape(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] -> the task's ``(C', H', W')``: bilinear resize, then
    repeat (1 -> 3 channels) or average (3 -> 1) channels."""
    c, h, w = shape
    x = x.float()
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).expand(-1, c, -1, -1) if c != 1 else x.mean(1, keepdim=True)
    return x.clamp(0, 1).contiguous()


def make_shapes(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``n`` generated filled-rectangle images of ``shape`` (see the module docstring)."""
    c, h, w = shape
    g = np.random.default_rng(seed)
    x = np.zeros((n, c, h, w), dtype=np.float32)
    hh = g.integers(max(1, h // 4), max(2, (3 * h) // 4) + 1, size=n)
    ww = g.integers(max(1, w // 4), max(2, (3 * w) // 4) + 1, size=n)
    r0 = g.integers(0, h - hh + 1)
    c0 = g.integers(0, w - ww + 1)
    val = g.uniform(0.6, 1.0, size=n)
    for i in range(n):  # one rectangle per image
        x[i, :, r0[i] : r0[i] + hh[i], c0[i] : c0[i] + ww[i]] = val[i]
    x += 0.05 * g.standard_normal(x.shape).astype(np.float32)
    return torch.from_numpy(np.clip(x, 0.0, 1.0))


def _as_nchw(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a)
    x = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    elif x.dim() != 4:
        raise ConfigError(
            "attack.edge_set", f"images must be (N,H,W), (N,H,W,C) or (N,C,H,W) (got shape {tuple(a.shape)})"
        )
    return x.clamp(0, 1)


def load_npz(path: str, shape: tuple[int, ...], seed: int = 0) -> EdgeSet:
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError("attack.edge_set", f"file {str(p)!r} not found", "a .npz path or " + ", ".join(BUILTIN))
    try:
        with np.load(p, allow_pickle=False) as z:  # never unpickle objects from a data file
            keys = set(z.files)
            if {"x_train", "x_test"} <= keys:
                xtr, xte = _as_nchw(z["x_train"]), _as_nchw(z["x_test"])
            elif "x" in keys:
                x = _as_nchw(z["x"])
                perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
                cut = max(1, int(round(0.8 * len(x))))
                xtr, xte = x[perm[:cut]], x[perm[cut:]]
            else:
                raise ConfigError(
                    "attack.edge_set", f"{p.name} holds {sorted(keys)}", "arrays x_train and x_test, or x"
                )
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise DataError(
            f"attack.edge_set: {p} is not a plain-array .npz ({type(e).__name__}: {e}); "
            "object (pickled) arrays are refused"
        ) from None
    if len(xtr) == 0 or len(xte) == 0:
        raise ConfigError("attack.edge_set", f"{p.name} needs at least one pool and one held-out image")
    return EdgeSet(p.name, fit_shape(xtr, shape), fit_shape(xte, shape))


def load_mnist_tail(
    shape: tuple[int, ...], root: Optional[str], edge_class: Optional[int], verify: bool = True
) -> EdgeSet:
    from .datasets import IDX_FILES, check_idx_split, default_root, read_idx_checked

    base = (
        Path(root).expanduser()
        if root
        else (Path(os.environ["FEDARENA_DATA"]).expanduser() if os.environ.get("FEDARENA_DATA") else default_root())
    )
    folder = base / "mnist"
    files = [folder / f for f in IDX_FILES]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise DataNotFoundError(
            f"attack.edge_root: MNIST files {', '.join(missing)} missing under {folder}; "
            "set attack.edge_root (or $FEDARENA_DATA) to a folder holding mnist/"
        )
    xtr, ytr, xte, yte = (read_idx_checked(f, "mnist", verify) for f in files)
    check_idx_split(folder, xtr, ytr, "train")
    check_idx_split(folder, xte, yte, "t10k")
    if edge_class is not None:
        xtr, xte = xtr[ytr == edge_class], xte[yte == edge_class]
    name = "mnist" if edge_class is None else f"mnist-{edge_class}"
    return EdgeSet(name, fit_shape(_as_nchw(xtr), shape), fit_shape(_as_nchw(xte), shape))


def _data_root(root: Optional[str]) -> Optional[str]:
    if root:
        return root
    return os.environ.get("FEDARENA_DATA") or None


def load_rare_tail(
    shape: tuple[int, ...],
    dataset: Optional[str],
    root: Optional[str],
    edge_class: Optional[int],
    rare_frac: float,
    seed: int,
    verify: bool = True,
) -> EdgeSet:
    from ..registry import DATASETS

    if not dataset:
        raise ConfigError(
            "attack.edge_dataset",
            "the rare tail set needs the dataset it is drawn from",
            ", ".join(n for n in DATASETS.names() if n != "synthetic"),
        )
    if edge_class is None:
        raise ConfigError("attack.edge_class", "the rare tail set needs a class", "a class id, e.g. 0")
    if not 0.0 < rare_frac <= 1.0:
        raise ConfigError("attack.rare_frac", f"must be in (0, 1] (got {rare_frac})", "0 < rare_frac <= 1")
    data = DATASETS.build(dataset, {"root": _data_root(root), "download": False, "verify": verify})
    if not 0 <= edge_class < data.num_classes:
        raise ConfigError("attack.edge_class", f"class {edge_class} out of range", f"0..{data.num_classes - 1}")
    mean = data.x_train[data.y_train == edge_class].mean(0)
    cand = data.x_test[data.y_test == edge_class]
    dist = torch.linalg.vector_norm((cand - mean).reshape(len(cand), -1), dim=1)
    k = max(2, int(round(rare_frac * len(cand))))
    rare = cand[torch.argsort(dist, descending=True)[:k]]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(k))
    half = k // 2
    return EdgeSet(
        f"rare-{dataset}-{edge_class}", fit_shape(rare[perm[:half]], shape), fit_shape(rare[perm[half:]], shape)
    )


def invert(x: torch.Tensor) -> torch.Tensor:
    """The ``inverted`` style: ``1 - x`` on raw [0, 1] images."""
    return 1.0 - x


def load_edge_set(
    name: str,
    shape: tuple[int, ...],
    *,
    root: Optional[str] = None,
    edge_class: Optional[int] = None,
    seed: int = 0,
    num_classes: Optional[int] = None,
    dataset: Optional[str] = None,
    rare_frac: float = 0.2,
    verify: bool = True,
) -> EdgeSet:
    """Build the tail set ``name`` for inputs of ``shape`` = (C, H, W)."""
    if len(shape) != 3:
        raise ConfigError("attack.edge_set", f"needs image inputs (C, H, W), got shape {shape}", "an image dataset")
    if name == "shapes":
        return EdgeSet("shapes", make_shapes(1000, shape, seed), make_shapes(300, shape, seed + 10_000))
    if name == "mnist":
        if edge_class is not None and not 0 <= edge_class <= 9:
            raise ConfigError("attack.edge_class", f"digit {edge_class} out of range", "0..9, or unset for all digits")
        return load_mnist_tail(shape, root, edge_class, verify)
    if name == "inverted":
        if edge_class is not None and num_classes is not None and not 0 <= edge_class < num_classes:
            raise ConfigError("attack.edge_class", f"class {edge_class} out of range", f"0..{num_classes - 1}")
        return EdgeSet("inverted", transform=invert, source_class=edge_class)
    if name == "rare":
        return load_rare_tail(shape, dataset, root, edge_class, rare_frac, seed, verify)
    if name.endswith(".npz"):
        return load_npz(name, shape, seed)
    raise ConfigError("attack.edge_set", f"unknown tail set {name!r}", ", ".join(BUILTIN) + ", or a path to a .npz")
