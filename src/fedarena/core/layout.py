"""Flat parameter vectors and the layout that names their column slices.

A round's updates live in one ``(k, d)`` matrix ``U``. :class:`ParamLayout` maps each
named parameter (``"fc1.weight"``) to its column slice and shape, so layer-wise rules
(last-layer histories, per-layer masks, metrics) work on ``U`` without copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch


@dataclass(frozen=True)
class ParamLayout:
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]  # start column of each parameter

    @classmethod
    def from_params(cls, params: Mapping[str, torch.Tensor]) -> "ParamLayout":
        names, shapes, offsets, off = [], [], [], 0
        for name, p in params.items():
            names.append(name)
            shapes.append(torch.Size(p.shape))
            offsets.append(off)
            off += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets))

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> "ParamLayout":
        return cls.from_params(dict(module.named_parameters()))

    @property
    def dim(self) -> int:
        if not self.names:
            return 0
        return self.offsets[-1] + self.shapes[-1].numel()

    def slice(self, name: str) -> slice:
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + self.shapes[i].numel())

    def slices(self) -> dict[str, slice]:
        return {n: self.slice(n) for n in self.names}

    def last_layer(self) -> list[str]:
        """Names of the final layer's parameters (the last weight and its bias)."""
        prefix = self.names[-1].rsplit(".", 1)[0]
        return [n for n in self.names if n.rsplit(".", 1)[0] == prefix]

    def columns(self, names: Iterable[str]) -> torch.Tensor:
        """Column indices (LongTensor) covering the given parameters."""
        idx = [torch.arange(self.slice(n).start, self.slice(n).stop) for n in names]
        return torch.cat(idx) if idx else torch.empty(0, dtype=torch.long)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Named parameters -> one flat vector (``(d,)``), or ``(k, d)`` if batched."""
        first = params[self.names[0]]
        batched = first.dim() == len(self.shapes[0]) + 1
        if batched:
            k = first.shape[0]
            return torch.cat([params[n].reshape(k, -1) for n in self.names], dim=1)
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`flatten`: views into ``flat`` (``(d,)`` or ``(k, d)``)."""
        lead = flat.shape[:-1]
        return {
            n: flat[..., o : o + s.numel()].reshape(*lead, *s)
            for n, s, o in zip(self.names, self.shapes, self.offsets)
        }


def flat_params(module: torch.nn.Module) -> torch.Tensor:
    """The module's parameters as one detached flat vector."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def load_flat(module: torch.nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector into the module's parameters in place."""
    off = 0
    with torch.no_grad():
        for p in module.parameters():
            n = p.numel()
            p.copy_(flat[off : off + n].view_as(p))
            off += n
