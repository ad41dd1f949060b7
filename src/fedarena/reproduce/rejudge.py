"""Re-judge a committed reproduction report with today's claim definitions, from the
values its run measured (for reports whose run folders were not kept).

``python -m fedarena.reproduce.rejudge NAME FOLDER`` reads ``FOLDER/claims.json``,
``claims.md`` and ``results.csv`` of a finished ``fedarena reproduce NAME`` and rewrites
``claims.md`` / ``claims.json``: every claim of :meth:`Paper.claims` takes the value the
committed run measured for it (the same id, or an :data:`ADAPT` function that derives it
from the committed values when the claim now reads another schedule or needs more of
them) and today's rule. A claim whose value the committed run did not measure is
``error`` ("not measured by the committed run"): rerun the reproduction. The committed
tables and figures are kept. Nothing is re-measured.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from ..registry import PAPERS
from ..run.records import FINISHED
from .framework import ClaimResult, Report, claims_sections, fmt, write_claims_json

NOT_MEASURED = "not measured by the committed run (the claim is newer than the run): rerun the reproduction"


def _nums(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", str(text))]


def _t1(old: dict, c: str) -> tuple:
    return tuple(_nums(old[f"T1.{c}"]))


def _md_runs(md: str, run: str, col: int) -> float:
    """A number from the committed claims.md's per-run table (``| run | ... |``)."""
    for line in md.splitlines():
        cells = [x.strip() for x in line.strip().strip("|").split("|")]
        if cells and cells[0] == run:
            return float(cells[col])
    raise KeyError(run)


#: paper -> claim id -> f(committed values by id, committed claims.md) -> today's value
ADAPT: dict[str, dict[str, Callable[[dict, str], Any]]] = {
    "leadfl": {
        # the seed spread is not in the committed report: judged with spread 0, which can only make a pass easier,
        # so only a fail is kept (see SPREAD_UNKNOWN)
        "L3": lambda o, md: (o["L15"]["none"], o["L15"]["leadfl"], 0.0),
        "L3-periodic": lambda o, md: {srv: (a, b, 0.0) for srv, (a, b) in o["L3"].items()},
        "L5": lambda o, md: (_t1(o, "none")[0], _t1(o, "leadfl")[0]),
        "L5-periodic": lambda o, md: tuple(o["L5"]),
        "L8": lambda o, md: tuple(o["L8r"]),
        "L8-periodic": lambda o, md: tuple(o["L8"]),
        "L9": lambda o, md: tuple(_t1(o, c)[0] for c in ("leadfl", "ldp", "fl-wbc")),
        "L9-periodic": lambda o, md: tuple(o["L9"]),
        "L11": lambda o, md: {c: o["L11"][f"mk/{c}"] for c in ("none", "ldp", "fl-wbc", "leadfl")},
        "L12": lambda o, md: {
            "leadfl-a3": tuple(o["L12"]["leadfl-a3"]),
            "leadfl": tuple(o["L12"]["leadfl"]),
            "none": (o["L5"][0], o["L3"]["mk"][0]),
        },
        "L13": lambda o, md: tuple(o["L13"]),
        "L13-persist": lambda o, md: o["L13"][0],
        **{f"T1.{c}": (lambda o, md, c=c: _t1(o, c)) for c in ("none", "ldp", "fl-wbc", "leadfl")},
    },
    "autoadapt": {},
    "poisonedfl": {
        "P5": lambda o, md: {
            v: (_nums(o["P5"].split(f"{v}:")[1])[1], _nums(o["P5"].split(f"{v}:")[1])[0])
            for v in ("noise0.5", "flip0.05")
        },
        "P5-partition": lambda o, md: (
            _nums(o["P5"].split("partition:")[1])[0],
            _nums(o["P5"].split("partition:")[1])[1],
            _nums(o["P5"].split("under median:")[1])[0],
            _nums(o["P5"].split("plain PFL")[1])[0],
        ),
        "P6": lambda o, md: [_nums(o["P1.mnist.median"])[2]] + list(o["P6"]),
    },
    "dpfl": {
        "D1": lambda o, md: (
            _md_runs(md, "s1/krum", 3),
            _md_runs(md, "s1/median", 3),
            _md_runs(md, "s1/krum", 2),
            _md_runs(md, "s1/median", 2),
            _md_runs(md, "s1/noattack", 2),
        ),
        "D3.best": lambda o, md: {
            k.strip(): tuple(_nums(v)) for k, v in (p.split(":") for p in o["D3.best"].split(";"))
        },
    },
    "invariant": {
        **{
            f"T1-{n}": (
                lambda o, md, n=n: (
                    tuple(_nums(o[f"T1-{n}"].split("(")[0]))
                    + (() if n in ("fedavg", "no-attack") else tuple(_nums(o["T1-fedavg"].split("(")[0])))
                )
            )
            for n in (
                "fedavg",
                "krum",
                "multi-krum",
                "multi-krum-cos",
                "trimmed-mean",
                "multi-krum-tm",
                "sign",
                "weak-dp",
                "rlr",
                "rfa",
                "sparsefed",
                "fltrust",
                "no-attack",
                "ours",
            )
        },
        "T4-mean-var": lambda o, md: tuple(o["T4-mean-var"]) + (_nums(o["T1-fedavg"].split("(")[0])[1],),
        "T10": lambda o, md: o["E8"],
    },
    "rlr": {
        "T7.val": None,  # now a gap to the no-attack run, which the committed value is not
        # now regular minus DBA (points); the committed value reads "DBA < regular"
        "T2.dba-weaker": lambda o, md: (
            o["T2.dba-weaker"]
            if isinstance(o["T2.dba-weaker"], (int, float))
            else round(_nums(o["T2.dba-weaker"])[1] - _nums(o["T2.dba-weaker"])[0], 1)
        ),
    },
    "fall-of-cc": {
        **{
            f"T2-{ds}": (lambda o, md, ds=ds: " / ".join(fmt(o[f"T2-{ds}-b{b}"]) for b in ("0", "0.9", "0.99")))
            for ds in ("fmnist", "mnist-noniid")
        },
    },
}

