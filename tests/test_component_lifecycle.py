"""Every registered component survives a crash: generated from the registries.

For each attack, defense, defense stage, client-side defense and sampling schedule
(with the parameters it needs), a short run is played three ways:

1. uninterrupted, past two checkpoints (the reference);
2. killed after its first checkpoint, the last line of every record file torn in half
   (a write the kill interrupted), resumed, killed again after its second checkpoint, torn
   again, and resumed to the end.

The second way's records must equal the reference byte for byte. A component registered
tomorrow is covered the day it is registered; one that needs parameters to run at all
gets them in ``NEEDS`` (a missing entry fails loudly, naming the component).
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from fedarena.config import FLConfig, dump_config, load_config
from fedarena.registry import ATTACKS, CLIENT_DEFENSES, DEFENSES, STAGES
from fedarena.run.records import RECORD_FILES, read_summary
from fedarena.run.runner import execute
from fedarena.run.simulation import Simulation

ROUNDS, EVERY = 8, 3  # checkpoints after rounds 2 and 5
KILLS = (4, 7)  # the round each kill interrupts: after the first, then after the second checkpoint
BASE = [
    "data.dataset=digits",
    "fl.num_clients=10",
    "fl.clients_per_round=8",
    f"fl.rounds={ROUNDS}",
    "fl.local_epochs=1",
    "fl.batch_size=32",
    "attack.num_malicious=2",
    f"run.checkpoint_every={EVERY}",
]

#: the parameters a component needs beyond the base (none when it runs with its defaults)
NEEDS: dict[str, list[str]] = {
    "sampling:counts": ["fl.malicious_counts=[2,0,1]"],
    "sampling:periodic": ["fl.period=4", "fl.spike_rounds=1", "fl.spike_malicious=2"],
}


def _stage_values(name: str) -> list[str]:
    """Values that switch stage ``name`` on: from its trigger parameter's type."""
    if name == "dp":
        return ["local", "central"]
    ann = STAGES.params(name)[name].annotation
    base = next((a for a in typing.get_args(ann) if a is not type(None)), ann)
    return {bool: ["true"], int: ["2"], float: ["0.5"]}.get(base, [])


def _client_variants(name: str) -> list[list[str]]:
    """The settings that cover client-side defense ``name``: one per value of each of its
    ``Literal`` parameters (LeadFL's ``client_variant``), else its defaults."""
    out = [
        [f"defense.{k}={v}"]
        for k, p in CLIENT_DEFENSES.params(name).items()
        if typing.get_origin(p.annotation) is typing.Literal
        for v in typing.get_args(p.annotation)
    ]
    return out or [[]]


def cases() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for a in ATTACKS.names():
        if a != "none":
            out.append((f"attack:{a}", [f"attack.name={a}", "defense.name=median"]))
    for d in DEFENSES.names():
        out.append((f"defense:{d}", [f"defense.name={d}", "defense.f=1", "attack.name=alie"]))
    for s in STAGES.names():
        values = _stage_values(s)
        out += [(f"stage:{s}={v}", ["defense.name=median", "attack.name=alie", f"defense.{s}={v}"]) for v in values]
        if not values:
            out.append((f"stage:{s}", ["defense.name=median", "attack.name=alie"]))  # fails below: needs NEEDS
    for c in CLIENT_DEFENSES.names():
        if c == "none":
            continue
        out += [
            (
                ",".join([f"client:{c}", *(s.split("=")[1] for s in v)]),
                ["attack.name=backdoor", f"defense.client={c}", *v],
            )
            for v in _client_variants(c)
        ]
    for s in typing.get_args(FLConfig.model_fields["sampling"].annotation):
        out.append((f"sampling:{s}", ["attack.name=backdoor", f"fl.sampling={s}"]))
    return [(cid, BASE + over + NEEDS.get(cid, [])) for cid, over in out]


class _Killed(BaseException):
    """What a SIGKILL does to a run, in process: it stops between two rounds."""


_PLAN_ROUND = Simulation.plan_round


def _kill_at(monkeypatch: pytest.MonkeyPatch, round_: int) -> None:
    real = _PLAN_ROUND

    def plan_round(self, t):
        if t == round_:
            raise _Killed
        return real(self, t)

    monkeypatch.setattr(Simulation, "plan_round", plan_round)


