"""Checkpoints: everything the next round of a run depends on, saved between rounds.

A checkpoint holds the simulation's :attr:`~fedarena.run.simulation.Simulation.STATE_ATTRS`
(the round, parameters and buffers, fedsgd client momenta, the previous aggregate), the
state of every :class:`~fedarena.core.state.Stateful` component the simulation holds (the
defense pipeline's aggregator and stages, the attack), the global RNG states, and
whatever the caller adds (the byte sizes of the record files). Per-round random streams
are derived from the run seed and the round (:mod:`fedarena.core.seeds`), so they need
no saving; set-up (data, partition, poisoned data, model) is rebuilt from the config.

Files are written with ``torch.save`` to a temporary name and renamed, and read with
``torch.load(weights_only=True)``: only tensors and plain containers, no code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.state import Stateful, decode, encode
from ..errors import DamagedFileError

FORMAT = 1


def simulation_state(sim: Any) -> dict[str, Any]:
    """The state of ``sim`` after its last finished round, as plain containers."""
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": encode(np.random.get_state()),
        "python": encode(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": FORMAT,
        "attrs": {name: encode(getattr(sim, name)) for name in sim.STATE_ATTRS},
        "components": {name: v.state_dict() for name, v in vars(sim).items() if isinstance(v, Stateful)},
        "rng": rng,
    }


def load_simulation_state(sim: Any, state: dict[str, Any]) -> None:
    """Put ``sim`` (freshly set up from the same config) where the checkpoint left it."""
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {FORMAT}")
    for name, value in state["attrs"].items():
        setattr(sim, name, _to_device(decode(value), sim.device))
    for name, st in state["components"].items():
        getattr(sim, name).load_state_dict(st)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(decode(rng["numpy"]))
    random.setstate(decode(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write atomically: a reader sees the previous checkpoint or this one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


#: what a damaged checkpoint's message suggests
RESTART = "delete it to play the run again from round 0"


def load_checkpoint(path: str | Path, keys: tuple[str, ...] = ("simulation",)) -> dict[str, Any]:
    """The saved state; tensors saved on a GPU load on the CPU when CUDA is unavailable
    (a run with ``fl.device=auto`` continued on a machine without one).

    A file that is empty, not a checkpoint, or a checkpoint without ``keys`` raises
    :class:`~fedarena.errors.DamagedFileError` naming it."""
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location=None if torch.cuda.is_available() else "cpu")
    except Exception as e:  # torch raises many types for foreign bytes: pickle, zip, EOF, runtime errors
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise DamagedFileError(path, f"is not a readable checkpoint ({type(e).__name__}: {first})", RESTART) from None
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise DamagedFileError(
            path, f"is not a fedarena checkpoint (expected a mapping with {', '.join(keys)})", RESTART
        )
    return state
