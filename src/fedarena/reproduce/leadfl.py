"""Reproduction of "LeadFL: Client Self-Defense against Model Poisoning in Federated
Learning" (Zhu, Roos, Chen; ICML 2023), from the report by Guthmann and Tan and the
LeadFL spec (its Sec. 1-3, 5.1-5.2, 6).

``fedarena reproduce leadfl [--quick]``.

Setting (full), scaled to a 2-core CPU:

* Fashion-MNIST (``data.root``), 100 clients with IID equal shares (600 images), 25
  malicious (fixed), 10 per round; 40 rounds (the report's own runs; the paper: 80);
  an MLP 784-100-10 (the paper: a 2-conv CNN with BatchNorm; a CNN costs about 4x here);
  one local epoch of batch 64 (about 10 steps, the report's "10 local training steps";
  the reference code: 10 epochs of batch 16), SGD lr 0.05, momentum 0.1 kept per client
  across its participations (``fl.client_state=persistent``: the reference code keeps one
  optimizer per client; lr there 0.01). Attackers stamp the paper's 9-pixel pattern (``nine-pixel``, rows 3-7,
  cols 23-25) on half of their non-target images and relabel them 8 (the reference
  attacker mixes a clean and a fully triggered loss by MGDA; not implemented); backdoor
  accuracy (BA) on the triggered non-target test images.
* ``--quick``: the spec's TOY-LEADFL: scikit-learn digits, MLP 64-32-10, 40 clients / 10
  malicious / 10 per round, 2 local epochs of batch 8, lr 0.05, no momentum, 40 rounds,
  the 3x3 checkerboard at rows/cols 5-7.
* Schedules: ``periodic`` (the report's S2: rounds t mod 10 in {0, 1} hold 6 attackers of
  10, the others none) and ``random`` (uniform selection, S1, the paper's tables).
* Servers: Multi-Krum as the reference code (``f = 1``: scores over the 7 nearest others,
  5 selected, plain mean), Bulyan (standard, ``f = 1``: the reference code's Bulyan
  variant is not implemented), FedAvg and SparseFed (k 10%, rho 0.9) where the claims use them.
* Clients: None, LDP and FL-WBC (Laplace scale 0.2), LeadFL (the authors' code, ``ref``:
  alpha 0.4, q 0.2, double task step), and the variants A3 / A1N / no double step.
* Seeds: 2 per core configuration in the full run (``/s0``, ``/s1``), 1 in ``--quick``;
  cohorts are identical across client and server defenses (paired).

Findings of the committed full run (``reproductions/leadfl/``; percentages, means of 2 seeds):

* Spikes get through every server rule (L1): BA in malicious-majority rounds is 98-99 %
  under Multi-Krum for every client defense; under the standard Bulyan (``f = 1``) None
  reaches 84 % and LeadFL 95 %, so L1's "within 10 points" fails: Bulyan filters more
  of a spike when benign updates are tight, and LeadFL spreads them.
* LeadFL lowers the average BA under Multi-Krum, 72.9 -> 62.6 (both seeds: 73.9 -> 62.7,
  71.9 -> 62.6), at no main-task cost (83.2 vs 83.3), but hardly under Bulyan, 58.2 -> 56.6
  (L3 fails there). alpha matters (L6 passes: 60.3 / 56.6 / 54.2 / 46.7 for 0.2 / 0.4 /
  0.6 / 1.0): at alpha 0.4 the effect is small at this scale.
* Recovery to BA < 30 % (L4) is not faster: after the first cycle the backdoor
  accumulates (66 % BA in benign rounds without client defense) and rarely falls below
  30 % within a cycle for any defense, so most recoveries are censored at 9 rounds
  (None 7.4, LeadFL 7.2). LeadFL's effect shows as a lower BA level in benign rounds
  (66.3 -> 53.5), not as a crossing of 30 %.
* LDP and FL-WBC with Laplace scale 0.2 lower BA more than LeadFL under the periodic
  schedule (58.7, 57.9 vs 62.6; L8 fails) but cost 3 points of accuracy (80.2 vs 83.3;
  L9 passes). The scale the paper used for them is unknown (spec A11).
* Random selection (Table I's setting) reverses the ordering (L11, L15; contested, not
  gated): with Multi-Krum and no client defense minority attackers are filtered and the
  one malicious-majority round is forgotten (BA avg 8.9, final 13.0); with LDP, FL-WBC or
  LeadFL (double task step) benign updates are more spread than the attackers' (who never
  apply a client defense), Multi-Krum's nearest-neighbour score then prefers the attackers
  even in minority rounds and the backdoor stays (BA avg 89.4 / 89.3 / 56.1, final 96 /
  96 / 92). LeadFL without the double task step behaves like None (5.6). The spec's
  prototype found the same direction (REF 77.1 vs None 49.0). Under FedAvg LeadFL helps a
  little (76.3 -> 68.2, one seed). These runs use no forced rounds (``fl.forced_rounds``).
* The double task step (L10) carries part of the effect: BA avg 62.6 with, 69.0 without.
* The report's Algorithm 3 (L12) collapses accuracy on this BatchNorm-free MLP (33.8 %):
  it shifts every weight by ``-lr alpha q`` per step (spec Sec. 2.4). A1N hardly changes
  BA (71.0) and costs 4 points of accuracy.
* The parameter-space attack effect (L13) decays at the same rate with and without LeadFL
  (r_13 0.85 and 0.85 under Multi-Krum, 0.83 and 0.83 under FedAvg): LeadFL's lower BA is
  not a faster decay of ``||W - W^M||``.
* SparseFed (one seed): LeadFL lowers BA avg 50.8 -> 33.5.
* Table I's absolute numbers are not reproduced; what differs: an MLP instead of the CNN
  with BatchNorm, 40 rounds instead of 80, about 10 local steps instead of 10 epochs,
  lr 0.05, a data-poisoning attacker instead of the MGDA blend, the standard Bulyan, no
  forced rounds, 2 seeds.

Claims: the report's numbers and statements as ``paper`` rows, each on the schedule it was
measured on (Table I: random selection, Multi-Krum; Fig. 1 text: periodic spikes; Sec. IV:
Bulyan), the spec's statistical claims as ``derived`` rows (the periodic variants L5/L8/L9,
the toys' L1, L2, L10, L13 persistence) and its unit claims U1-U10 as implementation checks.
Figures (PNG, the report's Figs. 1-8 style): BA and main-task accuracy over rounds with the
spike rounds shaded.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any, Optional

import numpy as np

from ..registry import PAPERS
from .framework import Claim, Paper, Results, deep_update
from .leadfl_units import UNITS

SCALES: dict[str, dict[str, Any]] = {
    "full": {"data": {"dataset": "fashion-mnist"}, "model": {"name": "mlp", "hidden": [100]}, "clients": 100,
             "malicious": 25, "epochs": 1, "batch": 64, "lr": 0.05, "momentum": 0.1, "trigger": "nine-pixel",
             "rounds": 40, "seeds": 2},
    "quick": {"data": {"dataset": "digits"}, "model": {"name": "mlp", "hidden": [32]}, "clients": 40,
              "malicious": 10, "epochs": 2, "batch": 8, "lr": 0.05, "momentum": 0.0, "trigger": "badnets",
              "rounds": 40, "seeds": 1},
}
SERVERS = {"mk": {"name": "multi-krum", "f": 1, "m": 5}, "bulyan": {"name": "bulyan", "f": 1},
           "fedavg": {"name": "fedavg"}, "sparsefed": {"name": "sparsefed", "k_frac": 0.1}}
CLIENTS: dict[str, dict[str, Any]] = {
    "none": {"client": "none"}, "ldp": {"client": "ldp", "pert_strength": 0.2},
    "fl-wbc": {"client": "fl-wbc", "pert_strength": 0.2},
    "leadfl": {"client": "leadfl", "client_variant": "ref", "regular_weight": 0.4, "pert_strength": 0.2},
    "leadfl-a0.2": {"client": "leadfl", "regular_weight": 0.2}, "leadfl-a0.6": {"client": "leadfl", "regular_weight": 0.6},
    "leadfl-a1.0": {"client": "leadfl", "regular_weight": 1.0},
    "leadfl-nodouble": {"client": "leadfl", "double_task_step": False},
    "leadfl-a3": {"client": "leadfl", "client_variant": "a3"}, "leadfl-a1n": {"client": "leadfl", "client_variant": "a1n"},
}
#: (schedule, server, client, all seeds?) -- the grid
GRID = ([("periodic", s, c, True) for s in ("mk", "bulyan") for c in ("none", "ldp", "fl-wbc", "leadfl")]
        + [("periodic", "bulyan", c, True) for c in ("leadfl-a0.2", "leadfl-a0.6", "leadfl-a1.0")]
        + [("periodic", "mk", c, False) for c in ("leadfl-nodouble", "leadfl-a3", "leadfl-a1n")]
        + [("random", "mk", c, True) for c in ("none", "ldp", "fl-wbc", "leadfl", "leadfl-nodouble")]
        + [("random", "fedavg", c, False) for c in ("none", "leadfl")]
        + [("periodic", "sparsefed", c, False) for c in ("none", "leadfl")]
        + [("periodic", "mk", "clean", False)])
ALPHAS = {0.2: "leadfl-a0.2", 0.4: "leadfl", 0.6: "leadfl-a0.6", 1.0: "leadfl-a1.0"}
#: Table I of the report (paper's Table 1): IID Fashion-MNIST, Multi-Krum, random selection
TABLE1 = {"none": (89.3, 82.6, 93.2), "ldp": (87.0, 76.0, 79.6), "fl-wbc": (87.2, 77.5, 80.6),
          "leadfl": (87.9, 32.9, 0.0)}
#: attack-effect twin runs (L13): a single spike at rounds 10-11, 25 rounds
TWIN_COUNTS = [0] * 10 + [6, 6] + [0] * 13


def _scale(quick: bool) -> dict[str, Any]:
    return SCALES["quick" if quick else "full"]


def base_tree(quick: bool, schedule: str = "periodic") -> dict[str, Any]:
    s = _scale(quick)
    fl = {"num_clients": s["clients"], "clients_per_round": 10, "rounds": s["rounds"], "local_epochs": s["epochs"],
          "batch_size": s["batch"], "lr": s["lr"], "momentum": s["momentum"],
          "sampling": "periodic" if schedule == "periodic" else "uniform", "period": 10, "spike_rounds": 2,
          "spike_malicious": 6, "client_state": "persistent" if s["momentum"] else "reset"}
    return {"seed": 0, "data": dict(s["data"]), "model": dict(s["model"]), "fl": fl,
            "attack": {"name": "backdoor", "num_malicious": s["malicious"], "target": 8, "trigger": s["trigger"],
                       "poison_frac": 0.5},
            "defense": {}, "eval": {"every": 1, "recovery_threshold": 0.3}}


def run_id(schedule: str, server: str, client: str, seed: int = 0) -> str:
    return f"{schedule}/{server}/{client}/s{seed}"


def tree_for(quick: bool, schedule: str, server: str, client: str, seed: int = 0) -> dict[str, Any]:
    tree = deep_update(base_tree(quick, schedule), {"seed": seed, "defense": dict(SERVERS[server])})
    if client == "clean":  # attackers poison nothing: the clean model's backdoor accuracy
        return deep_update(tree, {"attack": {"poison_frac": 0.0}})
    return deep_update(tree, {"defense": CLIENTS[client]})


# ------------------------------------------------------------------ reading results
def _runs(results: Results, schedule: str, server: str, client: str) -> list[str]:
    pre = f"{schedule}/{server}/{client}/s"
    return [r for r in results.runs if r.startswith(pre)]


def summ(results: Results, schedule: str, server: str, client: str, key: str) -> Optional[float]:
    """Mean over seeds of a summary value (``ba_mean``, ``final_main_acc``, ...), in %
    for accuracies, rounds for recovery."""
    vals = [results.runs[r].summary.get(key) for r in _runs(results, schedule, server, client)]
    vals = [v for v in vals if v is not None]
    if not vals:
        raise KeyError(f"{schedule}/{server}/{client}: no {key}")
    v = float(mean(vals))
    return round(v if key.startswith("recovery") else 100 * v, 2)


def spread(results: Results, schedule: str, server: str, client: str, key: str) -> float:
    """max - min over seeds of a summary value (0 with one seed), in the units of :func:`summ`."""
    vals = [results.runs[r].summary.get(key) for r in _runs(results, schedule, server, client)]
    vals = [v for v in vals if v is not None]
    if len(vals) < 2:
        return 0.0
    return round((max(vals) - min(vals)) * (1 if key.startswith("recovery") else 100), 2)


def max_mta_drop(results: Results, schedule: str, server: str, client: str) -> float:
    """Largest round-to-round main-accuracy drop into a benign round (L7), in points, mean over seeds."""
    drops = []
    for r in _runs(results, schedule, server, client):
        res = results.runs[r]
        acc = [m["main_acc"] for m in res.metrics]
        att = [x["num_attacking"] for x in res.rounds]
        d = [acc[t - 1] - acc[t] for t in range(1, len(acc)) if att[t] == 0]
        drops.append(max(d) if d else 0.0)
    return round(100 * float(mean(drops)), 2)


class _Checked(str):
    """A unit claim's measured value (as text) and whether it holds."""

    def __new__(cls, value: Any, ok: bool):
        obj = super().__new__(cls, str(value))
        obj.ok = bool(ok)
        return obj


