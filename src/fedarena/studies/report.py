"""``fedarena report``: compare defenses over a sweep (or any set of run folders).

Written to ``<out>/``: ``report.md``, ``report.html`` (one self-contained page, figures
embedded as base64), ``leaderboard.csv``, ``cells.csv``, ``detection.csv`` and the figures
``heatmap_main_acc.png``, ``heatmap_backdoor_acc.png``, ``curves.png``.

* Leaderboard per defense (one per setting: dataset, partition, model, ... and any grid
  key other than attack, defense and seed): clean main accuracy (attack ``none``); main
  accuracy (MA) under attack and backdoor accuracy (BA, the attack success rate of
  backdoor attacks) as mean +- 95 % confidence interval over seeds (Student t, scipy;
  per seed the mean over attacks), and the worst case over attacks (lowest MA, highest
  BA, with the attack's name). Ranked by worst-case MA. Attacks whose strength
  ``attack.optimize`` searched are labelled ``<name>+opt`` and count in the worst case;
  when a sweep has them, ``worst_opt_ma`` is the worst MA over those alone (the strongest
  adaptive attack; "worst opt MA" in report.md/html).
* A diverged run (NaN/Inf) counts with chance accuracy (1 / number of classes) as its
  final MA; the ``diverged`` column counts such runs.
* Detection per defense, pooled over its runs, against the ground truth in
  ``clients.jsonl`` (``attacking``): a client counts as flagged when the defense
  rejected it (``accepted: false``) or gave it weight 0. Precision, recall, F1, FPR, and
  the FPR on rounds without attackers. Rules without a per-client decision: n/a.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from scipy import stats

from ..core.metrics import pooled_detection
from ..core.tables import markdown_table
from ..run.records import read_jsonl
from .results import find_runs, readable_runs, results_table
from .stats import (
    INTERVAL_METHOD,
    PAIRED_METHOD,
    Interval,
    fmt_bounded,
    fmt_diff,
    paired_interval,
    rank_labels,
    ranks_with_ties,
    t_interval,
)

#: columns that describe one run but not its setting
_RUN_COLS = {
    "run",
    "attack",
    "defense",
    "seed",
    "attack_name",
    "defense_name",
    "optimized",
    "num_malicious",
    "final_main_acc",
    "final_backdoor_acc",
    "final_base_acc",
    "final_loss",
    "mean_main_acc",
    "mean_backdoor_acc",
    "max_backdoor_acc",
    "backdoor_durability",
    "num_classes",
    "status",
    "rounds_completed",
    "diverged_at",
    "wall_time_s",
    "path",
    "ma",
    "ba",
}


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (NaN for one value)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def fmt_ci(mean: float, half: float, pct: bool = True) -> str:
    if math.isnan(mean):
        return "-"
    k = 100 if pct else 1
    return f"{k * mean:.1f}" + ("" if math.isnan(half) else f"±{k * half:.1f}")


def prepare(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``ma`` (final MA; chance for diverged runs) and ``ba`` (final BA) columns."""
    t = table.copy()
    chance = 1.0 / t["num_classes"].fillna(10).astype(float) if "num_classes" in t else 0.1
    t["ma"] = np.where(t["status"] == "diverged", chance, t["final_main_acc"].astype(float))
    t["ba"] = t["final_backdoor_acc"].astype(float)
    return t


