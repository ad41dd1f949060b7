"""The server-side interfaces: :class:`Aggregator`, pre/post stages and the pipeline.

An aggregator maps the round's update matrix ``U`` (k x d, one row per client) to one
update vector. Stages that compose with any aggregator (norm clipping, bucketing,
noise, RLR, ...) are :class:`PreStage` (``U -> U``) or :class:`PostStage`
(``aggregate -> aggregate``). :class:`DefensePipeline` chains them, Optax style::

    pipeline = DefensePipeline([NormClip(2.0)], Median(), [GaussianNoise(0.01)])
    result = pipeline(U, ctx)

State that lives across rounds (Centered Clipping's center, FoolsGold's history) lives
in the aggregator object; ``reset()`` clears it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..core.layout import ParamLayout
from ..errors import ConfigError
from ..core.recipe import TrainRecipe
from ..core.state import Stateful


def check_f(name: str, n: int, f: int, a: int, b: int) -> None:
    """Raise the one-line error when ``n < a*f + b``: a rule that needs ``n >= a f + b``
    rows for ``f`` attackers (Krum and Multi-Krum ``2f + 3``, Bulyan ``4f + 3``)."""
    if n < a * f + b:
        top = (n - b) // a
        raise ConfigError(
            "defense.f",
            f"{name} needs n >= {a}f+{b} rows (n={n}, f={f})",
            f"0..{top}" if top >= 0 else f"none for n={n}",
        )


@dataclass
class RoundContext:
    """What the server knows in a round (never the true set of malicious clients).

    Attributes:
        round: 0-based round index.
        layout: names of the columns of ``U``.
        client_ids: ``(k,)`` global ids of the clients whose rows are in ``U``.
        num_samples: ``(k,)`` local dataset sizes the clients report.
        f: the number of attackers the rule assumes (``defense.f``), declared, never the true count.
        global_params: flat parameters of the model the clients started from.
        prev_update: the previous round's aggregate (``None`` in round 0).
        generator: seeded torch generator for randomized rules (bucketing, noise).
        server_lr: the server learning rate in force this round.
        root_gradient: for rules with ``root_size > 0``: a callable ``flat_params -> (d,)``
            that trains the benign recipe on the server's root dataset from those
            parameters and returns the update (FLTrust-style rules).
        extras: free-form per-round information for custom rules.
    """

    round: int
    layout: ParamLayout
    client_ids: torch.Tensor
    num_samples: torch.Tensor
    f: int = 0
    global_params: Optional[torch.Tensor] = None
    prev_update: Optional[torch.Tensor] = None
    generator: Optional[torch.Generator] = None
    server_lr: float = 1.0
    root_gradient: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.client_ids.numel())


@dataclass
class Aggregate:
    """An aggregator's output.

    ``weights``: per-row weight used (``(k,)`` float), or an accept mask (``(k,)`` bool),
    or ``None`` when the rule has no per-client decision (e.g. the median).
    ``info``: diagnostics for the logs (floats, small tensors).
    """

    update: torch.Tensor
    weights: Optional[torch.Tensor] = None
    info: dict[str, Any] = field(default_factory=dict)


class Aggregator(Stateful):
    """Base class: override :meth:`aggregate`. Keyword ``__init__`` args are config params.

    State kept across rounds is saved in checkpoints by :class:`~fedarena.core.state.Stateful`.
    """

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        return self.aggregate(U, ctx)

    def aggregate(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:  # pragma: no cover
        raise NotImplementedError

    def validate(self, n: int, f: int) -> None:
        """Raise :class:`~fedarena.errors.ConfigError` if ``n`` rows with ``f`` declared
        attackers is impossible for this rule. Called once before the run starts."""

    def reset(self) -> None:
        """Forget state kept across rounds."""

    def client_recipe(self, recipe: TrainRecipe) -> TrainRecipe:
        """Client-side part of the rule, if any (see :meth:`Stage.client_recipe`)."""
        return recipe

    #: size of the server's root dataset this rule needs (FLTrust-style); 0: none.
    #: When > 0 the engine holds out that many training samples (the defense stream
    #: picks them) and fills ``ctx.root_gradient``.
    root_size: int = 0


class Stage(Stateful):
    """Common base of pipeline stages (state saved in checkpoints, scratch buffers excepted)."""

    state_exclude = ("_buf",)

    #: position in the pipeline among stages of the same kind (lower runs first)
    order: int = 50

    def client_recipe(self, recipe: TrainRecipe) -> TrainRecipe:
        """Client-side part of the defense: change every client's local recipe (e.g.
        projected gradient descent onto an L2 ball). Default: unchanged."""
        return recipe

    def client_upload(self, U: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Client-side transform of the honest rows before upload (local DP noise), applied
        by the engine before attackers craft theirs. Default: unchanged."""
        return U

    def reset(self) -> None:
        pass


