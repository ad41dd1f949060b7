"""Flat parameter vectors and the layout that names their column slices.

A round's updates live in one ``(k, d)`` matrix ``U``. :class:`ParamLayout` maps each
named parameter (``"fc1.weight"``) to its column slice and shape, so layer-wise rules
(last-layer histories, per-layer masks, metrics) work on ``U`` without copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import torch


@dataclass(frozen=True)
class ParamLayout:
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]  # start column of each parameter
    #: the model's own "layers" (parameter-name prefixes, e.g. ``("features.0", "classifier.0")``)
    #: for layer-wise metrics; ``None``: one layer per top-level parameterised child module
    groups: Optional[tuple[str, ...]] = None

    @classmethod
    def from_params(cls, params: Mapping[str, torch.Tensor], groups: Optional[Sequence[str]] = None) -> "ParamLayout":
        names, shapes, offsets, off = [], [], [], 0
        for name, p in params.items():
            names.append(name)
            shapes.append(torch.Size(p.shape))
            offsets.append(off)
            off += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), tuple(groups) if groups else None)

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> "ParamLayout":
        return cls.from_params(dict(module.named_parameters()), getattr(module, "layer_groups", None))

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

    def layer_groups(self) -> dict[str, list[str]]:
        """Layer name -> its parameter names, in model order. A model declares its layers
        with a ``layer_groups`` attribute (name prefixes; a parameter belongs to the longest
        matching prefix); otherwise each top-level child module that holds parameters is
        one layer (ResNet-18: ``conv1, bn1, layer1..layer4, fc``)."""
        out: dict[str, list[str]] = {}
        for n in self.names:
            if self.groups:
                hits = [g for g in self.groups if n == g or n.startswith(g + ".")]
                key = max(hits, key=len) if hits else n.split(".", 1)[0]
            else:
                key = n.split(".", 1)[0]
            out.setdefault(key, []).append(n)
        return out

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
            n: flat[..., o : o + s.numel()].reshape(*lead, *s) for n, s, o in zip(self.names, self.shapes, self.offsets)
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
