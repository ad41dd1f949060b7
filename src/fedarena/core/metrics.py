"""Evaluation metrics on predictions and on update matrices."""

from __future__ import annotations

from typing import Optional

import torch


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``pred == y``; NaN for an empty set."""
    return int((pred == y).sum()) / y.numel() if y.numel() else float("nan")


def backdoor_accuracy(pred_triggered: torch.Tensor, target: int | torch.Tensor) -> float:
    """Attack success rate: share of triggered inputs (whose true label is not the target)
    classified as the target. The caller passes only those inputs' predictions."""
    if pred_triggered.numel() == 0:
        return float("nan")
    return int((pred_triggered == target).sum()) / pred_triggered.numel()


def class_accuracy(pred: torch.Tensor, y: torch.Tensor, cls: int) -> float:
    """Accuracy on the test samples whose true label is ``cls`` (the paper's base-class accuracy)."""
    m = y == cls
    return accuracy(pred[m], y[m])


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    return [class_accuracy(pred, y, c) for c in range(num_classes)]


def row_norms(U: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row (NaN/Inf rows give NaN/Inf)."""
    return torch.linalg.vector_norm(U, dim=1)


def cosine_to(U: torch.Tensor, v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of each row of ``U`` with ``v`` (0 where a norm is 0)."""
    num = U @ v
    den = row_norms(U) * torch.linalg.vector_norm(v)
    return torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num))


def detection_rates(flagged: torch.Tensor, malicious: torch.Tensor) -> dict[str, Optional[float]]:
    """True/false positive rates of a reject decision (``flagged`` = rejected)."""
    flagged, malicious = flagged.bool(), malicious.bool()
    tp = int((flagged & malicious).sum())
    fp = int((flagged & ~malicious).sum())
    pos, neg = int(malicious.sum()), int((~malicious).sum())
    return {"tpr": tp / pos if pos else None, "fpr": fp / neg if neg else None}
