"""The run config of pyproject.toml -> a fedarena experiment (validated like `fedarena run --set`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

from fedarena.config import load_config
from fedarena.integrations.flower import FlowerTask


def overrides(run_config: Mapping[str, object]) -> list[str]:
    """The fedarena ``--set`` overrides that the run config stands for."""
    c = run_config
    sets = [
        f"data.dataset={c['dataset']}",
        f"data.partition={c['partition']}",
        "data.download=false",
        f"fl.num_clients={c['num-clients']}",
        f"fl.rounds={c['num-server-rounds']}",
        f"fl.local_epochs={c['local-epochs']}",
        f"fl.batch_size={c['batch-size']}",
        f"fl.lr={c['lr']}",
        f"seed={c['seed']}",
        f"defense.name={c['defense']}",
        f"attack.name={c['attack']}",
    ]
    malicious = [p for p in str(c["malicious"]).replace(",", " ").split() if p]
    sets.append(f"attack.num_malicious={len(malicious)}")
    sets += [f"defense.{kv}" for kv in str(c["defense-params"]).split()]
    sets += [f"attack.{kv}" for kv in str(c["attack-params"]).split()]
    return sets


@lru_cache(maxsize=4)
def _task(items: tuple) -> FlowerTask:
    run_config = dict(items)
    malicious = [int(p) for p in str(run_config["malicious"]).replace(",", " ").split() if p]
    return FlowerTask(load_config(None, overrides(run_config)), malicious=malicious)


def task_for(run_config: Mapping[str, object]) -> FlowerTask:
    """One FlowerTask per run config and process (data, partition and poisoning are built once)."""
    return _task(tuple(sorted(run_config.items())))
