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
NumPy arrays and generator states are wrapped in tagged dicts. A reference cycle
(a stage that holds its owner, which holds the stage) raises :class:`StateCycleError`
naming the attribute path, instead of recursing until the stack runs out: a component
that keeps a back-reference lists it in ``state_exclude``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_SKIP = object()
_SCALARS = (bool, int, float, str, type(None))


class StateCycleError(RuntimeError):
    """A component's state refers back to itself; the message names the attribute path."""


class Stateful:
    """Mixin: ``state_dict()`` / ``load_state_dict()`` over plain instance attributes."""

    #: attribute names never saved (scratch buffers, caches)
    state_exclude: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return _encode_stateful(self, type(self).__name__, ())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            current = getattr(self, name, None)
            if isinstance(value, dict) and "__stateful__" in value:
                if not isinstance(current, Stateful):  # built lazily: the component must build it first
                    raise TypeError(
                        f"{type(self).__name__}.{name} is {type(current).__name__} where the checkpoint "
                        f"holds a component; {type(self).__name__}.load_state_dict must build it"
                    )
                current.load_state_dict(value["__stateful__"])
            else:
                setattr(self, name, decode(value))


def _encode_stateful(obj: Stateful, path: str, active: tuple[int, ...]) -> dict[str, Any]:
    active = (*active, id(obj))
    out = {}
    for name, value in vars(obj).items():
        if name in obj.state_exclude:
            continue
        enc = _encode(value, f"{path}.{name}", active)
        if enc is not _SKIP:
            out[name] = enc
    return out


def encode(value: Any) -> Any:
    """A copy of ``value`` made of tensors and plain containers, or ``_SKIP``.

    Raises :class:`StateCycleError` when ``value`` contains itself."""
    return _encode(value, type(value).__name__, ())


def _encode(value: Any, path: str, active: tuple[int, ...]) -> Any:
    """:func:`encode` with the attribute path so far and the ids of the containers being
    encoded on that path (a value met again on its own path is a cycle)."""
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
    if isinstance(value, torch.Generator):
        return {"__torch_generator__": value.get_state(), "device": str(value.device)}
    if isinstance(value, np.random.Generator):
        return {"__numpy_generator__": value.bit_generator.state}
    if not isinstance(value, (Stateful, dict, list, tuple)):
        return _SKIP
    if id(value) in active:
        raise StateCycleError(
            f"state of {path.split('.')[0]} refers back to itself at {path}; "
            "list the back-reference in the component's state_exclude"
        )
    if isinstance(value, Stateful):
        return {"__stateful__": _encode_stateful(value, path, active)}
    active = (*active, id(value))
    if isinstance(value, dict):
        items = {k: _encode(v, f"{path}[{k!r}]", active) for k, v in value.items()}
        if any(v is _SKIP for v in items.values()) or not all(isinstance(k, _SCALARS) for k in items):
            return _SKIP
        return items
    items = [_encode(v, f"{path}[{i}]", active) for i, v in enumerate(value)]
    if any(v is _SKIP for v in items):
        return _SKIP
    return items if isinstance(value, list) else {"__tuple__": items}


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