#: claims judged with a seed spread of 0 (a lower bound): a pass there is not a verdict
SPREAD_UNKNOWN = {("leadfl", "L3"), ("leadfl", "L3-periodic")}

#: sections of the committed claims.md that the framework writes anew
OWN_SECTIONS = ("Why claims failed", "Notes", "Not reproduced")


def rejudge(name: str, folder: str | Path) -> Report:
    folder = Path(folder)
    old = json.loads((folder / "claims.json").read_text())
    old_md = (folder / "claims.md").read_text()
    old_by_id = {c["id"]: c for c in old["claims"]}
    values = {cid: c["ours"] for cid, c in old_by_id.items()}
    paper = PAPERS.get(name)()
    adapt = ADAPT.get(name, {})
    with open(folder / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    failed = {r["run"]: f"{r['status']}: see the run's summary" for r in rows if r["status"] not in FINISHED}
    out = []
    for c in paper.claims(bool(old["quick"])):
        reason = ""
        try:
            if c.id in adapt:
                if adapt[c.id] is None:
                    raise KeyError(c.id)
                try:
                    ours = adapt[c.id](values, old_md)
                except KeyError:
                    # a report re-judged before holds the adapted value under the claim's own id (the ids it was
                    # derived from are gone)
                    prev = old_by_id.get(c.id, {})
                    if not old.get("rejudged_from_committed_values") or prev.get("verdict") in (None, "error"):
                        raise
                    ours = values[c.id]
            else:
                if c.id not in old_by_id or old_by_id[c.id]["verdict"] == "error":
                    raise KeyError(c.id)
                ours = values[c.id]
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            out.append(
                ClaimResult(c.id, c.description, c.paper, None, "error", c.rule, NOT_MEASURED, c.source, c.where)
            )
            continue
        if c.check is None:
            verdict = "info"
        else:
            try:
                verdict = "pass" if c.check(ours) else "fail"
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                # a value whose structure did not survive JSON (a checked string): the committed verdict of the
                # same rule stands
                prev = old_by_id.get(c.id, {})
                if prev.get("verdict") in ("pass", "fail") and prev.get("rule") == c.rule:
                    verdict = prev["verdict"]
                else:
                    out.append(
                        ClaimResult(
                            c.id,
                            c.description,
                            c.paper,
                            ours,
                            "error",
                            c.rule,
                            "the committed value cannot be judged by today's rule: rerun",
                            c.source,
                            c.where,
                        )
                    )
                    continue
        if verdict == "pass" and (name, c.id) in SPREAD_UNKNOWN:
            out.append(
                ClaimResult(
                    c.id,
                    c.description,
                    c.paper,
                    ours,
                    "error",
                    c.rule,
                    NOT_MEASURED + " (seed spread)",
                    c.source,
                    c.where,
                )
            )
            continue
        if verdict == "fail" and (name, c.id) in SPREAD_UNKNOWN:
            reason = (
                f"ours {fmt(ours)} does not meet '{c.rule}' even with a seed spread of 0 (the committed report "
                f"holds no spread) (paper: {fmt(c.paper)})"
            )
        elif verdict == "fail":
            reason = f"ours {fmt(ours)} does not meet '{c.rule}' (paper: {fmt(c.paper)})" + (
                f"; {c.why}" if c.why else ""
            )
        out.append(ClaimResult(c.id, c.description, c.paper, ours, verdict, c.rule, reason, c.source, c.where))
    report = Report(name, old["quick"], out, old["wall_time_s"], runs_total=len(rows), runs_failed=failed)
    _write(report, paper, folder, old_md)
    return report


def _sections(md: str) -> list[tuple[str, str]]:
    parts = re.split(r"(?m)^## ", md)
    return [(p.split("\n", 1)[0].strip(), "## " + p) for p in parts[1:]]


def _write(report: Report, paper, folder: Path, old_md: str) -> None:
    title = PAPERS.summary(report.name)
    md = [
        f"# Reproduction: {report.name}{' (quick)' if report.quick else ''}",
        "",
        title,
        "",
        f"**{report.counts_line()}**",
        "",
        f"Wall time of the committed run: {report.wall_time_s} s.",
        "",
        "Verdicts re-judged with today's claim definitions from the values the committed run measured (its run "
        "folders were not kept; nothing was re-measured). Claims newer than the run are `error` (not measured): "
        "rerun the reproduction for them.",
        "",
    ]
    if report.runs_failed:
        md += [f"**{len(report.runs_failed)} of {report.runs_total} runs did not finish.**", ""]
    md += claims_sections(report, paper)
    for head, text in _sections(old_md):
        if head not in OWN_SECTIONS:
            md += [text.rstrip(), ""]
    (folder / "claims.md").write_text("\n".join(md))
    write_claims_json(report, folder / "claims.json", rejudged_from_committed_values=True)


if __name__ == "__main__":
    rep = rejudge(sys.argv[1], sys.argv[2])
    print(rep.counts_line())