# ------------------------------------------------------------------ attack effect (L13)
def attack_effect(quick: bool, server: str, client: str, overrides: Optional[list[str]] = None) -> list[float]:
    """``r_k = ||W_{t0+k} - W^M_{t0+k}|| / ||W_{t0} - W^M_{t0}||`` after a single spike
    (rounds 10-11, ``t0`` = 11), where ``W^M`` comes from a twin run whose attackers poison
    nothing (same cohorts, same training seeds: spec Sec. 3.4). k = 1..13."""
    import torch

    from ..config import load_config
    from ..run.simulation import Simulation

    tree = tree_for(quick, "periodic", server, client)
    tree = deep_update(tree, {"fl": {"sampling": "counts", "malicious_counts": TWIN_COUNTS,
                                     "rounds": len(TWIN_COUNTS)}})
    sims = [Simulation(load_config(None, overrides or [], base=t))
            for t in (tree, deep_update(tree, {"attack": {"poison_frac": 0.0}}))]
    norms = []
    for t in range(len(TWIN_COUNTS)):
        for s in sims:
            s.run_round(t)
        norms.append(float(torch.linalg.vector_norm(sims[0].flat_params - sims[1].flat_params)))
    t0 = 11
    return [round(norms[t0 + k] / max(norms[t0], 1e-12), 3) for k in range(1, len(TWIN_COUNTS) - t0)]