def settings(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, runs) per setting: groups of runs that differ only in attack, defense, seed."""
    cols = [c for c in table.columns if c not in _RUN_COLS and table[c].astype(str).nunique() > 1]
    if not cols:
        return [("", table)]
    return [
        (", ".join(f"{c}={v}" for c, v in zip(cols, key if isinstance(key, tuple) else (key,))), g)
        for key, g in table.groupby(cols, sort=False, dropna=False)
    ]


def _per_seed(g: pd.DataFrame, col: str) -> pd.DataFrame:
    """seed x attack table of ``col`` (mean over duplicate runs)."""
    return g.pivot_table(index="seed", columns="attack", values=col, aggfunc="mean")


def _series(s: pd.Series) -> dict[Any, float]:
    return {k: float(v) for k, v in s.items() if not pd.isna(v)}


def leaderboard(t: pd.DataFrame, baseline: Optional[str] = "fedavg") -> pd.DataFrame:
    """One row per defense: clean MA, MA under attack (per seed the mean over attacks),
    worst-case MA (per seed the lowest MA over attacks), BA, each as mean and interval over
    seeds (:func:`fedarena.studies.stats.t_interval`); the paired differences against
    ``baseline`` (``d_ma``, ``d_worst_ma``, ``d_ba`` with ``_lo``/``_hi``, see
    :func:`fedarena.studies.stats.paired_interval`); ``rank``: competition rank by the
    per-seed worst-case MA, tied where the paired interval of two defenses' difference
    holds 0 (:func:`fedarena.studies.stats.ranks_with_ties`)."""
    per: dict[str, dict[str, dict[Any, float]]] = {}
    rows = []
    for defense, g in t.groupby("defense", sort=False):
        clean = g[g["attack_name"] == "none"]
        att = g[g["attack_name"] != "none"]
        row: dict[str, Any] = {
            "defense": defense,
            "runs": len(g),
            "seeds": g["seed"].nunique(),
            "diverged": int((g["status"] == "diverged").sum()),
        }
        ma_seed = _per_seed(att, "ma") if len(att) else pd.DataFrame()
        series = {
            "clean": _series(clean.groupby("seed")["ma"].mean()),
            "ma": _series(ma_seed.mean(axis=1)) if len(ma_seed) else {},
            "worst": _series(ma_seed.min(axis=1)) if len(ma_seed) else {},
        }
        per_attack = att.groupby("attack")["ma"].mean()
        opt = att[att["optimized"].fillna(False).astype(bool)] if "optimized" in att else att.iloc[:0]
        opt_seed = _per_seed(opt, "ma") if len(opt) else pd.DataFrame()
        bd = att[att["ba"].notna()]
        ba_seed = _per_seed(bd, "ba") if len(bd) else pd.DataFrame()
        series["ba"] = _series(ba_seed.mean(axis=1)) if len(ba_seed) else {}
        per[defense] = series
        for key, col in (("clean", "clean_ma"), ("ma", "ma"), ("worst", "worst_ma"), ("ba", "ba")):
            iv = t_interval(series[key].values())
            row[col], row[f"{col}_ci"], row[f"{col}_lo"], row[f"{col}_hi"] = iv.mean, iv.half, iv.lo, iv.hi
        row["worst_ma_attack"] = per_attack.idxmin() if len(per_attack) else ""
        per_opt = opt.groupby("attack")["ma"].mean()
        row["worst_opt_ma"] = float(opt_seed.min(axis=1).mean()) if len(opt_seed) else math.nan
        row["worst_opt_ma_attack"] = per_opt.idxmin() if len(per_opt) else ""
        per_bd = bd.groupby("attack")["ba"].mean()
        row["worst_ba"], row["worst_ba_attack"] = (per_bd.max(), per_bd.idxmax()) if len(per_bd) else (math.nan, "")
        rows.append(row)
    lb = pd.DataFrame(rows)
    base = baseline if baseline in per else None
    for key, col in (("ma", "d_ma"), ("worst", "d_worst_ma"), ("ba", "d_ba")):
        ivs = [paired_interval(per[d][key], per[base][key]) if base and d != base else None for d in lb["defense"]]
        lb[col] = [iv.mean if iv else math.nan for iv in ivs]
        lb[f"{col}_lo"] = [iv.lo if iv else math.nan for iv in ivs]
        lb[f"{col}_hi"] = [iv.hi if iv else math.nan for iv in ivs]
    scores = [per[d]["worst"] or per[d]["clean"] for d in lb["defense"]]
    lb.insert(0, "rank", ranks_with_ties(scores))
    lb.attrs["baseline"] = base
    key = lb["worst_ma"].fillna(lb["clean_ma"])
    return (
        lb.assign(_k=key)
        .sort_values(["rank", "_k"], ascending=[True, False], kind="stable")
        .drop(columns="_k")
        .reset_index(drop=True)
        .pipe(lambda d: _keep_attrs(d, base))
    )


def _keep_attrs(d: pd.DataFrame, base: Optional[str]) -> pd.DataFrame:
    d.attrs["baseline"] = base
    return d


def cells(t: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (attack, defense), g in t.groupby(["attack", "defense"], sort=False):
        ma, ma_ci = mean_ci(g["ma"])
        ba, ba_ci = mean_ci(g["ba"].dropna())
        dur = (
            pd.to_numeric(g["backdoor_durability"], errors="coerce").dropna()
            if "backdoor_durability" in g
            else g["ba"].iloc[:0]
        )
        rows.append(
            {
                "attack": attack,
                "defense": defense,
                "seeds": len(g),
                "ma": ma,
                "ma_ci": ma_ci,
                "ba": ba,
                "ba_ci": ba_ci,
                "durability": float(dur.mean()) if len(dur) else math.nan,
                "diverged": int((g["status"] == "diverged").sum()),
            }
        )
    return pd.DataFrame(rows)


def detection(t: pd.DataFrame) -> pd.DataFrame:
    """Pooled confusion counts per defense from the runs' ``clients.jsonl``
    (:func:`fedarena.core.metrics.pooled_detection`: the one definition of *flagged*, each
    run's rounds without attacker found within that run)."""
    rows = []
    for defense, g in t.groupby("defense", sort=False):
        d = pooled_detection(
            read_jsonl(Path(path) / "clients.jsonl") for path in g["path"] if (Path(path) / "clients.jsonl").exists()
        )
        if not d["decisions"]:
            rows.append({"defense": defense, "decisions": 0})
            continue
        rows.append(
            {
                "defense": defense,
                **{k: d[k] for k in ("decisions", "precision", "recall", "f1", "fpr", "fpr_no_attack_rounds")},
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(c: pd.DataFrame, value: str, title: str, path: Path, cmap: str) -> Optional[Path]:
    piv = c.pivot(index="attack", columns="defense", values=value)
    piv = piv.loc[list(dict.fromkeys(c["attack"])), list(dict.fromkeys(c["defense"]))].dropna(how="all")
    if piv.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2.2 + 1.0 * piv.shape[1], 1.9 + 0.5 * piv.shape[0]))
    im = ax.imshow(100 * piv.to_numpy(dtype=float), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(piv.shape[1]), piv.columns, rotation=30, ha="right")
    ax.set_yticks(range(piv.shape[0]), piv.index)
    for i in range(piv.shape[0]):
        for j in range(piv.shape[1]):
            v = piv.iat[i, j]
            if not pd.isna(v):
                ax.text(
                    j,
                    i,
                    f"{100 * v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if (v < 0.5) == (cmap == "viridis") else "black",
                )
    ax.set_xlabel("defense")
    ax.set_ylabel("attack")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves(t: pd.DataFrame, path: Path) -> Optional[Path]:
    """Per attack: MA (and BA where measured) per round, mean over seeds, band min-max."""
    attacks = list(dict.fromkeys(t["attack"]))
    if not attacks:
        return None
    series: dict[tuple[str, str], pd.DataFrame] = {}
    for (attack, defense), g in t.groupby(["attack", "defense"], sort=False):
        frames = []
        for seed_i, p in enumerate(g["path"]):
            f = Path(p) / "metrics.jsonl"
            if f.exists():
                m = pd.DataFrame(read_jsonl(f))
                if len(m):
                    frames.append(m.assign(_seed=seed_i))
        if frames:
            series[(attack, defense)] = pd.concat(frames)
    has_ba = [
        a
        for a in attacks
        if any(k[0] == a and "backdoor_acc" in v and v["backdoor_acc"].notna().any() for k, v in series.items())
    ]
    plt = _plt()
    nrows = 2 if has_ba else 1
    fig, axes = plt.subplots(nrows, len(attacks), figsize=(3.2 * len(attacks) + 2.0, 2.8 * nrows), squeeze=False)
    defenses = list(dict.fromkeys(t["defense"]))
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(defenses)}
    for j, attack in enumerate(attacks):
        for row, key in enumerate(["main_acc", "backdoor_acc"][:nrows]):
            ax = axes[row][j]
            for defense in defenses:
                s = series.get((attack, defense))
                if s is None or key not in s or s[key].isna().all():
                    continue
                x = s.groupby("round")[key].agg(["mean", "min", "max"])
                r = x.index.to_numpy() + 1
                ax.plot(r, x["mean"], color=colors[defense], label=defense, lw=1.4, marker="." if len(r) == 1 else None)
                ax.fill_between(r, x["min"], x["max"], color=colors[defense], alpha=0.2, lw=0)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"attack: {attack}", fontsize=10)
            if row == nrows - 1 or attack not in has_ba:
                ax.set_xlabel("round")
            if j == 0 or (key == "backdoor_acc" and attack == has_ba[0]):
                ax.set_ylabel("main accuracy" if key == "main_acc" else "backdoor accuracy")
            if key == "backdoor_acc" and attack not in has_ba:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no backdoor", ha="center", va="center", transform=ax.transAxes, color="gray")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(
        handles,
        labels,
        loc="center right",
        title="defense (mean over seeds,\nband: min-max)",
        fontsize=8,
        title_fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (3.2 * len(attacks) + 2.0), 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- text
