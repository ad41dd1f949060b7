"""A model that starts from a benign federated pre-training run (``model.name=fl-pretrained``).

It lives in ``run/`` (not ``models/``) because building it plays a simulation; the model
registry loads it from here (``MODELS`` discovers ``fedarena.models`` and ``fedarena.run``).

The AutoAdapt paper (Krauß et al., NDSS 2024, Sect. V-A / V-C) attacks a global model that
has already been trained benignly: FL round 0 from pre-trained weights, and rounds 20 and
50 of a benign run. ``fl-pretrained`` gives a run that starting point::

    model:
      name: fl-pretrained
      arch: cnn                 # any registered model
      round: 20                 # start from the global model after this many benign rounds
      pretrain:                 # the benign run (a config tree; its model is ``arch``,
        seed: 42                # attack none, defense fedavg are set here)
        data: {dataset: mnist, partition: dominant-class, q: 0.5}
        fl: {num_clients: 20, rounds: 50, local_epochs: 2, batch_size: 64, lr: 0.01}

The benign run is played once, by the first run that needs it, and its global model after
every round listed in ``snapshots`` (default: ``round`` only) is kept in a cache file named
by the hash of the resolved pre-training config (``$FEDARENA_CACHE/pretrained/``, default
``~/.cache/fedarena/pretrained/``); later runs load it. The global random state is saved and
restored around the pre-training, so a run's own randomness does not depend on whether the
cache already existed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import MODELS


def cache_dir() -> Path:
    return Path(os.environ.get("FEDARENA_CACHE", "~/.cache/fedarena")).expanduser() / "pretrained"


def pretrain_tree(arch: str, arch_params: dict[str, Any], pretrain: dict[str, Any]) -> dict[str, Any]:
    """The benign run's config tree: ``pretrain`` with the model, attack and defense fixed."""
    tree = copy.deepcopy(pretrain)
    tree["model"] = {"name": arch, **arch_params}
    tree["attack"] = {"name": "none"}
    tree["defense"] = {"name": "fedavg"}
    tree.setdefault("eval", {})["every"] = int(tree.get("fl", {}).get("rounds", 1))
    return tree


def snapshots_of(
    arch: str, arch_params: dict[str, Any], pretrain: dict[str, Any], snapshots: list[int]
) -> dict[int, dict[str, dict[str, torch.Tensor]]]:
    """Round -> ``{"params": ..., "buffers": ...}`` of the benign run's global model after
    that many rounds (from the cache, else played now and cached)."""
    from ..config import load_config
    from .simulation import Simulation

    cfg = load_config(None, base=pretrain_tree(arch, arch_params, pretrain))
    resolved = cfg.model_dump(mode="json")
    resolved["data"].pop("root", None)  # where the data lives does not change the model
    key = hashlib.sha256(
        json.dumps({"cfg": resolved, "snapshots": sorted(snapshots)}, sort_keys=True).encode()
    ).hexdigest()[:20]
    path = cache_dir() / f"{arch}-{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    rounds = cfg.fl.rounds
    bad = [r for r in snapshots if not 0 <= r <= rounds]
    if bad:
        raise ConfigError(
            "model.round",
            f"{bad[0]} is outside the pre-training run's 0..{rounds} rounds",
            f"0..{rounds} (model.pretrain.fl.rounds)",
        )
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    try:
        sim = Simulation(cfg)
        out: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        for t in range(max(snapshots) + 1):
            if t in snapshots:
                out[t] = {
                    "params": {n: v.detach().cpu().clone() for n, v in sim.params.items()},
                    "buffers": {n: v.detach().cpu().clone() for n, v in sim.buffers.items()},
                }
            if t < max(snapshots):
                sim.run_round(t)
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out


@MODELS.register("fl-pretrained")
def fl_pretrained(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    arch: str = "cnn",
    round: int = 20,
    pretrain: Optional[dict[str, Any]] = None,
    snapshots: Optional[list[int]] = None,
    arch_params: Optional[dict[str, Any]] = None,
) -> torch.nn.Module:
    """``arch`` initialised with the global model of a benign FL run after ``round`` rounds
    (the run ``pretrain`` describes; played once and cached, see the module docstring)."""
    if not pretrain:
        raise ConfigError(
            "model.pretrain",
            "is required: the benign run's config (data, fl, seed)",
            "a config tree, e.g. {fl: {rounds: 20}}",
        )
    if arch == "fl-pretrained":
        raise ConfigError("model.arch", "cannot be fl-pretrained itself", "a registered model, e.g. cnn")
    snaps = sorted(set(snapshots or []) | {int(round)})
    arch_params = dict(arch_params or {})
    net = MODELS.get(arch)(input_shape, num_classes, **arch_params)
    state = snapshots_of(arch, arch_params, pretrain, snaps)[int(round)]
    net.load_state_dict({**state["params"], **state["buffers"]})
    return net