class PreStage(Stage):
    """``U -> U`` before aggregation (clipping, bucketing, mixing)."""

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class PostStage(Stage):
    """``aggregate -> aggregate`` after aggregation (noise, robust learning rate).

    Sees the (pre-processed) ``U`` too, e.g. for sign votes.
    """

    def __call__(self, agg: Aggregate, U: torch.Tensor, ctx: RoundContext) -> Aggregate:  # pragma: no cover
        raise NotImplementedError


def nonfinite_rows(U: torch.Tensor) -> torch.Tensor:
    """``(k,)`` bool: rows holding a NaN or an Inf."""
    return ~torch.isfinite(U).all(dim=1)


def weights_per_client(weights: Optional[torch.Tensor], ctx: RoundContext) -> Optional[torch.Tensor]:
    """Per-client view of per-row weights when a pre-stage merged clients into rows
    (``ctx.extras["row_of_client"]``, set by bucketing): a client gets its row's accept
    decision, or its row's weight divided by the row's size."""
    rows = ctx.extras.get("row_of_client") if ctx.extras else None
    if weights is None or rows is None or weights.shape[0] == rows.shape[0]:
        return weights
    rows = rows.to(weights.device)
    if weights.dtype == torch.bool:
        return weights[rows]
    size = torch.bincount(rows, minlength=weights.shape[0]).to(weights.dtype).clamp_min(1)
    return (weights / size)[rows]


class DefensePipeline(Stateful):
    """pre-stages -> aggregator -> post-stages."""

    def __init__(self, pre: list[PreStage], aggregator: Aggregator, post: list[PostStage]):
        self.pre, self.aggregator, self.post = list(pre), aggregator, list(post)

    def __call__(self, U: torch.Tensor, ctx: RoundContext) -> Aggregate:
        for stage in self.pre:
            U = stage(U, ctx)
        agg = self.aggregator(U, ctx)
        for stage in self.post:
            agg = stage(agg, U, ctx)
        agg.weights = weights_per_client(agg.weights, ctx)
        return agg

    def validate(self, n: int, f: int) -> None:
        """Check the aggregator against the rows it will see (after e.g. bucketing)."""
        rows = n
        for stage in self.pre:
            rows_out = getattr(stage, "rows_out", None)
            if rows_out is not None:
                rows = rows_out(rows)
        try:
            self.aggregator.validate(rows, f)
        except ConfigError as e:
            if rows == n:
                raise
            raise ConfigError(e.field, f"{e.problem} (after bucketing: {n} clients -> {rows} rows)", e.valid) from None

    def client_recipe(self, recipe: TrainRecipe) -> TrainRecipe:
        """The benign clients' recipe after every stage's client-side part."""
        for s in (*self.pre, self.aggregator, *self.post):
            recipe = s.client_recipe(recipe)
        return recipe

    def client_upload(self, U: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The honest rows as the clients upload them, after every stage's client-side transform."""
        for s in (*self.pre, *self.post):
            U = s.client_upload(U, generator)
        return U

    def reset(self) -> None:
        for s in (*self.pre, self.aggregator, *self.post):
            s.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"stages": [s.state_dict() for s in (*self.pre, self.aggregator, *self.post)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, st in zip((*self.pre, self.aggregator, *self.post), state["stages"], strict=True):
            s.load_state_dict(st)