def _iv(lb: pd.DataFrame, col: str) -> list[Interval]:
    return [Interval(m, lo, hi, 0) for m, lo, hi in zip(lb[col], lb[f"{col}_lo"], lb[f"{col}_hi"])]


def leaderboard_text(lb: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as display strings (percent; differences in points): intervals that
    would leave [0, 100] are shown as ``[lo, hi]`` clipped (:func:`fmt_bounded`)."""

    def pct(v):
        return "-" if pd.isna(v) else f"{100 * v:.1f}"

    base = lb.attrs.get("baseline")
    diff = {}
    if base:
        diff = {
            f"ΔMA vs {base}": [
                fmt_diff(iv) if d != base else "(baseline)" for iv, d in zip(_iv(lb, "d_ma"), lb["defense"])
            ],
            f"Δworst MA vs {base}": [
                fmt_diff(iv) if d != base else "(baseline)" for iv, d in zip(_iv(lb, "d_worst_ma"), lb["defense"])
            ],
        }
        bdiff = {
            f"ΔBA vs {base}": [
                fmt_diff(iv) if d != base else "(baseline)" for iv, d in zip(_iv(lb, "d_ba"), lb["defense"])
            ]
        }
    else:
        bdiff = {}
    return pd.DataFrame(
        {
            "rank": rank_labels(list(lb["rank"])),
            "defense": lb["defense"],
            "clean MA": [fmt_bounded(iv) for iv in _iv(lb, "clean_ma")],
            "MA": [fmt_bounded(iv) for iv in _iv(lb, "ma")],
            "worst MA": [fmt_bounded(iv) for iv in _iv(lb, "worst_ma")],
            "worst attack": [a or "-" for a in lb["worst_ma_attack"]],
            **diff,
            **(
                {
                    "worst opt MA": [
                        f"{pct(v)} {a}".strip() if not pd.isna(v) else "-"
                        for v, a in zip(lb["worst_opt_ma"], lb["worst_opt_ma_attack"])
                    ]
                }
                if lb["worst_opt_ma"].notna().any()
                else {}
            ),
            "BA": [fmt_bounded(iv) for iv in _iv(lb, "ba")],
            **(bdiff if lb["ba"].notna().any() else {}),
            "worst BA": [
                f"{pct(v)} {a}".strip() if not pd.isna(v) else "-"
                for v, a in zip(lb["worst_ba"], lb["worst_ba_attack"])
            ],
            "div": lb["diverged"],
        }
    )


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    return markdown_table(cols, ([_cell(r[c]) for c in cols] for _, r in df.iterrows()))


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _cells_text(c: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attack": c["attack"],
            "defense": c["defense"],
            "seeds": c["seeds"],
            "MA": [fmt_bounded(Interval(m, m - h, m + h, 0)) for m, h in zip(c["ma"], c["ma_ci"])],
            "BA": [fmt_bounded(Interval(m, m - h, m + h, 0)) for m, h in zip(c["ba"], c["ba_ci"])],
            **(
                {"durability": ["-" if pd.isna(v) else f"{v:.1f}" for v in c["durability"]]}
                if c["durability"].notna().any()
                else {}
            ),
            "diverged": c["diverged"],
        }
    )


LEGEND = (
    "MA: final main (clean test) accuracy, %; BA: final backdoor accuracy (attack success rate of backdoor "
    f"attacks), %. MA, BA: per seed the mean over attacks; worst MA: per seed the lowest MA over attacks (worst "
    f"attack: the one with the lowest mean); each with its {INTERVAL_METHOD}, written m±h, or m [lo, hi] clipped "
    "to 0..100 where m±h would leave the range. ΔMA, Δworst MA, ΔBA vs the baseline: mean difference in points "
    f"± half-width (or [lo, hi] clipped to ±100), {PAIRED_METHOD}. rank: by worst MA; a defense's rank is 1 + the number of defenses whose paired "
    "interval of the worst-MA difference to it lies above 0, so defenses that no interval separates share a "
    "rank (=). +opt: strength searched by attack.optimize (worst opt MA: over those alone); clean MA: attack "
    "none; div: diverged runs (counted with chance accuracy). durability (attack x defense table): rounds after "
    "the attack's last round until BA falls below eval.recovery_threshold, mean over seeds (censored at the "
    "rounds left)."
)


SELECTION_LEGEND = (
    "Each parameterised defense ran at every listed value against every attack of the study on a "
    "validation split carved from the training data (eval.split=validation); its score is the lowest "
    "over attacks of the mean over tuning seeds of the final validation objective; the value with the "
    "highest worst case was chosen, and every test metric above and below is at that value."
)


def diff_verdict(cell: str, lower_is_better: bool = False) -> Optional[str]:
    """``better`` / ``worse`` for a paired difference (``+m±h`` or ``+m [lo, hi]``) whose
    interval excludes 0, else None."""
    import re

    m = re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", cell)
    pm = re.fullmatch(r"([+-][\d.]+)±([\d.]+)", cell)
    if m is not None:
        lo, hi = float(m.group(2)), float(m.group(3))
    elif pm is not None:
        lo, hi = float(pm.group(1)) - float(pm.group(2)), float(pm.group(1)) + float(pm.group(2))
    else:
        return None
    if lower_is_better:
        lo, hi = -hi, -lo
    return "better" if lo > 0 else "worse" if hi < 0 else None


def leaderboard_html(lbt: pd.DataFrame) -> str:
    """The leaderboard as an HTML table; a paired difference whose interval excludes 0 is
    green when the defense is better than the baseline there, red when worse."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in lbt.columns)
    rows = []
    for _, r in lbt.iterrows():
        cells = []
        for c, v in r.items():
            verdict = diff_verdict(str(v), lower_is_better=str(c).startswith("ΔBA")) if str(c).startswith("Δ") else None
            cls = f" class='{verdict}'" if verdict else ""
            cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='leaderboard'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def selection_table(paths: list[Path]) -> pd.DataFrame:
    """The chosen values of a worst-case-tuned sweep (``selection.json``), one row per defense."""
    from .select import params_text, read_selection

    rows = []
    for doc in read_selection(paths):
        for c in doc.get("chosen", []):
            rows.append(
                {
                    **({"setting": c["setting"]} if c.get("setting") else {}),
                    "defense": c["defense"],
                    "chosen": params_text(c.get("params")),
                    f"worst validation {doc.get('objective', 'main_acc')} (%)": "-"
                    if c.get("score") is None
                    else f"{100 * c['score']:.1f} ({c.get('worst_attack')})",
                    "candidates (worst case, %)": "; ".join(
                        f"{params_text(k.get('params'))}: "
                        + ("-" if k.get("score") is None else f"{100 * k['score']:.1f}")
                        for k in c.get("candidates", [])
                    ),
                    "tuning seeds": ", ".join(map(str, doc.get("seeds") or [])) or "the study's",
                    "validation share": doc.get("validation_frac"),
                }
            )
    return pd.DataFrame(rows)


def build_report(
    paths: Iterable[str | Path], out: str | Path, title: str = "fedarena report", baseline: Optional[str] = "fedavg"
) -> dict[str, Any]:
    """Write the report of the runs at or under ``paths`` into ``out``; returns its parts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, skipped = readable_runs(find_runs(paths))
    if not runs:
        from ..errors import ConfigError

        raise ConfigError(
            "DIR",
            "holds no readable run folders (config.yaml + summary.json)"
            + (f"; {len(skipped)} damaged, the first: {skipped[0][1]}" if skipped else ""),
            "a sweep folder or run folders",
        )
    table = prepare(results_table(runs))
    md = [f"# {title}", "", f"{len(table)} runs; status: {table['status'].value_counts().to_dict()}.", ""]
    page: list[str] = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(table)} runs; status: {html.escape(str(table['status'].value_counts().to_dict()))}.</p>",
    ]
    if skipped:
        md += [f"{len(skipped)} run(s) skipped, their files are damaged:", ""] + [f"- {r}" for _, r in skipped] + [""]
        page += [
            f"<p>{len(skipped)} run(s) skipped, their files are damaged:</p><ul>"
            + "".join(f"<li>{html.escape(r)}</li>" for _, r in skipped)
            + "</ul>"
        ]
    parts: dict[str, Any] = {"table": table, "settings": [], "skipped": skipped}
    tuned = selection_table([Path(p) for p in paths])
    parts["selection"] = tuned
    if len(tuned):
        md += ["## Worst-case tuning", "", _md_table(tuned), "", SELECTION_LEGEND, ""]
        page += [
            "<h2>Worst-case tuning</h2>",
            tuned.to_html(index=False, border=0),
            f"<p class='legend'>{html.escape(SELECTION_LEGEND)}</p>",
        ]
    for i, (name, t) in enumerate(settings(table)):
        sfx = f"_{i + 1}" if name else ""
        lb, c, det = leaderboard(t, baseline), cells(t), detection(t)
        lb.to_csv(out / f"leaderboard{sfx}.csv", index=False)
        c.to_csv(out / f"cells{sfx}.csv", index=False)
        det.to_csv(out / f"detection{sfx}.csv", index=False)
        figs = [
            heatmap(c, "ma", "final main accuracy (%), mean over seeds", out / f"heatmap_main_acc{sfx}.png", "viridis"),
            heatmap(
                c.dropna(subset=["ba"]),
                "ba",
                "final backdoor accuracy (%), mean over seeds",
                out / f"heatmap_backdoor_acc{sfx}.png",
                "Reds",
            ),
            curves(t, out / f"curves{sfx}.png"),
        ]
        figs = [f for f in figs if f is not None]
        lbt = leaderboard_text(lb)
        parts["settings"].append(
            {"name": name, "leaderboard": lb, "leaderboard_text": lbt, "cells": c, "detection": det, "figures": figs}
        )
        head = f"## Setting: {name}" if name else "## Results"
        md += [head, "", "### Leaderboard", "", _md_table(lbt), "", LEGEND, ""]
        md += ["### Attack x defense", "", _md_table(_cells_text(c)), ""]
        md += [
            "### Detection",
            "",
            _md_table(det) if len(det) else "(none)",
            "",
            "A client is flagged when the defense rejected it or gave it weight 0; pooled over the defense's runs; "
            "`fpr_no_attack_rounds`: false-positive rate on rounds without attackers.",
            "",
        ]
        md += [f"![{f.stem}]({f.name})" for f in figs] + [""]
        page += [
            f"<h2>{html.escape(head[3:])}</h2>",
            "<h3>Leaderboard</h3>",
            leaderboard_html(lbt),
            f"<p class='legend'>{html.escape(LEGEND)}</p>",
            "<h3>Attack x defense</h3>",
            _cells_text(c).to_html(index=False, border=0),
            "<h3>Detection</h3>",
            det.to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}", na_rep="-") if len(det) else "",
            "<p class='legend'>A client is flagged when the defense rejected it or gave it weight 0; pooled over "
            "the defense's runs; fpr_no_attack_rounds: false-positive rate on rounds without attackers.</p>",
        ]
        page += [
            f"<figure><img alt='{f.stem}' src='data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}'>"
            f"<figcaption>{f.stem}</figcaption></figure>"
            for f in figs
        ]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(HTML.format(title=html.escape(title), body="\n".join(page)))
    return parts


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 14px; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
table.leaderboard td:nth-child(2), table.leaderboard th:nth-child(2) {{ text-align: left; }}
td.better {{ color: #1a7f37; font-weight: 600; }} td.worse {{ color: #c62828; font-weight: 600; }}
.legend {{ color: #555; font-size: 13px; max-width: 60em; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #777; font-size: 12px; }}
</style></head>
<body>
{body}
</body></html>
"""