# ------------------------------------------------------------------ figures
def _plot(results: Results, runs: dict[str, str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {label: rid for label, rid in runs.items() if rid in results.runs}
    if not runs:
        return
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    first = results.runs[next(iter(runs.values()))]
    k = first.config.cohort_size
    for t, rec in enumerate(first.rounds):
        if rec["num_attacking"] > k / 2:
            for ax in axes:
                ax.axvspan(t + 0.5, t + 1.5, color="red", alpha=0.12, lw=0)
    for label, rid in runs.items():
        m = results.runs[rid].metrics
        x = [r["round"] + 1 for r in m]
        axes[0].plot(x, [100 * r["backdoor_acc"] for r in m], label=label, lw=1.4)
        axes[1].plot(x, [100 * r["main_acc"] for r in m], label=label, lw=1.4)
    axes[0].set_ylabel("backdoor accuracy (%)")
    axes[1].set_ylabel("main-task accuracy (%)")
    axes[1].set_xlabel("round (shaded: malicious-majority rounds)")
    axes[0].set_ylim(-2, 102)
    axes[0].set_title(title, fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_DOC = __doc__ or ""


@PAPERS.register("leadfl")
class LeadFL(Paper):
    """LeadFL: Client Self-Defense against Model Poisoning in Federated Learning (Zhu, Roos, Chen; ICML 2023)."""

    notes = "Setting (full)" + _DOC.split("Setting (full)", 1)[1].split("\nClaims:", 1)[0]
    not_reproduced = """
- Table II and Fig. 2 (CIFAR-10): CIFAR-10 is not available here and its CNN is beyond the CPU budget.
- Fig. 1 (periodic, Multi-Krum) and Figs. 3-8 are plotted below at our scale; their text is judged in L3-periodic, L4,
  L6, L7, L11, L12. Figs. 5-6's Algorithm 3 is run as `leadfl-a3`.
- Spec L14 (the near-identity local map ||M delta|| / ||delta|| along each client's trajectory): needs Hessian-vector
  products along the training trajectory; not built.
- The reference attacker's MGDA blend of a clean and a triggered loss: not built (a data-poisoning attacker is used).
"""

    def runs(self, quick: bool) -> dict[str, dict[str, Any]]:
        seeds = _scale(quick)["seeds"]
        out = {}
        for schedule, server, client, all_seeds in GRID:
            for seed in range(seeds if all_seeds else 1):
                out[run_id(schedule, server, client, seed)] = tree_for(quick, schedule, server, client, seed)
        return out

    def extras(self, quick: bool, results: Results) -> dict[str, Any]:
        units = {}
        for uid, fn in UNITS.items():
            try:
                units[uid] = fn()
            except Exception as e:  # reported as an error claim
                units[uid] = (f"error: {e}", False)
        overrides = self._overrides(results)
        effect = {f"{srv}/{c}": attack_effect(quick, srv, c, overrides) for srv in ("mk", "fedavg")
                  for c in ("none", "leadfl")}
        rows = ["| run | " + " | ".join(f"r_{k}" for k in range(1, 14)) + " |", "|---" * 14 + "|"]
        rows += [f"| {k} | " + " | ".join(f"{v:.2f}" for v in r) + " |" for k, r in effect.items()]
        return {"units": units, "effect": effect, "Attack effect after a single spike (L13)": "\n".join(rows),
                "Runs by schedule, server and client defense": self._table(results)}

    @staticmethod
    def _overrides(results: Results) -> list[str]:
        """The user's data location, taken from the runs (for the twin runs made here)."""
        if not results.runs:
            return []
        data = next(iter(results.runs.values())).config.data
        return [f"data.root={data.root}"] * (data.root is not None) + [f"data.download={str(data.download).lower()}"]

    @staticmethod
    def _table(results: Results) -> str:
        keys = ("final_main_acc", "ba_mean", "ba_mean_spike", "ba_mean_benign", "ba_final", "recovery_rounds_mean")
        lines = ["| schedule / server / client | seeds | MTA final | BA avg | BA spike | BA benign | BA final | "
                 "recovery |", "|---|---|---|---|---|---|---|---|"]
        seen = []
        for rid in results.runs:
            group = rid.rsplit("/s", 1)[0]
            if group in seen:
                continue
            seen.append(group)
            sch, srv, cl = group.split("/")
            vals = []
            for k in keys:
                try:
                    vals.append(f"{summ(results, sch, srv, cl, k):.1f}")
                except KeyError:
                    vals.append("-")
            lines.append(f"| {group} | {len(_runs(results, sch, srv, cl))} | " + " | ".join(vals) + " |")
        return "\n".join(lines)

    def figures(self, quick: bool, results: Results, out: Path) -> list[Path]:
        four = {c: c for c in ("none", "ldp", "fl-wbc", "leadfl")}
        figs = {
            "fig1_periodic_multikrum.png": ("periodic", "mk", four, "S2 periodic spikes, Multi-Krum (cf. report Fig. 1)"),
            "fig3_alpha_bulyan.png": ("periodic", "bulyan", {"None": "none", **{f"LeadFL alpha={a}": c for a, c in ALPHAS.items()}},
                                      "S2, Bulyan: LeadFL alpha sweep (cf. report Figs. 3-4)"),
            "fig5_variants_multikrum.png": ("periodic", "mk", {"None": "none", "REF (code)": "leadfl",
                                                               "REF, no double step": "leadfl-nodouble",
                                                               "A3 (report Alg. 3)": "leadfl-a3", "A1N": "leadfl-a1n"},
                                            "S2, Multi-Krum: LeadFL variants (cf. report Figs. 5-6)"),
            "fig6_periodic_bulyan.png": ("periodic", "bulyan", four, "S2, Bulyan (the report's extended evaluation)"),
            "fig7_random_multikrum.png": ("random", "mk", four, "Random selection, Multi-Krum (cf. report Figs. 7-8)"),
        }
        written = []
        for name, (sch, srv, labels, title) in figs.items():
            _plot(results, {lab: run_id(sch, srv, c) for lab, c in labels.items()}, out / name, title + ", seed 0")
            if (out / name).exists():
                written.append(out / name)
        return written

    def claims(self, quick: bool) -> list[Claim]:
        S = summ
        unit_paper = {
            "U1": "P(X>=6)=0.014493, P(X>=5)=0.067466, P(any X>=6 in 80 rounds)=0.6890",
            "U2": "X_t = 6 at t mod 10 in {0,1}, else 0", "U3": "Eq. (6) = dgrad - alpha R_{i-1} (exact)",
            "U4": "A3: H~ = -a*g on a diagonal quadratic", "U5": "A3 saturates: W~ - lr*alpha*q",
            "U6": "REF = the authors' loop", "U7": "LDP/FL-WBC noise on weights, i != 0; WBC mask |dg| > |N|",
            "U8": "reference aggregators (Multi-Krum 8-smallest/5, Krum 6-smallest, lower median, trim 20%)",
            "U9": ">= 4 of 5 Multi-Krum picks malicious in a 6/10 spike", "U10": "9 trigger pixels; clean BA ~ base rate",
        }
        claims = [Claim(uid, f"spec unit claim {uid}", unit_paper[uid], (lambda r, u=uid: _Checked(*r.extras["units"][u])),
                        lambda ours: ours.ok, "exact (tests/test_client_defenses.py, test_sampling.py)", source="check",
                        where=f"spec {uid}") for uid in UNITS]
        claims.append(Claim("U10b", "clean model's BA (attackers poison nothing) is near the base rate",
                            "~10", lambda r: S(r, "periodic", "mk", "clean", "ba_mean"), lambda v: v < 25, "< 25 %",
                            source="derived", where="spec U10"))

        def both(fn):
            return lambda r: {srv: fn(r, srv) for srv in ("mk", "bulyan")}

        def lowers(sch, srv, key="ba_mean"):
            """(None, LeadFL, seed spread): the spread is the largest max - min over seeds of either."""
            return lambda r: (S(r, sch, srv, "none", key), S(r, sch, srv, "leadfl", key),
                              max(spread(r, sch, srv, "none", key), spread(r, sch, srv, "leadfl", key)))

        def effect_ok(v):  # None - LeadFL >= max(3 points, 2 x the seed spread)
            return v[0] - v[1] >= max(3.0, 2 * v[2])

        RAND4 = ("none", "ldp", "fl-wbc", "leadfl")
        claims += [
            Claim("L1", "spike rounds get through the server rules whatever the client defense: mean BA over "
                  "spike rounds (None, LeadFL)", "84-99 (toy)",
                  both(lambda r, srv: (S(r, "periodic", srv, "none", "ba_mean_spike"),
                                       S(r, "periodic", srv, "leadfl", "ba_mean_spike"))),
                  lambda v: all(a >= 80 and b >= 80 and abs(a - b) <= 10 for a, b in v.values()),
                  ">= 80 both, |diff| <= 10, Multi-Krum and Bulyan", source="derived", where="spec L1 (toy)"),
            Claim("L2", "persistence: without client defense BA stays high in benign rounds (Multi-Krum)",
                  "43.2 (toy)", lambda r: S(r, "periodic", "mk", "none", "ba_mean_benign"), lambda v: v >= 25, ">= 25 %",
                  source="derived", where="spec L2 (toy)"),
            Claim("L3", "LeadFL lowers the average BA, random selection, Multi-Krum (None, LeadFL, seed spread)",
                  "82.6 -> 32.9", lowers("random", "mk"), effect_ok, "None - LeadFL >= max(3, 2 x spread)",
                  source="paper", where="Table I"),
            Claim("L3-periodic", "LeadFL lowers the average BA under periodic spikes, Multi-Krum and Bulyan "
                  "(None, LeadFL, seed spread)", "'stabilizes at a lower level'",
                  both(lambda r, srv: lowers("periodic", srv)(r)), lambda v: all(effect_ok(x) for x in v.values()),
                  "None - LeadFL >= max(3, 2 x spread), both servers", source="paper",
                  where="Sec. III, Fig. 1 text (periodic); Sec. IV (Bulyan)"),
            Claim("L4", "LeadFL recovers faster after each spike: rounds to BA < 30 % (None, LeadFL), Multi-Krum",
                  "'significantly faster'", lambda r: (S(r, "periodic", "mk", "none", "recovery_rounds_mean"),
                                                       S(r, "periodic", "mk", "leadfl", "recovery_rounds_mean")),
                  lambda v: v[1] <= v[0] - 1, "LeadFL <= None - 1 round", source="paper",
                  where="Sec. III, Fig. 1 text (periodic)"),
            Claim("L5", "small main-task cost, random selection, Multi-Krum (None, LeadFL final MTA)", "89.3 -> 87.9",
                  lambda r: (S(r, "random", "mk", "none", "final_main_acc"), S(r, "random", "mk", "leadfl", "final_main_acc")),
                  lambda v: v[1] >= v[0] - 3, "LeadFL >= None - 3 pts", source="paper", where="Table I"),
            Claim("L5-periodic", "small main-task cost under periodic spikes, Multi-Krum (None, LeadFL final MTA)",
                  "LeadFL >= None - 3",
                  lambda r: (S(r, "periodic", "mk", "none", "final_main_acc"), S(r, "periodic", "mk", "leadfl", "final_main_acc")),
                  lambda v: v[1] >= v[0] - 3, "LeadFL >= None - 3 pts", source="derived", where="spec L5 (S2)"),
            Claim("L6", "alpha: 0.2 weaker than 0.4, 0.6 slightly better (BA avg for alpha 0.2/0.4/0.6/1.0), Bulyan",
                  "qualitative", lambda r: [S(r, "periodic", "bulyan", c, "ba_mean") for c in ALPHAS.values()],
                  lambda v: all(v[i + 1] <= v[i] + 1.5 for i in range(3)) and v[3] < v[0] - 3,
                  "non-increasing (+1.5 tol.), a=1.0 < a=0.2 - 3", source="paper", where="Sec. IV, Fig. 3"),
            Claim("L7", "alpha 0.6 'introduces occasional drops' in MTA: largest MTA drop into a benign round "
                  "(alpha 0.2/0.4/0.6/1.0), Bulyan", "'occasional drops' at 0.6",
                  lambda r: [max_mta_drop(r, "periodic", "bulyan", c) for c in ALPHAS.values()],
                  lambda v: v[2] >= v[1] + 1, "drop(0.6) >= drop(0.4) + 1 pt", source="paper", where="Sec. IV, Fig. 4"),
            Claim("L8", "LeadFL beats LDP and FL-WBC on average BA, random selection, Multi-Krum (LeadFL, LDP, FL-WBC)",
                  "32.9 < 76.0, 77.5", lambda r: tuple(S(r, "random", "mk", c, "ba_mean") for c in ("leadfl", "ldp", "fl-wbc")),
                  lambda v: v[0] < min(v[1], v[2]) - 3, "LeadFL < min(LDP, FL-WBC) - 3", source="paper", where="Table I"),
            Claim("L8-periodic", "the same under periodic spikes, Multi-Krum (LeadFL, LDP, FL-WBC)", "LeadFL < min",
                  lambda r: tuple(S(r, "periodic", "mk", c, "ba_mean") for c in ("leadfl", "ldp", "fl-wbc")),
                  lambda v: v[0] < min(v[1], v[2]), "LeadFL < min(LDP, FL-WBC)", source="derived", where="spec L8 (S2)"),
            Claim("L9", "LeadFL's MTA >= LDP's and FL-WBC's, random selection, Multi-Krum (final MTA LeadFL, LDP, FL-WBC)",
                  "87.9 vs 87.0, 87.2",
                  lambda r: tuple(S(r, "random", "mk", c, "final_main_acc") for c in ("leadfl", "ldp", "fl-wbc")),
                  lambda v: v[0] >= max(v[1], v[2]) - 1, "LeadFL >= max - 1 pt", source="paper", where="Table I; Sec. IV"),
            Claim("L9-periodic", "the same under periodic spikes, Multi-Krum", "LeadFL >= max - 1",
                  lambda r: tuple(S(r, "periodic", "mk", c, "final_main_acc") for c in ("leadfl", "ldp", "fl-wbc")),
                  lambda v: v[0] >= max(v[1], v[2]) - 1, "LeadFL >= max - 1 pt", source="derived", where="spec L9 (S2)"),
            Claim("L10", "ablation: the reference code's double task step lowers BA (BA avg with, without)", "47.5 < 51.7",
                  lambda r: (S(r, "periodic", "mk", "leadfl", "ba_mean"), S(r, "periodic", "mk", "leadfl-nodouble", "ba_mean")),
                  lambda v: v[0] < v[1], "with < without", source="derived", where="spec L10 (toy)"),
            Claim("L11", "random selection: 'LeadFL still provides the strongest defense toward the end': final BA "
                  "(None, LDP, FL-WBC, LeadFL), Multi-Krum", "LeadFL lowest (Table I: 0.0)",
                  lambda r: {c: S(r, "random", "mk", c, "ba_final") for c in RAND4},
                  lambda v: v["leadfl"] <= min(v[c] for c in ("none", "ldp", "fl-wbc")), "LeadFL's is the lowest",
                  source="paper", where="Sec. IV, Fig. 8 text; Table I"),
            Claim("L12", "the report's Alg. 3 is 'slightly worse', qualitative behaviour intact (MTA final, BA avg of "
                  "A3; REF; None), Multi-Krum periodic", "comparable qualitative behaviour",
                  lambda r: {c: (S(r, "periodic", "mk", c, "final_main_acc"), S(r, "periodic", "mk", c, "ba_mean"))
                             for c in ("leadfl-a3", "leadfl", "none")},
                  lambda v: v["leadfl-a3"][0] >= v["leadfl"][0] - 5 and v["leadfl-a3"][1] <= v["none"][1] - 3,
                  "MTA(A3) >= MTA(REF) - 5 and BA(A3) <= BA(None) - 3", source="paper", where="Sec. IV, Figs. 5-6 text"),
            Claim("L13", "attack effect decays faster with LeadFL: r_13 = ||delta_24|| / ||delta_11|| (None, LeadFL), "
                  "Multi-Krum", "faster decay with LeadFL",
                  lambda r: (r.extras["effect"]["mk/none"][-1], r.extras["effect"]["mk/leadfl"][-1]),
                  lambda v: v[1] <= v[0] - 0.05, "r_13(LeadFL) <= r_13(None) - 0.05", source="paper",
                  where="Sec. II (LeadFL 'accelerating the decay of the attack effect')"),
            Claim("L13-persist", "without client defense the attack effect persists: r_13(None), Multi-Krum",
                  "None 0.74 (toy)", lambda r: r.extras["effect"]["mk/none"][-1], lambda v: v >= 0.5, "r_13(None) >= 0.5",
                  source="derived", where="spec L13 (toy)"),
            Claim("L15", "Table I ordering under random selection, BA avg (None, LDP, FL-WBC, LeadFL)",
                  "82.6 > 76.0 ~ 77.5 > 32.9",
                  lambda r: {c: S(r, "random", "mk", c, "ba_mean") for c in RAND4},
                  lambda v: v["none"] > max(v["ldp"], v["fl-wbc"]) and v["leadfl"] < min(v["ldp"], v["fl-wbc"]),
                  "None > LDP, FL-WBC > LeadFL", source="paper", where="Table I"),
            Claim("SF", "SparseFed server (BA avg None, LeadFL), S2", None,
                  lambda r: (S(r, "periodic", "sparsefed", "none", "ba_mean"), S(r, "periodic", "sparsefed", "leadfl", "ba_mean"))),
        ]
        for c, (mta, avg, fin) in TABLE1.items():
            claims.append(Claim(f"T1.{c}", f"Table I, {c}: MTA / BA avg / BA final (random selection, Multi-Krum)",
                                f"{mta} / {avg} / {fin}",
                                lambda r, c=c: tuple(S(r, "random", "mk", c, k) for k in ("final_main_acc", "ba_mean", "ba_final")),
                                lambda v, ref=(mta, avg, fin): (abs(v[0] - ref[0]) <= 5 and abs(v[1] - ref[1]) <= 15
                                                                and abs(v[2] - ref[2]) <= 15),
                                "|MTA - paper| <= 5, |BA avg - paper| <= 15, |BA final - paper| <= 15",
                                source="paper", where="Table I"))
        return claims
