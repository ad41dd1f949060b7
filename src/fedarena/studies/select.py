"""Worst-case tuning of defense parameters (``select:`` in a sweep spec).

A defense's parameters (trimmed mean's ``trim``, Multi-Krum's ``f``, RLR's ``theta``,
...) change its robustness, and a study that runs each rule at one hand-picked value
compares the picks as much as the rules. ByzFL's benchmark (Allouah et al.) instead
tunes each rule by its *worst case over attacks* on a validation split and reports
test metrics at the chosen setting. ``select:`` does the same::

    select:
      params:                    # defense name -> a grid over its parameters
        trimmed-mean: {trim: [2, 4, 6]}
        multi-krum: {f: [2, 4, 6]}
        rlr: {theta: [4, 8, 12]}
      seeds: [0, 1]              # tuning seeds (default: the grid's seeds)
      objective: main_acc        # or main_acc-backdoor_acc
      validation_frac: 0.2       # share of the training data held out for validation

1. Tuning: every defense of the grid named in ``params`` runs at every combination of
   its listed values, against every attack of the grid, on the tuning seeds, with
   ``eval.split=validation`` (:mod:`fedarena.data.validation`: training on the training
   data minus a stratified held-out share, evaluated on that share; the test set is not
   touched). Those runs live in ``<sweep>/tuning/``, a sweep folder of their own.
2. Score: per candidate, the mean over tuning seeds of the final validation objective
   (``main_acc``: final MA, chance for a diverged run; ``main_acc-backdoor_acc``: MA
   minus BA where a backdoor is measured), then the lowest over attacks (the worst
   case). The candidate with the highest worst case wins (ties: the first listed).
3. Test: the sweep's runs of that defense play at the chosen values, evaluated on the
   test set as usual. ``<sweep>/selection.json`` records the chosen values, each
   candidate's validation score and worst attack; the report shows them.

Choices are made per setting: runs that differ in a variant or any grid key other
than attack, defense and seed are tuned apart.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .spec import Job, SweepSpec, grid_labels

SELECT_KEYS = {"params", "seeds", "objective", "validation_frac"}
OBJECTIVES = ("main_acc", "main_acc-backdoor_acc")
SELECTION_FILE = "selection.json"
TUNING_DIR = "tuning"
_PER_RUN = {"attack", "defense", "seed", "run"}


@dataclass
class Selection:
    """The parsed ``select:`` block of a spec."""

    params: dict[str, dict[str, list[Any]]]
    seeds: Optional[list[Any]] = None
    objective: str = "main_acc"
    validation_frac: float = 0.2
    defense_blocks: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_tree(cls, tree: dict[str, Any], spec: SweepSpec) -> "Selection":
        unknown = set(tree) - SELECT_KEYS
        if unknown:
            raise ConfigError(f"spec.select.{sorted(unknown)[0]}", "unknown key", ", ".join(sorted(SELECT_KEYS)))
        params = tree.get("params")
        if not isinstance(params, dict) or not params:
            raise ConfigError(
                "spec.select.params", "must map defense names to parameter grids", "e.g. {trimmed-mean: {trim: [2, 4]}}"
            )
        blocks = spec.grid.get("defense")
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise ConfigError(
                "spec.grid.defense",
                "select: needs the grid's defenses as blocks",
                "defense: [{name: fedavg}, {name: trimmed-mean}, ...]",
            )
        names = [str(b.get("name", "fedavg")) for b in blocks]
        for name, grid in params.items():
            if name not in names:
                raise ConfigError(f"spec.select.params.{name}", "is not a defense of the grid", ", ".join(names))
            if not isinstance(grid, dict) or not grid:
                raise ConfigError(
                    f"spec.select.params.{name}", "must map parameters to lists of values", "e.g. {trim: [2, 4, 6]}"
                )
            for key, values in grid.items():
                if key == "name" or not isinstance(values, list) or not values:
                    raise ConfigError(
                        f"spec.select.params.{name}.{key}",
                        f"must be a non-empty list of values of a parameter (got {values!r})",
                        "[v1, v2, ...]",
                    )
        objective = tree.get("objective", "main_acc")
        if objective not in OBJECTIVES:
            raise ConfigError("spec.select.objective", f"unknown objective {objective!r}", ", ".join(OBJECTIVES))
        frac = tree.get("validation_frac", 0.2)
        if not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ConfigError("spec.select.validation_frac", f"must be in (0, 1) (got {frac!r})", "e.g. 0.2")
        seeds = tree.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not seeds):
            raise ConfigError("spec.select.seeds", f"must be a non-empty list (got {seeds!r})", "e.g. [0, 1]")
        return cls({k: dict(v) for k, v in params.items()}, seeds, objective, float(frac), blocks)

    def candidates(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        """The parameter settings of one grid defense block (``[{}]`` when it is not tuned)."""
        grid = self.params.get(str(block.get("name", "fedavg")))
        if not grid:
            return [{}]
        return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def selection_of(spec: SweepSpec) -> Optional[Selection]:
    return Selection.from_tree(spec.select, spec) if spec.select else None


def tuning_spec(spec: SweepSpec, sel: Selection) -> SweepSpec:
    """The tuning sweep: the tuned defenses at every candidate, on the validation split."""
    base = copy.deepcopy(spec.base)
    base.setdefault("eval", {}).update({"split": "validation", "validation_frac": sel.validation_frac})
    grid = dict(spec.grid)
    grid["defense"] = [
        {**b, **c} for b in sel.defense_blocks if str(b.get("name", "fedavg")) in sel.params for c in sel.candidates(b)
    ]
    if sel.seeds is not None:
        grid["seed"] = list(sel.seeds)
    return SweepSpec(f"{spec.name}-tuning", base, grid, copy.deepcopy(spec.variants))


def _setting(labels: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items() if k not in _PER_RUN)


def choose(spec: SweepSpec, sel: Selection, tuning_jobs: list[Job], table: pd.DataFrame) -> list[dict[str, Any]]:
    """The chosen parameters per (setting, tuned defense) from the tuning runs' table
    (one row per run with ``run``, ``final_main_acc``, ``final_backdoor_acc``, ``status``,
    ``num_classes``); see the module docstring for the score."""
    tspec = tuning_spec(spec, sel)
    labels = grid_labels("defense", tspec.grid["defense"])
    cand_of = {lab: blk for lab, blk in zip(labels, tspec.grid["defense"])}
    by_run = {j.run_id: j for j in tuning_jobs}
    rows = []
    for _, r in table.iterrows():
        job = by_run.get(r["run"])
        if job is None:
            continue
        chance = 1.0 / (r.get("num_classes") or 10) if not pd.isna(r.get("num_classes")) else 0.1
        ma = chance if r["status"] == "diverged" else r["final_main_acc"]
        ba = r.get("final_backdoor_acc")
        score = ma - (ba if sel.objective == "main_acc-backdoor_acc" and ba is not None and not pd.isna(ba) else 0.0)
        blk = cand_of[job.labels["defense"]]
        rows.append(
            {
                "setting": _setting(job.labels),
                "defense": str(blk.get("name")),
                "candidate": job.labels["defense"],
                "attack": job.labels["attack"],
                "seed": job.labels.get("seed"),
                "score": float(score) if score is not None and not pd.isna(score) else math.nan,
            }
        )
    scores = pd.DataFrame(rows)
    out = []
    if scores.empty:
        return out
    for (setting, defense), g in scores.groupby(["setting", "defense"], sort=False):
        cands = []
        for cand, h in g.groupby("candidate", sort=False):
            per_attack = h.groupby("attack", sort=False)["score"].mean()
            worst = per_attack.min() if per_attack.notna().any() else math.nan
            params = {k: v for k, v in cand_of[cand].items() if k in sel.params[defense]}
            cands.append(
                {
                    "params": params,
                    "label": cand,
                    "score": None if pd.isna(worst) else float(worst),
                    "worst_attack": per_attack.idxmin() if per_attack.notna().any() else None,
                    "runs": int(len(h)),
                }
            )
        scored = [c for c in cands if c["score"] is not None]
        best = max(scored, key=lambda c: c["score"]) if scored else None  # max keeps the first of equal scores
        out.append(
            {
                "setting": setting,
                "defense": defense,
                "params": best["params"] if best else None,
                "score": best["score"] if best else None,
                "worst_attack": best["worst_attack"] if best else None,
                "candidates": cands,
            }
        )
    return out


def apply_choice(jobs: list[Job], chosen: list[dict[str, Any]]) -> list[Job]:
    """The sweep's test jobs with each tuned defense at its chosen parameters (run ids kept;
    a defense whose tuning found no finished run keeps the spec's values)."""
    pick = {(c["setting"], c["defense"]): c["params"] for c in chosen if c["params"] is not None}
    out = []
    for job in jobs:
        cfg = copy.deepcopy(job.config)
        params = pick.get((_setting(job.labels), str(cfg.get("defense", {}).get("name", "fedavg"))))
        if params:
            cfg["defense"] = {**cfg.get("defense", {}), **params}
        new = Job(job.run_id, cfg, dict(job.labels))
        new.validated()
        out.append(new)
    return out


