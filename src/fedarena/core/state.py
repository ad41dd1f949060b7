"""State that lives across rounds, as plain containers of tensors (for checkpoints).

:class:`Stateful` gives a component (aggregator, stage, attack) ``state_dict()`` and
``load_state_dict()``. The default captures every instance attribute that is a tensor,
a NumPy array, a scalar, ``None``, a torch or NumPy random generator, a nested
:class:`Stateful`, or a dict/list/tuple of those; anything else (datasets, layouts,
callables) is rebuilt from the config when the run is set up again, so it is skipped.
Centered Clipping's centre, FoolsGold's history or an attack's previous perturbation are
therefore saved without code of their own. A component whose state needs more (or that
holds large scratch buffers) overrides the two methods or lists names in
``state_exclude``.

:func:`encode` / :func:`decode` turn such values into what
``torch.load(weights_only=True)`` accepts (tensors, plain containers, numbers, strings):
NumPy arrays and generator states are wrapped in tagged dicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_SKIP = object()
_SCALARS = (bool, int, float, str, type(None))


class Stateful:
    """Mixin: ``state_dict()`` / ``load_state_dict()`` over plain instance attributes."""

    #: attribute names never saved (scratch buffers, caches)
    state_exclude: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        out = {}
        for name, value in vars(self).items():
            if name in self.state_exclude:
                continue
            enc = encode(value)
            if enc is not _SKIP:
                out[name] = enc
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            current = getattr(self, name, None)
            if isinstance(value, dict) and "__stateful__" in value and isinstance(current, Stateful):
                current.load_state_dict(value["__stateful__"])
            else:
                setattr(self, name, decode(value))


def encode(value: Any) -> Any:
    """A copy of ``value`` made of tensors and plain containers, or ``_SKIP``."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return _SKIP
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, Stateful):
        return {"__stateful__": value.state_dict()}
    if isinstance(value, torch.Generator):
        return {"__torch_generator__": value.get_state(), "device": str(value.device)}
    if isinstance(value, np.random.Generator):
        return {"__numpy_generator__": value.bit_generator.state}
    if isinstance(value, dict):
        items = {k: encode(v) for k, v in value.items()}
        if any(v is _SKIP for v in items.values()) or not all(isinstance(k, _SCALARS) for k in items):
            return _SKIP
        return items
    if isinstance(value, (list, tuple)):
        items = [encode(v) for v in value]
        if any(v is _SKIP for v in items):
            return _SKIP
        return items if isinstance(value, list) else {"__tuple__": items}
    return _SKIP


def decode(value: Any) -> Any:
    """Inverse of :func:`encode` (a nested ``__stateful__`` is returned as its dict)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy().copy()
        if "__torch_generator__" in value:
            g = torch.Generator(device=value["device"])
            g.set_state(value["__torch_generator__"])
            return g
        if "__numpy_generator__" in value:
            state = value["__numpy_generator__"]
            bg = getattr(np.random, state["bit_generator"])()
            bg.state = state
            return np.random.Generator(bg)
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
