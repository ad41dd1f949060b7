"""CRFL: certifiably robust federated learning by parameter clipping and smoothing.

Xie, Chen, Chen, Li, "CRFL: Certifiably Robust Federated Learning against Backdoor
Attacks", ICML 2021, Algorithm 1 and Sec. 3:

* **Training** (Algorithm 1): the server averages the clients' models (FedAvg), then clips
  the *global parameters* to the L2 norm ``rho`` (``w <- w / max(1, ||w|| / rho)``) and
  perturbs them with Gaussian noise ``N(0, sigma^2 I)``; the next round starts from the
  clipped, noisy model. Here the aggregate is rewritten so that the engine's server step
  lands on that model (FedAvg: ``agg' = (w' - w) / server_lr``; FedSGD: ``agg' = (w - w') / lr``).
* **Certification** (Sec. 3.2, Theorem 2; randomized smoothing in parameter space, Cohen
  et al. 2019): at evaluation, ``certify_samples`` (M) models ``w_T + N(0, sigma^2 I)`` vote;
  with ``n_A`` votes for the top class and ``n_B`` for the runner-up, ``p_A`` is the
  one-sided Clopper-Pearson lower bound of ``n_A / M`` and ``p_B`` the upper bound of
  ``n_B / M`` (level ``alpha`` each, ``scipy.stats.beta``), and the certified radius is

      RAD = sigma / 2 * (Phi^-1(p_A) - Phi^-1(p_B))

  (``Phi^-1``: the standard normal quantile). A sample is *certified at radius r* when
  ``RAD >= r`` (``RAD <= 0``: abstain). CRFL's Theorem 2 turns this parameter-space
  radius into a bound on the attackers' poisoning magnitude through constants of the
  training dynamics (the Lipschitz / smoothness factor Gamma of Sec. 3.1); those constants
  are not estimated here: the summary reports the parameter-space radius.

Run summary (``crfl_*``): ``certified_acc`` -- share of the clean test set predicted
correctly and certified at ``certify_radius``; ``certified_backdoor_free`` -- share of the
triggered test inputs whose smoothed prediction is *not* the attack's target and is
certified at ``certify_radius`` (the paper's certified accuracy on backdoored inputs
counts correct labels; the attack's backdoor test set carries only the target, so this
counts predictions that resist the backdoor); ``mean_radius`` -- mean radius over the clean
test set (0 where abstained or wrong). ``certify_limit`` caps the test samples certified.

CRFL makes no per-client decision: ``Aggregate.weights`` are FedAvg's (a row holding
NaN/Inf gets weight 0 and stays out of the mean).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DEFENSES
from .base import Aggregate, Aggregator, RoundContext, nonfinite_rows


def clip_parameters(w: torch.Tensor, rho: float) -> torch.Tensor:
    """``w / max(1, ||w|| / rho)`` (Algorithm 1's parameter clipping).

    >>> clip_parameters(torch.tensor([3.0, 4.0]), 2.5).tolist()
    [1.5, 2.0]
    """
    norm = torch.linalg.vector_norm(w)
    return w / torch.clamp(norm / rho, min=1.0)


def certified_radius(n_a: np.ndarray, n_b: np.ndarray, m: int, sigma: float, alpha: float) -> np.ndarray:
    """``sigma / 2 * (Phi^-1(p_A) - Phi^-1(p_B))`` with one-sided Clopper-Pearson bounds
    ``p_A`` (lower, of ``n_a / m``) and ``p_B`` (upper, of ``n_b / m``) at level ``alpha``."""
    from scipy.stats import beta, norm

    n_a, n_b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    p_a = np.where(n_a > 0, beta.ppf(alpha, n_a, m - n_a + 1), 0.0)
    p_b = np.where(n_b < m, beta.ppf(1 - alpha, n_b + 1, m - n_b), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rad = sigma / 2 * (norm.ppf(p_a) - norm.ppf(p_b))
    return np.nan_to_num(rad, nan=-np.inf)


def smoothed_votes(
    probe, flat: torch.Tensor, x: torch.Tensor, sigma: float, m: int, generator: torch.Generator, batch: int = 1024
) -> torch.Tensor:
    """``(N, classes)`` votes of ``m`` models ``flat + N(0, sigma^2 I)`` on raw inputs ``x``."""
    votes = torch.zeros(len(x), probe.num_classes, dtype=torch.long)
    for _ in range(m):
        noisy = flat + sigma * torch.randn(flat.shape, generator=generator).to(flat.device, flat.dtype)
        for i in range(0, len(x), batch):
            logits = probe.logits(noisy, x[i : i + batch])
            ok = torch.isfinite(logits).all(1)
            pred = logits.argmax(1).cpu()
            votes[i : i + batch][torch.arange(len(pred))[ok.cpu()], pred[ok.cpu()]] += 1
    return votes


def certify(
    probe, flat: torch.Tensor, x: torch.Tensor, sigma: float, m: int, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Smoothed predictions ``(N,)`` and certified radii ``(N,)`` (``-inf``: abstain)."""
    votes = smoothed_votes(probe, flat, x, sigma, m, generator)
    top2 = votes.topk(min(2, votes.shape[1]), dim=1)
    n_a = top2.values[:, 0].numpy()
    n_b = top2.values[:, 1].numpy() if votes.shape[1] > 1 else np.zeros_like(n_a)
    return top2.indices[:, 0], certified_radius(n_a, n_b, m, sigma, alpha)


@DEFENSES.register("crfl")
class CRFL(Aggregator):
    """CRFL (Xie et al., ICML 2021): FedAvg, then clip the global parameters to rho and add N(0, sigma^2); certified radius at the end.

    Args:
        rho: L2 bound of the global parameters.
        sigma: standard deviation of the parameter noise (training and certification).
        certify_samples: noisy models voting at certification (M).
        alpha: level of each Clopper-Pearson bound.
        certify_radius: radius at which certified accuracies are reported.
        certify_limit: at most this many test samples are certified (None: all).
        weighted: weight rows by sample counts (FedAvg's option).
    """

    def __init__(
        self,
        *,
        rho: float = 15.0,
        sigma: float = 0.01,
        certify_samples: int = 100,
        alpha: float = 0.001,
        certify_radius: float = 0.0,
        certify_limit: Optional[int] = 500,
        weighted: bool = False,
    ):
        if not (math.isfinite(rho) and rho > 0):
            raise ConfigError("defense.rho", f"must be a finite number > 0 (got {rho})", "> 0, e.g. 15")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ConfigError("defense.sigma", f"must be a finite number >= 0 (got {sigma})", ">= 0, e.g. 0.01")
        if certify_samples < 2:
            raise ConfigError("defense.certify_samples", f"must be >= 2 (got {certify_samples})", ">= 2, e.g. 100")
        if not 0 < alpha < 0.5:
            raise ConfigError("defense.alpha", f"must be in (0, 0.5) (got {alpha})", "e.g. 0.001")
        if certify_limit is not None and certify_limit < 1:
            raise ConfigError("defense.certify_limit", f"must be >= 1 (got {certify_limit})", ">= 1, or null for all")
        self.rho, self.sigma, self.certify_samples, self.alpha = float(rho), float(sigma), int(certify_samples), alpha
        self.certify_radius, self.certify_limit, self.weighted = float(certify_radius), certify_limit, weighted

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        bad = nonfinite_rows(U)
        w = (
            ctx.num_samples.to(U.device, torch.float64)
            if self.weighted
            else torch.ones(U.shape[0], dtype=torch.float64, device=U.device)
        )
        w = torch.where(bad, torch.zeros_like(w), w)
        w = w / w.sum().clamp_min(1e-30)
        Uf = torch.where(bad.unsqueeze(1), torch.zeros((), dtype=U.dtype, device=U.device), U)
        mean = w.to(U.dtype) @ Uf
        g = ctx.global_params.to(U.device, U.dtype)
        fedsgd = ctx.extras.get("algorithm") == "fedsgd"
        lr = float(ctx.extras.get("lr", 1.0)) if fedsgd else float(ctx.server_lr)
        step = -lr * mean if fedsgd else lr * mean
        new = clip_parameters(g + step, self.rho)
        if self.sigma > 0:
            new = new + self.sigma * torch.randn(new.shape, generator=ctx.generator).to(new.device, new.dtype)
        agg = (g - new) / lr if fedsgd else (new - g) / lr
        return Aggregate(agg, weights=w.to(U.dtype), info={"crfl_global_norm": float(torch.linalg.vector_norm(new))})

    def final_metrics(
        self,
        probe,
        flat: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        backdoor_test: Optional[tuple[torch.Tensor, torch.Tensor]],
        generator: torch.Generator,
    ) -> dict[str, Any]:
        """The certification of the final model (see the module docstring)."""
        lim = self.certify_limit or len(y_test)
        x, y = x_test[:lim], y_test[:lim]
        pred, rad = certify(probe, flat, x, self.sigma, self.certify_samples, self.alpha, generator)
        correct = (pred == y.cpu()).numpy()
        out = {
            "crfl_certified_acc": float(np.mean(correct & (rad >= self.certify_radius))) if len(y) else None,
            "crfl_mean_radius": float(np.mean(np.where(correct & np.isfinite(rad), np.maximum(rad, 0.0), 0.0)))
            if len(y)
            else None,
            "crfl_certify_radius": self.certify_radius,
        }
        if backdoor_test is not None and len(backdoor_test[1]):
            bx, by = backdoor_test[0][:lim], backdoor_test[1][:lim]
            bpred, brad = certify(probe, flat, bx, self.sigma, self.certify_samples, self.alpha, generator)
            resist = (bpred != by.cpu()).numpy()
            out["crfl_certified_backdoor_free"] = float(np.mean(resist & (brad >= self.certify_radius)))
        return out