def write_selection(out: Path, sel: Selection, chosen: list[dict[str, Any]]) -> None:
    doc = {
        "objective": sel.objective,
        "split": "validation",
        "validation_frac": sel.validation_frac,
        "seeds": sel.seeds,
        "tuning_folder": TUNING_DIR,
        "chosen": chosen,
    }
    (Path(out) / SELECTION_FILE).write_text(json.dumps(doc, indent=1, default=_json) + "\n")


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def read_selection(paths: list[Path]) -> list[dict[str, Any]]:
    """The ``selection.json`` of every sweep folder among ``paths``."""
    out = []
    for p in map(Path, paths):
        f = p / SELECTION_FILE
        if f.is_file():
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
    return out


def params_text(params: Optional[dict[str, Any]]) -> str:
    return " ".join(f"{k}={v}" for k, v in (params or {}).items()) or "-"


def run_selected(spec: SweepSpec, jobs: list[Job], out: str | Path, run: Any) -> tuple[list[Job], list[dict[str, Any]]]:
    """Tune, then return the test jobs at the chosen settings. ``run(jobs, folder)`` plays
    a list of jobs in a sweep folder and returns its results table (``run_sweep`` or the
    CLI's progress-bar wrapper)."""
    sel = selection_of(spec)
    if sel is None:
        return jobs, []
    tspec = tuning_spec(spec, sel)
    tjobs = tspec.jobs()
    table = run(tjobs, Path(out) / TUNING_DIR)
    chosen = choose(spec, sel, tjobs, table)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_selection(Path(out), sel, chosen)
    return apply_choice(jobs, chosen), chosen
