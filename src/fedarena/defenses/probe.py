"""The model as a defense may query it: :class:`ModelProbe`.

Some server-side rules look at what the clients' models *compute*, not only at their
parameters: DeepSight's division differences (outputs on random inputs), FLARE's
penultimate-layer representations. The engine puts a probe of the run's model in
``RoundContext.extras["probe"]``; a rule calls it with flat parameter vectors (``ctx.
global_params``, ``ctx.global_params + U[i]``). Inputs are raw (as stored, e.g. pixels in
[0, 1]); the probe applies the dataset's normalisation, as the engine does before every
forward pass. The model runs in eval mode without gradients.

``root_x``: raw inputs of the server's held-out root dataset when the rule asked for one
(``Aggregator.root_size > 0``), else None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.func import functional_call

from ..core.layout import ParamLayout
from ..errors import ConfigError


@dataclass
class ModelProbe:
    model: torch.nn.Module
    buffers: dict[str, torch.Tensor]
    layout: ParamLayout
    input_shape: tuple[int, ...]
    num_classes: int
    prepare: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    root_x: Optional[torch.Tensor] = None

    def _run(self, flat: torch.Tensor, x: torch.Tensor, features: bool) -> torch.Tensor:
        params = self.layout.unflatten(flat.to(x.device))
        xb = x if self.prepare is None else self.prepare(x)
        captured: list[torch.Tensor] = []
        handle = None
        if features:
            prefix = self.layout.last_layer()[0].rsplit(".", 1)[0]
            module = self.model.get_submodule(prefix)
            handle = module.register_forward_pre_hook(lambda m, inp: captured.append(inp[0].flatten(1)))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = functional_call(self.model, (params, self.buffers), (xb,))
        finally:
            self.model.train(was_training)
            if handle is not None:
                handle.remove()
        return captured[-1] if features else logits

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(N, classes)`` outputs of the model with flat parameters ``flat`` on raw ``x``."""
        return self._run(flat, x, False)

    def features(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(N, p)`` penultimate-layer representations: the input of the model's last layer."""
        return self._run(flat, x, True)


def probe_of(ctx, rule: str) -> ModelProbe:
    """The round's :class:`ModelProbe`, or one clear error naming the rule that needs it."""
    probe = ctx.extras.get("probe") if ctx.extras else None
    if probe is None:
        raise ConfigError(
            "defense.name",
            f"{rule!r} queries the clients' models and needs the engine's model probe "
            "(RoundContext.extras['probe']), which this runner does not provide",
            "a fedarena simulation run",
        )
    return probe
