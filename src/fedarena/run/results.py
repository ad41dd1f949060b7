"""What a run produces, as records: :class:`RunResult` (metrics, client and round rows,
summary) and the functions that turn a round's outcome into those rows.

Kept apart from the simulation so that the lockstep engine, the runner and the Flower
integration read and write records without importing the simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from ..config import ExperimentConfig
from ..core.metrics import cosine_to, row_norms

if TYPE_CHECKING:  # pragma: no cover
    from ..attacks.base import Attack
    from ..core.layout import ParamLayout
    from ..defenses.base import Aggregate


@dataclass
class RunResult:
    config: ExperimentConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per-round diagnostics, every round
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundObservation:
    """A finished round as an observer sees it (``Simulation.run(observe=...)``,
    ``Lockstep.run(observe=...)``): for instrumentation such as a paper's diagnostics,
    without driving rounds or reading the simulation's internals.

    ``U``: the rows the defense saw (crafted rows included), one per cohort client;
    ``malicious``: ``(k,)`` bool, the rows that attacked this round; ``aggregate``: the
    defense's output; ``params_before`` / ``params_after``: the flat global model before
    and after the round (``params_after`` is None when the round diverged); ``metrics``:
    the round's evaluation when it was evaluated (``eval.every``), else None.
    """

    round: int
    cohort: np.ndarray
    malicious: np.ndarray
    U: torch.Tensor
    aggregate: "Aggregate"
    layout: "ParamLayout"
    params_before: torch.Tensor
    params_after: Optional[torch.Tensor]
    metrics: Optional[dict[str, Any]] = None
    diverged: Optional[str] = None


def scalar_info(info: dict[str, Any]) -> dict[str, Any]:
    """The aggregator's diagnostics that fit in a JSON line (scalars)."""
    out = {}
    for k, v in info.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float, bool, str)):
            out[f"defense_{k}"] = v
    return out


def round_record(rec: dict[str, Any], attack: Attack) -> dict[str, Any]:
    """Norms that explain a round: benign update norm (mean, max), aggregate norm, the
    defense's and the attack's scalar diagnostics."""
    U, mal = rec["honest_U"], torch.from_numpy(rec["malicious"])
    out: dict[str, Any] = {"round": rec["round"], "num_attacking": int(mal.sum())}
    if not bool(mal.all()):
        n = row_norms(U)[~mal.to(U.device)]  # the benign rows' norms, without copying those rows
        out.update(benign_norm_mean=float(n.mean()), benign_norm_max=float(n.max()))
    out["aggregate_norm"] = _finite_or_none(float(torch.linalg.vector_norm(rec["agg"].update)))
    out.update(scalar_info(rec["agg"].info))
    if mal.any():
        out.update({f"attack_{k}": v for k, v in attack.diagnostics().items()})
    return out


def client_records(rec: dict[str, Any], is_malicious: np.ndarray) -> list[dict[str, Any]]:
    U, agg = rec["U"], rec["agg"]
    norms_t = row_norms(U)
    norms = norms_t.tolist()

    def finite(
        a: torch.Tensor, sum_of: torch.Tensor
    ) -> torch.Tensor:  # a finite sum: no NaN/Inf entry (one cheap pass)
        return a if bool(torch.isfinite(sum_of.sum())) else torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)

    cos = cosine_to(finite(U, norms_t), finite(agg.update, agg.update)).tolist()
    w = agg.weights.tolist() if agg.weights is not None else None
    scores = agg.info.get("client_scores")  # a rule's per-row suspicion score (detection metrics)
    scores = scores.tolist() if isinstance(scores, torch.Tensor) and scores.numel() == len(rec["cohort"]) else None
    out = []
    for i, cid in enumerate(rec["cohort"]):
        r = {
            "round": rec["round"],
            "client": int(cid),
            "malicious": bool(is_malicious[cid]),
            "attacking": bool(rec["malicious"][i]),
            "norm": _finite_or_none(norms[i]),
            "cos_to_aggregate": cos[i],
        }
        if w is not None:
            key = "accepted" if agg.weights.dtype == torch.bool else "weight"
            r[key] = w[i]
        if rec.get("extras"):
            r.update(rec["extras"][i])
        if scores is not None:
            r["score"] = _finite_or_none(float(scores[i]))
        out.append(r)
    return out


def _finite_or_none(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


def summarize(
    metrics: list[dict], cfg: ExperimentConfig, wall: float, error: Optional[str], completed: int
) -> dict[str, Any]:
    last = metrics[-1] if metrics else {}
    bd = [m["backdoor_acc"] for m in metrics if m.get("backdoor_acc") is not None]
    from ..resolve import describe

    return {
        "name": cfg.name,
        "seed": cfg.seed,
        **describe(cfg),
        "rounds": cfg.fl.rounds,
        "rounds_completed": completed,
        "final_main_acc": last.get("main_acc"),
        "final_loss": last.get("loss"),
        "final_backdoor_acc": last.get("backdoor_acc"),
        "max_backdoor_acc": max(bd) if bd else None,
        "final_base_acc": last.get("base_acc"),
        "wall_time_s": round(wall, 3),
        "status": "ok" if error is None else "diverged",
        "error": error,
    }
