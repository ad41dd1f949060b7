"""A validation split carved from the training data (``eval.split=validation``).

Tuning a defense on the test set would report an optimistic test accuracy. With
``eval.split=validation`` a run trains on the training data minus a stratified
``eval.validation_frac`` share and evaluates (main and backdoor accuracy) on that share
instead of the test set. The split is fixed (scikit-learn's ``train_test_split`` with
``random_state=0``, stratified by label): every seed and every defense sees the same
validation samples, so runs stay paired, and the test set is never touched.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .datasets import TensorDataset

_CACHE: dict[tuple[int, float], tuple[TensorDataset, TensorDataset]] = {}


def validation_indices(labels: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a stratified ``frac`` share held out, fixed seed."""
    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None  # a class of one sample cannot be split
    train, val = train_test_split(idx, test_size=frac, random_state=0, stratify=stratify)
    return np.sort(train), np.sort(val)


def validation_split(data: TensorDataset, frac: float) -> TensorDataset:
    """``data`` with ``x_train`` minus the validation share and ``x_test`` the validation share
    (cached per dataset object: runs of one process share one copy, as they share the data)."""
    key = (id(data), float(frac))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    train, val = validation_indices(data.y_train.cpu().numpy(), frac)
    tr, va = torch.from_numpy(train).to(data.x_train.device), torch.from_numpy(val).to(data.x_train.device)
    out = dataclasses.replace(
        data, x_train=data.x_train[tr], y_train=data.y_train[tr], x_test=data.x_train[va], y_test=data.y_train[va]
    )
    if len(_CACHE) >= 4:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (data, out)
    return out
