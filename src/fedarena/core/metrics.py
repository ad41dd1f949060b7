"""Evaluation metrics on predictions and on update matrices."""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

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


def flagged(record: dict[str, Any]) -> Optional[bool]:
    """Whether a defense flagged a client in a round: the one definition every report and
    reproduction uses. ``record``: a client record (``clients.jsonl``); flagged = rejected
    (``accepted`` false) or given weight 0 or less; None when the defense made no
    per-client decision (e.g. the median).

    >>> flagged({"accepted": False}), flagged({"weight": 0.0}), flagged({"weight": 0.2}), flagged({})
    (True, True, False, None)
    """
    if "accepted" in record:
        return not record["accepted"]
    w = record.get("weight")
    return None if w is None else w <= 0


def detection(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Confusion counts and rates of a defense's decisions over one run's client records
    (the truth is ``attacking``: the client attacked in that round); rows without a
    decision are skipped. ``fpr_no_attack_rounds``: false-positive rate in rounds with no
    attacker (rounds of this run: for several runs, :func:`pooled_detection`).

    >>> d = detection([{"round": 0, "attacking": True, "accepted": False},
    ...                {"round": 0, "attacking": False, "accepted": False},
    ...                {"round": 0, "attacking": False, "accepted": True},
    ...                {"round": 1, "attacking": False, "weight": 0.0}])
    >>> (d["tp"], d["fp"], d["tn"], d["precision"], d["recall"], d["fpr"], d["fpr_no_attack_rounds"])
    (1, 2, 1, 0.3333333333333333, 1.0, 0.6666666666666666, 1.0)
    """
    return _rates(_counts(list(records)))


def pooled_detection(runs: Iterable[Iterable[dict[str, Any]]]) -> dict[str, Any]:
    """:func:`detection` over several runs' client records, pooled: the confusion counts
    summed, each run's rounds without attacker found within that run (a round number
    attacked in one run says nothing of the same round number in another).

    >>> attacked = [{"round": 0, "attacking": True, "accepted": False}]
    >>> clean = [{"round": 0, "attacking": False, "accepted": False}]
    >>> d = pooled_detection([attacked, clean])
    >>> (d["tp"], d["fp"], d["fpr_no_attack_rounds"])
    (1, 1, 1.0)
    """
    total = dict.fromkeys(("tp", "fp", "fn", "tn", "fp0", "tn0"), 0)
    for records in runs:
        for k, v in _counts(list(records)).items():
            total[k] += v
    return _rates(total)


def _counts(records: list[dict[str, Any]]) -> dict[str, int]:
    attacked = {r["round"] for r in records if r.get("attacking")}
    tp = fp = fn = tn = fp0 = tn0 = 0
    for r in records:
        f = flagged(r)
        if f is None:
            continue
        bad = bool(r.get("attacking"))
        tp, fp, fn, tn = tp + (f and bad), fp + (f and not bad), fn + (not f and bad), tn + (not f and not bad)
        if r.get("round") not in attacked:
            fp0, tn0 = fp0 + f, tn0 + (not f)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "fp0": fp0, "tn0": tn0}


def _rates(c: dict[str, int]) -> dict[str, Any]:
    tp, fp, fn, tn, fp0, tn0 = (c[k] for k in ("tp", "fp", "fn", "tn", "fp0", "tn0"))
    nan = math.nan
    prec = tp / (tp + fp) if tp + fp else nan
    rec = tp / (tp + fn) if tp + fn else nan
    return {
        "decisions": tp + fp + fn + tn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if tp else (0.0 if tp + fp + fn else nan),
        "fpr": fp / (fp + tn) if fp + tn else nan,
        "fpr_no_attack_rounds": fp0 / (fp0 + tn0) if fp0 + tn0 else nan,
    }


def detection_rates(flagged: torch.Tensor, malicious: torch.Tensor) -> dict[str, Optional[float]]:
    """True/false positive rates of a reject decision (``flagged`` = rejected)."""
    flagged, malicious = flagged.bool(), malicious.bool()
    tp = int((flagged & malicious).sum())
    fp = int((flagged & ~malicious).sum())
    pos, neg = int(malicious.sum()), int((~malicious).sum())
    return {"tpr": tp / pos if pos else None, "fpr": fp / neg if neg else None}


def backdoor_durability(
    attackers: Sequence[int], backdoor: Sequence[Optional[float]], threshold: float = 0.3
) -> dict[str, Any]:
    """How long a backdoor outlives its attack (the quantity Neurotoxin, Zhang et al. ICML
    2022, Fig. 3, and Chameleon, Dai & Li ICML 2023, Table 2, are judged by).

    ``attackers[t]``: attackers in round ``t``'s cohort; ``backdoor[t]``: backdoor accuracy
    after round ``t`` (``None`` when not evaluated). The attack *stops* after its last round
    with an attacker, ``L``. ``backdoor_durability`` is the number of rounds after ``L``
    until the backdoor accuracy is first evaluated below ``threshold``
    (``eval.recovery_threshold``): 0 when it is already below after round ``L``. When it
    never falls below, the value is *censored* at the rounds observed after ``L`` plus one
    (``T - L``) and ``backdoor_durability_censored`` is True. No attacking round: all None.

    >>> backdoor_durability([2, 2, 0, 0, 0, 0], [0.9, 0.95, 0.8, 0.5, 0.2, 0.1])
    {'backdoor_durability': 3, 'backdoor_durability_censored': False, 'attack_last_round': 1}
    >>> backdoor_durability([2, 0, 0], [0.9, 0.8, 0.7])["backdoor_durability"]
    3
    """
    T = len(attackers)
    ba = list(backdoor)[:T] + [None] * max(0, T - len(backdoor))
    attacked = [t for t in range(T) if attackers[t] > 0]
    if not attacked:
        return {"backdoor_durability": None, "backdoor_durability_censored": None, "attack_last_round": None}
    last = attacked[-1]
    k = next((t - last for t in range(last, T) if ba[t] is not None and ba[t] < threshold), None)
    return {
        "backdoor_durability": T - last if k is None else k,
        "backdoor_durability_censored": k is None,
        "attack_last_round": last,
    }
