"""Reproduction: "Invariant Aggregator for Defending against Federated Backdoor Attacks"
(Wang, Dimitriadis, Koyejo, Tople, AISTATS 2024).

Scaled version of the paper's CIFAR-10 column (the Twitter and phishing tasks need data
we do not ship): Fashion-MNIST (from ``data.root``) with an MLP, or the bundled digits
for ``--quick`` when Fashion-MNIST is not found (``--quick`` with it: Table 1's headline
runs, FedAvg / Ours / no attack over 3 seeds, at the full settings); an edge-case backdoor whose tail set is MNIST digits "7" labelled
class 9 (full) or generated rectangles (quick, :mod:`fedarena.data.edge_sets`); 100
(quick: 40) clients with a Dirichlet(0.5) label split, 20 (quick: 10) sampled per
round, 20% of the population malicious and attacking whenever sampled (the paper's
"continuous" attacker; sampling is uniform, as in the authors' code, so a round can
hold more attackers than the trimmed mean drops -- spec A9; a fixed-fraction check
where every client takes part every round is run as well).

Tables: 1 (every aggregator under the continuous edge-case attack), 4 (ablation),
5-7 (DBA pixel trigger, collude, adaptive; Ours, FLTrust, RFA), 8 (poison ratio),
9 (trigger size), 10 (heterogeneity); extras: the Theorem-10 Monte-Carlo table and
Proposition 5's closed form. Claims the spec marks open are reported, not gated.

Seeds: Table 1's FedAvg, trimmed-mean, Ours and no-attack runs use seeds 0, 1, 2 (claims use
the mean; the scaled Table 1 shows mean ± sample variance rounded up, the paper's
format); every other run uses seed 0. Runs are paired: a defense change does not change
the partition, the sampled clients or the attackers.

Baseline settings the paper does not give (spec App. B): Krum/Multi-Krum ``f`` = the
expected number of attackers per round; trimmed mean ``trim = ceil(0.25 n)``;
Sign-SGD server lr 1e-3 (quick: 1e-2); Weak-DP clip ``M`` = the median benign update norm
of round 0 measured once at this scale (full 0.79 -> 0.8, quick 0.23 -> 0.25), held
fixed, and noise std 0.002 (absolute); RLR
``theta = ceil(tau n)``; RFA 10 Weiszfeld steps, nu 1e-6; SparseFed k 10%, rho 0.9, clip
= first-round median norm; FLTrust 100 root samples. FLIP is not run (not implemented).
DBA (Tables 5 and 9): the DBA paper's pixel trigger (``dba-lines``: 4 lines of 1x6 at rows
0/4, cols 0-5/9-14, value 1, attacker i stamps line i mod 4, ASR with the full trigger on
non-target test images; spec A13), target 2, 12.5% of each attacker's non-target samples;
Table 9 scales the line thickness 1/2/4 (spec 4.7).

Why Ours does not cut the ASR here (diagnosis; no defect found). Audit against Algorithm 1
and the spec: the mask is taken per coordinate over the round's 20 rows (|sum sign| > tau N,
strict, tau 0.2: at least 13 agreeing), the trimmed mean drops ceil(0.25 * 20) = 5 rows per
side of the same 20, the output is mask x trimmed mean and the server steps with lr 1;
rows are model deltas (the paper's pseudo-gradients up to a sign, which neither the mask
nor the trimmed mean depends on); attackers train every round they are sampled on their
own data plus 12.5% MNIST "7"s labelled 9 (838 training 7s), and ASR is the share of the
232 held-out MNIST test 7s (no overlap with the pool) predicted 9; 0.000 without attack.
Instrumented t1-ours run (seed 0, 30 rounds), command:
``python -c "from fedarena.reproduce.invariant import main; main()" --set
data.root=DATA --set data.download=false`` (DATA: the folder holding ``mnist/``) (``diagnose``; sums over rounds of
the first-order change of the held-out backdoor loss, <step, grad L_bd>, negative = the
backdoor is learned):

* the mask keeps 49% of the coordinates (70% in round 0, about 40% late) and removes only
  a quarter of the trimmed mean's backdoor progress: TrMean -4.19, Ours -3.16, Ours on
  the benign rows alone +5.08 (benign clients unlearn the backdoor);
* the attackers' effect on Ours (-8.24) by coordinate kind: same sign as without them
  (a magnitude bias of the trimmed mean inside the benign range; 44% of coordinates)
  -3.23; coordinates their opposite signs get masked although the benign rows alone pass
  (15%: the mask zeroes the benign corrective step) -3.26; newly kept (5%) -1.67; sign
  reversed (0.1%) -0.08. The sign reversals that Theorem 10 bounds carry about 1%;
* 76% of Ours' backdoor progress is in the first layer (-2.40, TrMean -2.58). Inputs are
  normalised and the tail's ink lies on pixels Fashion-MNIST uses (1 of 784 pixels is
  non-zero in under 0.1% of the training images), so no coordinate is flat (sign-noisy or
  exactly 0) for benign clients -- the situation the paper's argument (Sec. 4-5, App. D.1)
  and the spec's exactly-flat check (P-4) rely on;
* raising tau trades accuracy for little ASR (seed 0, final Acc / ASR; same command with
  ``--set defense.tau=...``): 0.2 .787/.897, 0.6 .758/.681, 0.8 .727/.672 (0.5: .760/.733);
  at 0.6 the mask keeps 10% of the coordinates and 80% of the attackers' effect (-4.71 of
  -5.88) comes from coordinates they get masked. tau 0.8 without attack: ASR .000;
* not the sampling or the mixing: with exactly 4 attackers in every round of 20 (``--set
  fl.sampling=fixed-malicious``, never more than the 5 trimmed per side) Ours .901, FedAvg
  .931, TrMean .918; with ``--set attack.mix=replace`` (as many local steps as benign
  clients) Ours .888, FedAvg .905, TrMean .888. Main protocol: FedAvg .909, TrMean (trim 5)
  .901, median (trim 9) .905 (``--set defense.name=fedavg``, ``--set
  defense.name=trimmed-mean --set defense.trim=5`` or ``9``).

So the gap to the paper is a property of this task, not of the code: here the backdoor
needs only in-range magnitude shifts on coordinates where benign clients agree in sign,
plus vetoes of benign corrective steps, and a sign-consistency mask sees neither. Whether
ResNet-18 on CIFAR-10 with the Southwest tail provides the benign-flat coordinates the
paper's mechanism needs cannot be tested at this scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

from ..core.tables import markdown_table
from ..registry import PAPERS
from .framework import Claim, Paper, Results, deep_update
from .quick import DIGITS, HEADLINE, Scale, data_section, scale

NOTES = __doc__


# ---------------------------------------------------------------- Theorem 10 (Monte Carlo)
def theorem10_monte_carlo(
    gammas=(0.0, 0.25, 0.5, 1.0),
    trials: int = 200_000,
    seed: int = 0,
    n: int = 20,
    n_mal: int = 4,
    alpha: float = 0.25,
    mal_value: float = -100.0,
) -> list[dict[str, Any]]:
    """The spec's Theorem-10 check (section 6.3) on one coordinate.

    ``n - n_mal`` benign reports ~ N(gamma, 1) (the benign direction is +, so the sign-flip
    probability is ``p = Phi(-gamma)``), ``n_mal`` malicious reports at ``mal_value``;
    trim ``b = ceil(alpha n)``, ``tau = 1 - 2 alpha``. Returns, per gamma, the empirical
    ``P(agg > 0)`` ("b", benign) and ``P(agg < 0)`` ("m", malicious) of the mean, the
    trimmed mean, Ours (strict ``>`` and ``>=``) and AND-mask x mean, with the corrected
    binomial bounds of the spec (section 2.7)::

        TrMean   P(m) <= P[Bin(B, p) >= b - N' + 1]
        Ours >   P(m) <= P[Bin(B, p) >= (1 + tau) n / 2 - N' + 1]
        TrMean, Ours >=  P(b) >= P[Bin(B, 1 - p) >= n - b]
        Ours >   P(b) >= P[Bin(B, 1 - p) >= n - b + 1]
    """
    rng = np.random.default_rng(seed)
    B = n - n_mal
    b = math.ceil(alpha * n - 1e-9)
    tau = 1 - 2 * alpha
    rows = []
    for g in gammas:
        benign = rng.normal(g, 1.0, size=(trials, B))
        G = np.concatenate([benign, np.full((trials, n_mal), mal_value)], axis=1)
        mean = G.mean(1)
        tm = np.sort(G, axis=1)[:, b : n - b].mean(1)
        s = np.abs(np.sign(G).sum(1))
        strict, ge = s > tau * n + 1e-9, s >= tau * n - 1e-9
        outs = {
            "mean": mean,
            "trmean": tm,
            "ours_strict": np.where(strict, tm, 0.0),
            "ours_ge": np.where(ge, tm, 0.0),
            "andmask_mean": np.where(strict, mean, 0.0),
        }
        p = float(stats.norm.cdf(-g))
        row: dict[str, Any] = {"gamma": g, "p": p, "trials": trials}
        for k, v in outs.items():
            row[f"{k}_b"] = float((v > 0).mean())
            row[f"{k}_m"] = float((v < 0).mean())
        row["bound_trmean_m"] = float(stats.binom.sf(b - n_mal, B, p))  # P[K >= b - N' + 1]
        row["bound_ours_strict_m"] = float(stats.binom.sf(math.ceil((1 + tau) * n / 2 - n_mal + 1) - 1, B, p))
        row["bound_b"] = float(stats.binom.sf(n - b - 1, B, 1 - p))  # P[Bin(B, 1-p) >= n - b]
        row["bound_ours_strict_b"] = float(stats.binom.sf(n - b, B, 1 - p))
        rows.append(row)
    return rows


def theorem10_table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        cells = [f"{r['gamma']:.2f}", f"{r['p']:.3f}"]
        for k in ("mean", "trmean", "ours_strict", "ours_ge", "andmask_mean"):
            cells.append(f"{r[k + '_b']:.4f} / {r[k + '_m']:.4f}")
        cells += [
            f"{r['bound_trmean_m']:.4f}",
            f"{r['bound_ours_strict_m']:.6f}",
            f"{r['bound_b']:.4f}",
            f"{r['bound_ours_strict_b']:.4f}",
        ]
        lines.append(cells)
    return markdown_table(
        [
            "gamma",
            "p",
            "mean P(b)/P(m)",
            "TrMean P(b)/P(m)",
            "Ours > P(b)/P(m)",
            "Ours >= P(b)/P(m)",
            "AND-mask+mean P(b)/P(m)",
            "bound TrMean P(m) <=",
            "bound Ours> P(m) <=",
            "bound P(b) >= (TrMean, Ours>=)",
            "bound Ours> P(b) >=",
        ],
        lines,
    )


# ---------------------------------------------------------------- Proposition 5 (FLTrust failure)
def prop5_margin(theta: float) -> float:
    """``max_{theta' in [0, pi/2]} cos(theta') cos(pi - theta - theta') - cos(theta)``
    (Eq. 1 of the paper's Proposition 5), by bounded scalar minimisation; the spec's closed
    form is ``(1 - cos theta) / 2 - cos theta``."""
    res = optimize.minimize_scalar(
        lambda t: -math.cos(t) * math.cos(math.pi - theta - t),
        bounds=(0.0, math.pi / 2),
        method="bounded",
        options={"xatol": 1e-12},
    )
    return float(-res.fun - math.cos(theta))


def prop5_threshold() -> float:
    """The smallest angle for which Eq. (1) is satisfiable (``arccos(1/3) = 0.39183 pi``)."""
    return float(optimize.brentq(prop5_margin, 0.3 * math.pi, 0.45 * math.pi, xtol=1e-12))


# ---------------------------------------------------------------- federated runs
PAPER_T1 = {  # CIFAR-10 column of Table 1: (Acc, ASR)
    "fedavg": (0.679, 0.717),
    "krum": (0.140, 0.275),
    "multi-krum": (0.541, 0.923),
    "multi-krum-cos": (0.681, 0.821),
    "trimmed-mean": (0.687, 0.512),
    "multi-krum-tm": (0.682, 0.607),
    "sign": (0.301, 0.000),
    "weak-dp": (0.454, 0.828),
    "rlr": (0.659, 0.450),
    "rfa": (0.685, 0.853),
    "sparsefed": (0.662, 0.984),
    "fltrust": (0.671, 0.574),
    "no-attack": (0.718, 0.000),
    "ours": (0.677, 0.001),
}


class _Scale:
    def __init__(self, quick: bool):
        self.quick = quick
        self.n_clients = 40 if quick else 100
        self.per_round = 10 if quick else 20
        self.n_mal = self.n_clients // 5
        self.rounds = 60 if quick else 30
        self.f = round(self.per_round * self.n_mal / self.n_clients)  # expected attackers per round
        self.trim = math.ceil(0.25 * self.per_round)
        # DBA line thickness x1 / x2 / x4 (the DBA paper's 4 x [1x6] lines; spec 4.7)
        self.thickness = (1, 2, 4)


def _base(s: _Scale) -> dict[str, Any]:
    if s.quick:
        data = {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5}
        model = {"name": "mlp", "hidden": [32]}
        fl = {"batch_size": 16, "lr": 0.05, "momentum": 0.9}
        attack = {"edge_set": "shapes", "target": 9, "batch_size": 16, "edge_per_batch": 2}
    else:
        data = {"dataset": "fashion-mnist", "partition": "dirichlet", "alpha": 0.5}
        model = {"name": "mlp", "hidden": [64]}
        fl = {"batch_size": 64, "lr": 0.01, "momentum": 0.9}
        attack = {"edge_set": "mnist", "edge_class": 7, "target": 9, "batch_size": 64, "edge_per_batch": 8}
    return {
        "name": "invariant",
        "seed": 0,
        "data": data,
        "model": model,
        "fl": {
            "num_clients": s.n_clients,
            "clients_per_round": s.per_round,
            "rounds": s.rounds,
            "local_epochs": 1,
            **fl,
        },
        "attack": {"name": "edge-case", "num_malicious": s.n_mal, **attack},
        "defense": {"name": "invariant", "tau": 0.2, "trim_frac": 0.25, "f": s.f},
        "eval": {"every": 5},
    }


def _defenses(s: _Scale) -> dict[str, dict[str, Any]]:
    """Table 1's aggregators as ``defense`` sections (plus fl overrides where needed)."""
    theta = math.ceil(0.2 * s.per_round)
    return {
        "fedavg": {"defense": {"name": "fedavg"}},
        "krum": {"defense": {"name": "krum"}},
        "multi-krum": {"defense": {"name": "multi-krum"}},
        "multi-krum-cos": {"defense": {"name": "multi-krum-cos"}},
        "trimmed-mean": {"defense": {"name": "trimmed-mean", "trim": s.trim}},
        "multi-krum-tm": {"defense": {"name": "multi-krum-tm", "trim_frac": 0.25}},
        "sign": {"defense": {"name": "sign"}, "fl": {"server_lr": 1e-2 if s.quick else 1e-3}},
        "weak-dp": {"defense": {"name": "fedavg", "clip": 0.25 if s.quick else 0.8, "noise": 0.002, "noise_abs": True}},
        "rlr": {"defense": {"name": "rlr", "theta": theta}},
        "rfa": {"defense": {"name": "rfa", "iters": 10, "nu": 1e-6}},
        "sparsefed": {"defense": {"name": "sparsefed", "k_frac": 0.1, "rho": 0.9}},
        "fltrust": {"defense": {"name": "fltrust", "root_size": 100}},
        "ours": {"defense": {"name": "invariant"}},
    }


def _set_defense(base: dict, change: dict) -> dict:
    out = deep_update(base, {k: v for k, v in change.items() if k != "defense"})
    out["defense"] = {"f": base["defense"]["f"], **change["defense"]}
    return out


def _no_attack(base: dict) -> dict:
    """The attack never starts, so the same tail set measures the no-attack ASR."""
    return deep_update(base, {"attack": {"start_round": 10**6}})


#: Table-1 runs repeated with seeds 1 and 2 (``t1-<name>-s1``, ``-s2``); "and-mask" is Table 4's
SEEDED = ("t1-fedavg", "t1-trimmed-mean", "t1-ours", "t1-no-attack", "t4-and-mask")
#: ``--quick`` with Fashion-MNIST: Table 1's headline (the edge-case attack works on FedAvg; Ours cuts it), 3 seeds
HEADLINE_RUNS = ("t1-fedavg", "t1-ours", "t1-no-attack")
HEADLINE_CLAIMS = ("T1-fedavg", "T1-ours", "T1-no-attack", "E1", "E2", "Thm10", "Prop5")


def seed_runs(results: Results, run: str) -> list[str]:
    """``run`` and its extra-seed repeats that were run."""
    return [r for r in (run, f"{run}-s1", f"{run}-s2") if r in results.runs]


def seed_mean(results: Results, run: str, key: str) -> float:
    """Mean of a final metric over the seeds of ``run`` that were run."""
    vals = [results.final(r, key) for r in seed_runs(results, run)]
    if not vals:
        raise KeyError(run)
    return float(np.mean(vals))


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, tuple):
        return tuple(_round(x) for x in v)
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def _rounded(fn):
    return lambda r: _round(fn(r))


# ---------------------------------------------------------------- diagnosis (not part of the claims)
INFLUENCE_KINDS = ("same_sign", "flipped", "newly_kept", "newly_masked")


def attacker_influence(U, malicious, direction, tau: float = 0.2, trim_frac: float = 0.25) -> dict[str, float]:
    """Split the attackers' effect on the Invariant Aggregator's output along ``direction``.

    ``D = ours(U) - ours(U[benign])`` (Algorithm 1 on all rows minus on the benign rows
    alone); returns ``<D, direction>`` in total and restricted to four kinds of coordinate:
    ``same_sign`` (kept by both masks, same sign: a magnitude bias of the trimmed mean),
    ``flipped`` (kept by both, sign reversed: the failure Theorem 10 bounds),
    ``newly_kept`` (masked without the attackers, kept with them) and ``newly_masked``
    (kept without the attackers, masked with them: the benign step is zeroed). With
    ``direction`` = the gradient of the backdoor loss, a negative value is first-order
    backdoor progress. Also returns the share of coordinates of each kind (``frac_*``).
    """
    import torch

    from ..defenses.invariant import and_mask, trimmed_mean

    mal = torch.as_tensor(malicious, dtype=torch.bool)
    Ub = U[~mal]
    m, mb = and_mask(U, tau), and_mask(Ub, tau)
    zero = torch.zeros(U.shape[1], dtype=U.dtype, device=U.device)
    ours = torch.where(m, trimmed_mean(U, trim_frac), zero)
    ours_b = torch.where(mb, trimmed_mean(Ub, trim_frac), zero)
    D = ours - ours_b
    both = m & mb
    same = torch.sign(ours) == torch.sign(ours_b)
    kinds = {"same_sign": both & same, "flipped": both & ~same, "newly_kept": m & ~mb, "newly_masked": ~m & mb}
    out = {"total": float(D @ direction)}
    for k, msk in kinds.items():
        out[k] = float((D * msk) @ direction)
        out["frac_" + k] = float(msk.float().mean())
    return out


def diagnose(overrides: list[str] | None = None, quick: bool = False) -> list[dict[str, Any]]:
    """Instrumented run of the Table-1 protocol (``t1-ours`` unless ``overrides`` change it).

    Per round: attackers in the cohort, the share of coordinates the AND-mask keeps on the
    round's ``U``, the first-order change of the backdoor loss (held-out tail labelled
    ``target``) from the trimmed mean, from Ours and from Ours on the benign rows alone,
    :func:`attacker_influence` split by coordinate kind and by layer, and ASR / accuracy
    after the round. The mask and trimmed mean use the run's ``defense.tau`` and
    ``defense.trim_frac`` when the defense is ``invariant`` (else 0.2 and 0.25). Command: ``python -c "from fedarena.reproduce.invariant import main;
    main()" --set data.root=... --set data.download=false [--set defense.tau=0.5 ...]``.
    """
    import torch

    from ..config import defense_dict, load_config
    from ..core.sign_masks import and_mask
    from ..defenses.invariant import trimmed_mean
    from ..defenses.pipeline import build_pipeline
    from ..run.simulation import Simulation

    s = _Scale(quick)
    cfg = load_config(None, list(overrides or []) + ["eval.every=1"], base=_set_defense(_base(s), _defenses(s)["ours"]))
    rule = build_pipeline(defense_dict(cfg)).aggregator  # a fresh copy: its presets resolved
    tau, trim_frac = float(getattr(rule, "tau", 0.2)), float(getattr(rule, "trim_frac", 0.25))
    sim = Simulation(cfg)
    bx, by = sim.backdoor_test
    rows = []

    def observe(obs) -> None:  # one finished round: the rows the defense saw and the model before it
        g = sim.loss_gradient(obs.params_before, bx, by)
        U, mal = obs.U, torch.from_numpy(obs.malicious)
        m = and_mask(U, tau)
        tm = trimmed_mean(U, trim_frac)
        ours = torch.where(m, tm, torch.zeros_like(tm))
        row: dict[str, Any] = {
            "round": obs.round,
            "attackers": int(mal.sum()),
            "mask_keeps": float(m.float().mean()),
            "fo_trmean": float(tm @ g),
            "fo_ours": float(ours @ g),
        }
        for name, sl in obs.layout.slices().items():
            row[f"keeps[{name}]"] = float(m[sl].float().mean())
            row[f"fo_ours[{name}]"] = float(ours[sl] @ g[sl])
            row[f"fo_trmean[{name}]"] = float(tm[sl] @ g[sl])
        if int(mal.sum()):
            Ub = U[~mal]
            ob = torch.where(and_mask(Ub, tau), trimmed_mean(Ub, trim_frac), torch.zeros_like(tm))
            row["fo_ours_benign_only"] = float(ob @ g)
            row.update({f"infl_{k}": v for k, v in attacker_influence(U, mal, g, tau, trim_frac).items()})
        row.update(acc=obs.metrics["main_acc"], asr=obs.metrics["backdoor_acc"])
        rows.append(row)

    sim.run(observe=observe)
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(
        prog="fedarena.reproduce.invariant.main",
        description="Instrumented Table-1 run of the invariant reproduction (t1-ours).",
    )
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    rows = diagnose(a.sets, a.quick)
    keys = ["mask_keeps", "fo_trmean", "fo_ours", "fo_ours_benign_only"] + [
        f"infl_{k}" for k in ("total",) + INFLUENCE_KINDS
    ]
    keys += [k for k in rows[0] if k.startswith(("keeps[", "fo_ours[", "fo_trmean["))]
    print("round attackers acc asr")
    for r in rows:
        print(f"{r['round']:5d} {r['attackers']:9d} {r['acc']:.3f} {r['asr']:.3f}")
    print("summary over rounds (mean for shares, sum for first-order backdoor-loss changes):")
    for k in keys:
        v = [r[k] for r in rows if k in r]
        agg = np.mean(v) if ("keeps" in k or k.startswith("frac")) else np.sum(v)
        print(f"  {k:34s} {agg:+.3f}")
    for k in INFLUENCE_KINDS:
        print(f"  frac_{k:29s} {np.mean([r['infl_frac_' + k] for r in rows if 'infl_frac_' + k in r]):.3f}")


@PAPERS.register("invariant")
class InvariantAggregatorPaper(Paper):
    """Invariant Aggregator for Defending against Federated Backdoor Attacks (Wang et al., AISTATS 2024)."""

    notes = NOTES
    not_reproduced = """
- Table 1's Twitter and phishing columns (and Tables 2, 3 of the other tasks): the data is not available here.
- Table 1's CIFAR-10 column is run on Fashion-MNIST with an MLP (the rows say so): absolute accuracies are not
  comparable, so each row is judged by whether it halves FedAvg's ASR and whether it costs 0.1 accuracy, as in the paper.
- Figures (training curves, the AND-mask illustration): not plotted.
"""

    def runs(self, quick: Scale) -> dict[str, dict[str, Any]]:
        quick = Scale.of(quick)
        sc = scale(quick, self.data_root)
        runs = self._runs(sc == DIGITS)
        if sc == HEADLINE:  # Table 1's headline (FedAvg vs Ours vs no attack, 3 seeds) at the full settings
            runs = {
                k: deep_update(v, {"data": data_section(self.data_root)})
                for k, v in runs.items()
                if k in HEADLINE_RUNS or k.rsplit("-s", 1)[0] in HEADLINE_RUNS
            }
        return runs

    def _runs(self, quick: bool) -> dict[str, dict[str, Any]]:
        s = _Scale(quick)
        base = _base(s)
        runs: dict[str, dict[str, Any]] = {}
        # Table 1
        for name, change in _defenses(s).items():
            runs[f"t1-{name}"] = _set_defense(base, change)
        runs["t1-no-attack"] = _no_attack(_set_defense(base, {"defense": {"name": "fedavg"}}))
        runs["t4-and-mask"] = _set_defense(base, {"defense": {"name": "invariant", "estimator": "mean"}})
        for rid in SEEDED:  # the headline comparison on 3 seeds, as the paper
            for seed in (1, 2):
                runs[f"{rid}-s{seed}"] = deep_update(runs[rid], {"seed": seed})
        # Table 4: ablation (Trimmed-mean = the t1 trimmed-mean run)
        runs["t4-mean-var"] = _set_defense(base, {"defense": {"name": "invariant", "mask": "mean-var"}})
        runs["t4-code-preset"] = _set_defense(base, {"defense": {"name": "invariant", "preset": "code"}})
        # Table 5: other attacks against Ours; Tables 6-7: collude / adaptive vs FLTrust and RFA
        runs["t5-no-attack"] = _no_attack(base)
        pixel = {
            "name": "backdoor",
            "num_malicious": s.n_mal,
            "target": 2,
            "trigger": "dba-lines",
            "dba": True,
            "dba_parts": 4,
            "poison_frac": 0.125,
            "trigger_size": s.thickness[0],
        }
        for who in ("ours", "fedavg"):
            d = _defenses(s)[who]
            runs[f"t5-dba-{who}"] = _set_defense(deep_update(base, {}), d) | {"attack": dict(pixel)}
        for variant, flags in (
            ("collude", {"collude": True}),
            ("adaptive", {"adaptive": True}),
            ("collude-adaptive", {"collude": True, "adaptive": True}),
        ):
            for who in (
                ("ours", "trimmed-mean", "fltrust", "rfa")
                if variant != "collude-adaptive"
                else ("ours", "trimmed-mean")
            ):
                runs[f"t5-{variant}-{who}"] = _set_defense(deep_update(base, {"attack": flags}), _defenses(s)[who])
        # Table 8: poison ratio (share of malicious clients), Ours
        for pct in (5, 10, 15):
            k = max(1, round(s.n_clients * pct / 100))
            runs[f"t8-ratio{pct}"] = deep_update(
                base, {"attack": {"num_malicious": k}, "defense": {"f": round(s.per_round * k / s.n_clients)}}
            )
        # Table 9: trigger size (DBA line thickness x1/x2/x4), Ours
        for k, thick in zip((2, 4), s.thickness[1:]):
            runs[f"t9-size{k}"] = _set_defense(base, _defenses(s)["ours"]) | {"attack": dict(pixel, trigger_size=thick)}
        # Table 10: heterogeneity, Ours and FedAvg
        for a in (100.0, 1.0, 0.2):
            for who in ("ours", "fedavg"):
                runs[f"t10-alpha{a:g}-{who}"] = deep_update(
                    _set_defense(base, _defenses(s)[who]), {"data": {"alpha": a}}
                )
        # fixed-fraction check (every client in every round: exactly 20% attackers per round)
        # (local steps capped to the main protocol's ~1 epoch of a 1/n_clients share)
        fixed = deep_update(
            base,
            {
                "fl": {
                    "num_clients": s.per_round,
                    "clients_per_round": s.per_round,
                    "local_steps": 3 if s.quick else 10,
                },
                "attack": {"num_malicious": s.per_round // 5},
                "defense": {"f": s.per_round // 5},
            },
        )
        for who in ("ours", "trimmed-mean", "fedavg"):
            runs[f"fixed-{who}"] = _set_defense(fixed, _defenses(s)[who])
        if not quick:  # a rare style of a real class as the tail (closer to the Southwest planes)
            rare = {"attack": {"edge_set": "rare", "edge_dataset": "fashion-mnist", "edge_class": 0, "target": 9}}
            for who in ("ours", "trimmed-mean", "fedavg"):
                runs[f"rare-{who}"] = _set_defense(deep_update(base, rare), _defenses(s)[who])
            runs["rare-no-attack"] = _no_attack(_set_defense(deep_update(base, rare), _defenses(s)["fedavg"]))
        return runs

    # ------------------------------------------------------------ claims
    def claims(self, quick: Scale) -> list[Claim]:
        quick = Scale.of(quick)
        sc = scale(quick, self.data_root)
        claims = self._claims(sc == DIGITS)
        return [c for c in claims if c.id in HEADLINE_CLAIMS] if sc == HEADLINE else claims

    def _claims(self, quick: bool) -> list[Claim]:
        def acc(run):
            return lambda r: seed_mean(r, run, "main_acc")

        def asr(run):
            return lambda r: seed_mean(r, run, "backdoor_acc")

        def asr0(run):  # seed 0 only: for comparisons with single-seed runs (paired)
            return lambda r: r.final(run, "backdoor_acc")

        def acc0(run):
            return lambda r: r.final(run, "main_acc")

        out: list[Claim] = []
        T1 = "Table 1 (CIFAR-10 column; ours Fashion-MNIST)"
        fa_acc, fa_asr = PAPER_T1["fedavg"]
        for name, (pa, pr) in PAPER_T1.items():
            seeded = " (mean of 3 seeds)" if f"t1-{name}" in SEEDED else ""
            if name == "fedavg":
                out.append(
                    Claim(
                        "T1-fedavg",
                        f"Table 1 fedavg: the edge-case backdoor works (Acc, ASR){seeded}",
                        paper=f"{pa:.3f} / {pr:.3f}",
                        measure=lambda r: (acc("t1-fedavg")(r), asr("t1-fedavg")(r)),
                        check=lambda v: v[1] >= 0.4,
                        rule="ASR >= 0.4",
                        source="paper",
                        where=T1,
                    )
                )
                continue
            if name == "no-attack":
                out.append(
                    Claim(
                        "T1-no-attack",
                        f"Table 1 no-attack: no backdoor without attackers (Acc, ASR){seeded}",
                        paper=f"{pa:.3f} / {pr:.3f}",
                        measure=lambda r: (acc("t1-no-attack")(r), asr("t1-no-attack")(r)),
                        check=lambda v: v[1] <= 0.05,
                        rule="ASR <= 0.05",
                        source="paper",
                        where=T1,
                    )
                )
                continue
            defends, costs = pr <= 0.5 * fa_asr, pa <= fa_acc - 0.1
            out.append(
                Claim(
                    f"T1-{name}",
                    f"Table 1 {name}: (Acc, ASR, FedAvg's Acc, FedAvg's ASR){seeded}; the paper's row "
                    f"{'cuts' if defends else 'does not cut'} FedAvg's ASR by half and {'costs' if costs else 'does not cost'} "
                    "0.1 accuracy",
                    paper=f"{pa:.3f} / {pr:.3f} (FedAvg {fa_acc:.3f} / {fa_asr:.3f})",
                    measure=lambda r, n=name: (
                        acc("t1-" + n)(r),
                        asr("t1-" + n)(r),
                        acc("t1-fedavg")(r),
                        asr("t1-fedavg")(r),
                    ),
                    check=lambda v, d=defends, c=costs: (v[1] <= 0.5 * v[3]) == d and (v[0] <= v[2] - 0.1) == c,
                    rule="same as the paper: (ASR <= 0.5 ASR_fedavg) and (Acc <= Acc_fedavg - 0.1)",
                    source="paper",
                    where=T1,
                )
            )
        out += [
            Claim(
                "E1",
                "edge-case attack succeeds against FedAvg: ASR >= 0.4 and >= no-attack + 0.3",
                paper="ASR_fedavg >= max(0.4, ASR_none + 0.3)",
                measure=lambda r: (asr("t1-fedavg")(r), asr("t1-no-attack")(r)),
                check=lambda v: v[0] >= 0.4 and v[0] >= v[1] + 0.3,
                rule="ASR_fedavg >= max(0.4, ASR_none + 0.3)",
                source="derived",
                where="spec E1 (precondition of E2)",
            ),
            Claim(
                "E2",
                "Ours cuts ASR at small accuracy cost vs FedAvg (ASR ours, ASR FedAvg, Acc ours, Acc FedAvg)",
                paper="ASR .001 vs .717; Acc .677 vs .679",
                measure=lambda r: (asr("t1-ours")(r), asr("t1-fedavg")(r), acc("t1-ours")(r), acc("t1-fedavg")(r)),
                check=lambda v: v[0] <= 0.5 * v[1] and v[2] >= v[3] - 0.03,
                rule="ASR_ours <= 0.5 ASR_fedavg and Acc_ours >= Acc_fedavg - 0.03",
                why="at this scale the attackers' progress passes the AND-mask on coordinates where the trimmed "
                "mean keeps their sign (see the notes' diagnosis)",
                source="paper",
                where=T1,
            ),
            Claim(
                "E3",
                "AND-mask x mean alone does not defend (ASR AND-mask, ASR ours)",
                paper=".655 vs .001",
                measure=lambda r: (asr("t4-and-mask")(r), asr("t1-ours")(r)),
                check=lambda v: v[0] >= v[1] + 0.15,
                rule="ASR_andmask >= ASR_ours + 0.15",
                source="paper",
                where="Table 4",
            ),
            Claim(
                "E4",
                "Trimmed mean alone does not defend (ASR TrMean, ASR ours)",
                paper=".512 vs .001",
                measure=lambda r: (asr("t1-trimmed-mean")(r), asr("t1-ours")(r)),
                check=lambda v: v[0] >= v[1] + 0.15,
                rule="ASR_trmean >= ASR_ours + 0.15",
                source="paper",
                where="Table 4",
            ),
            Claim(
                "E4-nonInf",
                "Ours is not worse than the trimmed mean (ASR ours, ASR TrMean)",
                paper="ASR_ours <= ASR_trmean + 0.05",
                measure=lambda r: (asr("t1-ours")(r), asr("t1-trimmed-mean")(r)),
                check=lambda v: v[0] <= v[1] + 0.05,
                rule="ASR_ours <= ASR_trmean + 0.05",
                source="derived",
                where="spec E4 (non-inferiority)",
            ),
            Claim(
                "E4-fixed",
                "ASR (FedAvg, TrMean, Ours) with exactly 20% attackers in every round",
                paper=None,
                measure=lambda r: tuple(round(asr(f"fixed-{w}")(r), 3) for w in ("fedavg", "trimmed-mean", "ours")),
            ),
            Claim(
                "T4-mean-var",
                "Mean-variance-ratio mask ablation defends (Acc, ASR, FedAvg's ASR)",
                paper=".554 / .000",
                measure=lambda r: (acc("t4-mean-var")(r), asr("t4-mean-var")(r), asr("t1-fedavg")(r)),
                check=lambda v: v[1] <= 0.5 * v[2],
                rule="ASR <= 0.5 ASR_fedavg",
                source="paper",
                where="Table 4",
            ),
            Claim(
                "T4-code",
                "Authors' code variant (tau .6 >=, middle 10%) (Acc, ASR)",
                paper=None,
                measure=lambda r: (acc("t4-code-preset")(r), asr("t4-code-preset")(r)),
            ),
            Claim(
                "T5-none",
                "Ours without attack: no backdoor (Acc, ASR)",
                paper=".685 / .000",
                measure=lambda r: (acc("t5-no-attack")(r), asr("t5-no-attack")(r)),
                check=lambda v: v[1] <= 0.05,
                rule="ASR <= 0.05",
                source="paper",
                where="Table 5",
            ),
            Claim(
                "T5-dba",
                "DBA pixel trigger (4 lines, one per attacker, target 2): Ours stops an attack that works "
                "against FedAvg (ASR ours, ASR FedAvg)",
                paper="Ours .001",
                measure=lambda r: (asr("t5-dba-ours")(r), asr("t5-dba-fedavg")(r)),
                check=lambda v: v[1] >= 0.4 and v[0] <= 0.5 * v[1],
                rule="ASR_fedavg >= 0.4 (the attack works) and ASR_ours <= 0.5 ASR_fedavg",
                source="paper",
                where="Table 5",
            ),
            Claim(
                "E11",
                "collude / adaptive / both barely raise Ours' ASR",
                paper=".021 / .013 / .049 (edge .001)",
                measure=lambda r: tuple(
                    round(asr(f"t5-{v}-ours")(r), 3) for v in ("collude", "adaptive", "collude-adaptive")
                ),
                check=lambda v: max(v) <= 0.1,
                rule="each ASR <= 0.1",
                source="paper",
                where="Table 5",
            ),
            Claim(
                "E11-gate",
                "collude and adaptive ASR of Ours within +0.2 of the plain edge-case ASR (seed 0)",
                paper="rise <= 0.2",
                measure=lambda r: (
                    max(asr(f"t5-{v}-ours")(r) for v in ("collude", "adaptive", "collude-adaptive"))
                    - asr0("t1-ours")(r)
                ),
                check=lambda v: v <= 0.2,
                rule="max rise <= 0.2",
                source="derived",
                where="spec E11",
            ),
            Claim(
                "E13",
                "Ours beats FLTrust and RFA under collude (T6) and adaptive (T7): ASR (Ours, FLTrust, RFA)",
                paper="collude .021 vs .580/.878; adaptive .013 vs .543/.837",
                measure=lambda r: {
                    v: tuple(round(asr(f"t5-{v}-{w}")(r), 3) for w in ("ours", "fltrust", "rfa"))
                    for v in ("collude", "adaptive")
                },
                check=lambda v: all(o < min(f, g) for o, f, g in v.values()),
                rule="ASR_ours < min(FLTrust, RFA) in both",
                source="paper",
                where="Tables 6, 7",
            ),
            Claim(
                "E7",
                "poison ratio 5/10/15/20%: Ours ASR stays low",
                paper="<= .001",
                measure=lambda r: tuple(
                    round(asr0(k)(r), 3) for k in ("t8-ratio5", "t8-ratio10", "t8-ratio15", "t1-ours")
                ),
                check=lambda v: max(v) <= 0.05,
                rule="ASR <= 0.05 at every ratio",
                source="paper",
                where="Table 8",
            ),
            Claim(
                "T9",
                "trigger size x1/x2/x4 (DBA): Ours ASR stays low",
                paper=".001 / .003 / .003",
                measure=lambda r: tuple(round(asr(k)(r), 3) for k in ("t5-dba-ours", "t9-size2", "t9-size4")),
                check=lambda v: max(v) <= 0.05,
                rule="each ASR <= 0.05",
                source="paper",
                where="Table 9",
            ),
            Claim(
                "E8",
                "heterogeneity: Ours ASR < FedAvg ASR at every Dirichlet alpha (ours, FedAvg)",
                paper="ASR_ours < ASR_fedavg per alpha",
                measure=lambda r: {
                    a: (round(asr(f"t10-alpha{a}-ours")(r), 3), round(asr(f"t10-alpha{a}-fedavg")(r), 3))
                    for a in ("100", "1", "0.2")
                },
                check=lambda v: all(o < f for o, f in v.values()),
                rule="ASR_ours < ASR_fedavg per alpha",
                source="derived",
                where="spec E8",
            ),
            Claim(
                "T10",
                "heterogeneity: Ours stops the backdoor at every Dirichlet alpha (ASR ours, FedAvg)",
                paper="Ours ASR <= .001 at all alpha",
                measure=lambda r: {
                    a: (round(asr(f"t10-alpha{a}-ours")(r), 3), round(asr(f"t10-alpha{a}-fedavg")(r), 3))
                    for a in ("100", "1", "0.2")
                },
                check=lambda v: all(o <= 0.05 for o, _ in v.values()),
                rule="ASR_ours <= 0.05 per alpha",
                source="paper",
                where="Table 10",
            ),
            Claim(
                "E8-acc",
                "accuracy falls with heterogeneity (alpha 100 > 1 > 0.5 > 0.2)",
                paper=".857 > .696 > .677 > .632",
                measure=lambda r: tuple(
                    round(acc0(k)(r), 3)
                    for k in ("t10-alpha100-ours", "t10-alpha1-ours", "t1-ours", "t10-alpha0.2-ours")
                ),
                check=lambda v: all(a >= b - 0.005 for a, b in zip(v, v[1:])),
                rule="non-increasing (0.005 slack)",
                source="paper",
                where="Table 10",
            ),
            Claim(
                "E12",
                "Krum loses accuracy vs FedAvg (Krum, FedAvg; seed 0)",
                paper=".140 vs .679",
                measure=lambda r: (acc0("t1-krum")(r), acc0("t1-fedavg")(r)),
                check=lambda v: v[0] <= v[1] - 0.02,
                rule="Acc_krum <= Acc_fedavg - 0.02",
                source="paper",
                where=T1,
            ),
            Claim(
                "Thm10",
                "Theorem-10 bounds hold in Monte Carlo (4 SE)",
                paper="bounds",
                measure=lambda r: r.extras.get("theorem10_ok"),
                check=lambda v: v is True,
                rule="all bounds within 4 SE",
                source="derived",
                where="Theorem 10",
            ),
            Claim(
                "Prop5",
                "Prop. 5 threshold angle (paper: 0.4 pi suffices)",
                paper="0.4 pi",
                measure=lambda r: round(r.extras.get("prop5_threshold_pi"), 6),
                check=lambda v: v <= 0.4,
                rule="arccos(1/3)/pi <= 0.4",
                source="check",
                where="Prop. 5",
            ),
        ]
        if not quick:
            out.append(
                Claim(
                    "rare-tail",
                    "(extra) rare T-shirts (most atypical 20% of test class 0) -> 9: ASR "
                    "(no attack, FedAvg, TrMean, Ours)",
                    paper=None,
                    measure=lambda r: tuple(
                        asr(f"rare-{w}")(r) for w in ("no-attack", "fedavg", "trimmed-mean", "ours")
                    ),
                )
            )
        for c in out:  # report 3 decimals
            c.measure = _rounded(c.measure)
        return out

    def extras(self, quick: Scale, results: Results) -> dict[str, Any]:
        quick = Scale.of(quick)
        rows = theorem10_monte_carlo(
            trials=40_000 if quick is not Scale.FULL else 200_000
        )  # --quick (any scale): fewer trials
        ok = True
        for r in rows:

            def se(p):
                return 4 * math.sqrt(max(p * (1 - p), 1e-12) / r["trials"]) + 1e-9

            ok &= r["trmean_m"] <= r["bound_trmean_m"] + se(r["bound_trmean_m"])
            ok &= r["ours_strict_m"] <= r["bound_ours_strict_m"] + se(r["bound_ours_strict_m"])
            ok &= r["trmean_b"] >= r["bound_b"] - se(r["bound_b"])
            ok &= r["ours_ge_b"] >= r["bound_b"] - se(r["bound_b"])
            ok &= r["ours_strict_b"] >= r["bound_ours_strict_b"] - se(r["bound_ours_strict_b"])
        out: dict[str, Any] = {
            "Theorem 10 Monte Carlo (N=20, N'=4, alpha=.25, tau=.5)": theorem10_table(rows),
            "theorem10_ok": bool(ok),
            "prop5_threshold_pi": prop5_threshold() / math.pi,
        }
        out["Table 1 (scaled)"] = self._table1(results)
        return out

    @staticmethod
    def _table1(results: Results) -> str:
        lines = []
        for name, (pa, pr) in PAPER_T1.items():
            rid = f"t1-{name}"
            if rid not in results.runs:
                continue
            rids = seed_runs(results, rid)
            cells = []
            for key in ("final_main_acc", "final_backdoor_acc", "max_backdoor_acc"):
                vals = [results.runs[x].summary.get(key) for x in rids]
                vals = [v for v in vals if v is not None]
                if not vals:
                    cells.append("-")
                elif len(vals) == 1:
                    cells.append(f"{vals[0]:.3f}")
                else:  # the paper's format: mean +- sample variance (ddof 1), rounded up
                    var = math.ceil(float(np.var(vals, ddof=1)) * 1000) / 1000
                    cells.append(f"{np.mean(vals):.3f} ± {var:.3f}")
            lines.append([name, f"{pa:.3f}", f"{pr:.3f}", *cells])
        return markdown_table(
            ["method", "paper Acc", "paper ASR", "ours Acc", "ours ASR", "ours max ASR over rounds"], lines
        )
