"""``fedarena bench``, section ``aggregators``: seconds per call of every registered robust
rule on ``n x d`` updates, against straightforward references written here (NumPy
median / sort, pairwise-loop Krum, per-client loops for Weiszfeld and centered clipping)
and the yardsticks: one memory pass (the mean) and one Gram GEMM.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .timing import timed

#: ByzFL 0.0.11 at n=100, d=1e6 on the project's 2-core CPU (seconds per call; issue #6).
BYZFL_SECONDS = {"krum": 0.97, "multi-krum": 1.18, "trimmed-mean": 2.40, "median": 2.49, "rfa": 1.43, "cc": 0.33}
ROBUST_RULES = (
    "median",
    "trimmed-mean",
    "krum",
    "multi-krum",
    "bulyan",
    "rfa",
    "cc",
    "sign",
    "mda",
    "monna",
    "meamed",
    "caf",
    "smea",
    "dnc",
    "signguard",
    "clipped-clustering",
    "fldetector",
    "lasa",
)


def pairwise_loop(A: np.ndarray) -> np.ndarray:
    """Squared distances the straightforward way: a Python loop over pairs."""
    n = len(A)
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            diff = A[i] - A[j]
            D[i, j] = D[j, i] = float(np.dot(diff, diff))
    return D


def _krum_scores(D: np.ndarray, f: int, active: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(active)
    m = len(idx) - f - 2
    scores = np.full(len(D), np.inf)
    for i in idx:
        others = np.sort(np.delete(D[i, idx], np.flatnonzero(idx == i)))
        scores[i] = others[:m].sum()
    return scores


def ref_krum(A: np.ndarray, f: int, D: np.ndarray) -> np.ndarray:
    return A[int(np.argmin(_krum_scores(D, f, np.ones(len(A), bool))))]


def ref_multi_krum(A: np.ndarray, f: int, D: np.ndarray) -> np.ndarray:
    scores = _krum_scores(D, f, np.ones(len(A), bool))
    return A[np.argsort(scores, kind="stable")[: len(A) - f]].mean(0)


def ref_bulyan(A: np.ndarray, f: int, D: np.ndarray) -> np.ndarray:
    n = len(A)
    theta, beta = n - 2 * f, n - 4 * f
    active = np.ones(n, bool)
    chosen = []
    for _ in range(theta):
        i = int(np.argmin(_krum_scores(D, f, active)))
        chosen.append(i)
        active[i] = False
    S = A[chosen]
    med = np.median(S, axis=0)
    nearest = np.argsort(np.abs(S - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(S, nearest, axis=0).mean(0)


def ref_rfa(A: np.ndarray, iters: int = 3, nu: float = 0.1) -> np.ndarray:
    """Smoothed Weiszfeld from 0, per-client loop (Pillutla et al. 2022, Algorithm 2)."""
    z = np.zeros(A.shape[1], dtype=A.dtype)
    for _ in range(iters):
        w = np.array([1.0 / max(nu, float(np.linalg.norm(a - z))) for a in A])
        w = w / w.sum()
        z = sum(wi * a for wi, a in zip(w, A))
    return z


def ref_cc(A: np.ndarray, tau: float = 1.0, iterations: int = 1) -> np.ndarray:
    """Centered clipping from center 0, per-client loop (Karimireddy et al. 2021, Eq. 2)."""
    v = np.zeros(A.shape[1], dtype=A.dtype)
    for _ in range(iterations):
        acc = np.zeros_like(v)
        for a in A:
            diff = a - v
            acc += diff * min(1.0, tau / (float(np.linalg.norm(diff)) + 1e-12))
        v = v + acc / len(A)
    return v


def references(f: int) -> dict[str, tuple[Callable[..., np.ndarray], bool]]:
    """rule -> (reference, needs the pairwise-distance loop)."""
    return {
        "median": (lambda A, D: np.median(A, axis=0), False),
        "trimmed-mean": (lambda A, D: np.sort(A, axis=0)[f : len(A) - f].mean(0), False),
        "krum": (lambda A, D: ref_krum(A, f, D), True),
        "multi-krum": (lambda A, D: ref_multi_krum(A, f, D), True),
        "bulyan": (lambda A, D: ref_bulyan(A, f, D), True),
        "rfa": (lambda A, D: ref_rfa(A), False),
        "cc": (lambda A, D: ref_cc(A), False),
        "sign": (lambda A, D: np.sign(np.sign(A).sum(0)), False),
    }


def bench_aggregators(configs: list[tuple[int, int]], device: torch.device, reps: int, log=None) -> tuple[dict, dict]:
    from ..core.layout import ParamLayout
    from ..defenses.base import RoundContext
    from ..registry import DEFENSES

    rules = [r for r in ROBUST_RULES if r in DEFENSES]
    out: dict[str, Any] = {
        r: {"seconds": {}, "reference_seconds": {}, "speedup": {}, "max_abs_diff_vs_reference": {}} for r in rules
    }
    yard: dict[str, Any] = {}
    for n, d in configs:
        key = f"n={n},d={d:.0e}".replace("+0", "")
        f = n // 5
        g = torch.Generator().manual_seed(n * 7 + d)
        U = torch.randn(n, d, generator=g).to(device)
        A = U.cpu().numpy()
        ctx = RoundContext(
            round=0,
            layout=ParamLayout.from_params({"w": torch.zeros(d)}),
            client_ids=torch.arange(n),
            num_samples=torch.ones(n, dtype=torch.long),
            f=f,
            global_params=torch.zeros(d, device=device),
            generator=torch.Generator().manual_seed(0),
        )
        mean_s = min(timed(lambda: U.mean(0), device)[0] for _ in range(reps + 2))
        gram_s = min(timed(lambda: U @ U.T, device)[0] for _ in range(reps + 2))
        pair_s, D = timed(lambda: pairwise_loop(A), torch.device("cpu"))
        yard[key] = {
            "n": n,
            "d": d,
            "f": f,
            "mean_seconds": mean_s,
            "gram_seconds": gram_s,
            "reference_pairwise_loop_seconds": pair_s,
        }
        refs = references(f)
        for r in rules:
            rule = DEFENSES.build(r, {})
            try:
                rule.validate(n, f)
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                out[r]["seconds"][key] = None
                out[r].setdefault("notes", []).append(f"{key}: {e}")
                continue
            call = lambda: rule.aggregate(U, ctx)
            if hasattr(rule, "reset"):
                rule.reset()
            t0, agg = timed(call, device)
            ts = [t0]
            for _ in range(reps - 1 if t0 > 1.0 else reps):
                rule.reset()
                ts.append(timed(call, device)[0])
            sec = min(ts)
            out[r]["seconds"][key] = sec
            out[r].setdefault("over_gram", {})[key] = sec / gram_s
            if r not in refs:  # no reference implementation: timed only
                if log:
                    log(f"  {r:13s} {key}: {sec:.4f} s")
                continue
            ref_fn, pairwise = refs[r]
            ref_s, ref_out = timed(lambda: ref_fn(A, D), torch.device("cpu"))
            if pairwise:
                ref_s += pair_s  # the reference computes its distances with the pairwise loop
            out[r]["seconds"][key] = sec
            out[r]["reference_seconds"][key] = ref_s
            out[r]["speedup"][key] = ref_s / sec
            out[r]["max_abs_diff_vs_reference"][key] = float(np.abs(agg.update.detach().cpu().numpy() - ref_out).max())
            out[r].setdefault("over_gram", {})[key] = sec / gram_s
            if log:
                log(f"  {r:13s} {key}: {sec:.4f} s (reference {ref_s:.3f} s, x{ref_s / sec:.1f})")
    last = max(configs, key=lambda c: c[0] * c[1])
    last_key = f"n={last[0]},d={last[1]:.0e}".replace("+0", "")
    for r in rules:
        s = out[r]["speedup"].get(last_key)
        out[r]["speedup_vs_reference"] = s
        out[r]["at"] = last_key
        if r in BYZFL_SECONDS and last == (100, 1_000_000) and out[r]["seconds"].get(last_key):
            out[r]["speedup_vs_byzfl"] = BYZFL_SECONDS[r] / out[r]["seconds"][last_key]
    return out, yard


__all__ = [
    "BYZFL_SECONDS",
    "ROBUST_RULES",
    "bench_aggregators",
    "pairwise_loop",
    "ref_bulyan",
    "ref_cc",
    "ref_krum",
    "ref_multi_krum",
    "ref_rfa",
    "references",
]