def _tear_last_lines(folder: Path) -> None:
    """Cut each record file in the middle of its last line (no newline after it)."""
    for key in RECORD_FILES:
        path = folder / f"{key}.jsonl"
        data = path.read_bytes()
        start = data.rstrip(b"\n").rfind(b"\n") + 1
        path.write_bytes(data[: start + max(1, (len(data) - start) // 2)])


CASES = cases()


def test_the_generated_cases_cover_every_registered_component():
    ids = {cid.split(":")[1].split("=")[0] for cid, _ in CASES}
    assert set(ATTACKS.names()) - {"none"} <= ids
    assert set(DEFENSES.names()) <= ids and set(STAGES.names()) <= ids
    clients = {cid.split(":")[1].split(",")[0] for cid, _ in CASES if cid.startswith("client:")}
    assert set(CLIENT_DEFENSES.names()) - {"none"} == clients


@pytest.mark.parametrize("over", [c for _, c in CASES], ids=[cid for cid, _ in CASES])
def test_kill_tear_resume_gives_the_uninterrupted_records(tmp_path, monkeypatch, over):
    cfg = load_config(None, over)
    (tmp_path / "ref").mkdir()
    (tmp_path / "cut").mkdir()
    ref = execute(tmp_path / "ref", cfg, plot=False)
    assert ref.summary["status"] == "ok", ref.summary.get("error")
    cut = tmp_path / "cut"
    for i, kill in enumerate(KILLS):
        _kill_at(monkeypatch, kill)
        with pytest.raises(_Killed):
            execute(cut, None if i else cfg, resume=bool(i), plot=False)
        assert (cut / "checkpoint.pt").exists(), "no checkpoint before the kill"
        _tear_last_lines(cut)
    monkeypatch.undo()
    done = execute(cut, resume=True, plot=False)
    assert done.summary["status"] == ref.summary["status"]
    assert read_summary(cut)["resumed_from"] == 6
    for key in RECORD_FILES:
        assert _records(cut / f"{key}.jsonl") == _records(tmp_path / "ref" / f"{key}.jsonl"), key


def _records(path: Path) -> list[str]:
    """The file's lines, less wall-clock fields (``train_seconds``, ``seconds_to_feasible``:
    measurements of the machine, not results); byte-identical otherwise."""
    lines = path.read_text().splitlines()
    return [json.dumps(_no_clock(json.loads(x))) if "seconds" in x else x for x in lines]


def _no_clock(v):
    if isinstance(v, dict):
        return {k: _no_clock(x) for k, x in v.items() if "seconds" not in k}
    return v


@pytest.mark.parametrize("over", [c for _, c in CASES], ids=[cid for cid, _ in CASES])
def test_config_yaml_gives_the_same_run(tmp_path, over):
    """``config.yaml`` (what --resume and studies reload) keeps every key the run used."""
    cfg = load_config(None, over)
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    back = load_config(tmp_path / "c.yaml")
    assert (back.cohort_size, back.declared_f, back.model_name) == (cfg.cohort_size, cfg.declared_f, cfg.model_name)
    resolved = {"fl": {"clients_per_round"}, "defense": {"f"}, "model": {"name"}}
    for section in ("data", "fl", "attack", "defense", "eval", "run"):
        a, b = getattr(cfg, section), getattr(back, section)
        for key in type(a).model_fields:
            if key not in resolved.get(section, ()):
                assert getattr(a, key) == getattr(b, key), f"{section}.{key}"
        assert {**b.model_dump(), **(a.model_extra or {})} == b.model_dump(), section  # set extras kept
    assert dump_config(back) == dump_config(cfg)


def test_no_rule_parameter_is_a_stage_switch():
    """A defense parameter named like a stage's key (``clip``, ``noise``, ...) would switch
    that stage on for the rule instead of reaching the rule."""
    stage_keys = {k for s in STAGES.names() for k in STAGES.params(s)}
    clashes = {d: sorted(set(DEFENSES.params(d)) & stage_keys) for d in DEFENSES.names()}
    assert not {d: c for d, c in clashes.items() if c}
