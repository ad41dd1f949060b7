"""Build a :class:`DefensePipeline` from the flat ``defense.*`` config.

``defense.name`` picks the aggregator. Stages compose with any aggregator and switch on
through their trigger key: a stage class registered in ``STAGES`` under ``"clip"`` is
added when ``defense.clip`` is set. Its keyword parameters are read from ``defense.*``;
so are those of the client-side defense (``defense.client``, :mod:`.client`: they change
the benign clients' training, not the pipeline); the remaining keys go to the aggregator.
So RLR over the median with clipping and noise is a configuration, not new code.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..registry import CLIENT_DEFENSES, DEFENSES, STAGES, config_check
from .base import DefensePipeline, PostStage, PreStage

#: keys every defense accepts, consumed by the engine rather than a factory
COMMON_KEYS = {"name", "f", "weighted", "client"}


def build_pipeline(defense: dict[str, Any]) -> DefensePipeline:
    """``defense``: the config's defense section as a flat dict (``name`` included)."""
    pre: list[tuple[int, PreStage]] = []
    post: list[tuple[int, PostStage]] = []
    used: set[str] = set()
    for trigger in STAGES.names():
        if not defense.get(trigger):  # None, 0 or False: off
            continue
        params = STAGES.params(trigger)
        values = {k: defense[k] for k in params if k in defense and defense[k] is not None}
        stage = STAGES.build(trigger, values)
        used |= set(params)
        order = getattr(stage, "order", 50)
        (pre if isinstance(stage, PreStage) else post).append((order, stage))
        companion = getattr(stage, "companion", None)  # a stage with a post-aggregation half (dp)
        if companion is not None:
            half = companion()
            post.append((getattr(half, "order", 50), half))
    client_keys = CLIENT_DEFENSES.owners()  # the client-side defense's (checked by defenses/client.py)
    agg_values = {k: v for k, v in defense.items() if k not in used and k not in COMMON_KEYS and k not in client_keys}
    # a stage's own options are not the aggregator's; set while their stage is off, they
    # would do nothing, so they are an error (a trigger left at 0/None/False is fine)
    owners = STAGES.owners()  # each stage parameter -> the triggers of the stages that read it
    for key in list(agg_values):
        if key in owners:
            value = agg_values.pop(key)
            if key not in STAGES.names() and value not in (None, False, 0):
                switches = " or ".join(f"defense.{t}" for t in owners[key])
                raise ConfigError(
                    f"defense.{key}", f"only applies when {switches} is set", f"set {switches}, or drop this key"
                )
    name = defense.get("name", "fedavg")
    agg_kwargs = DEFENSES.validate(name, agg_values)
    if "weighted" in DEFENSES.params(name) and "weighted" in defense:
        agg_kwargs["weighted"] = defense["weighted"]
    aggregator = DEFENSES.get(name)(**agg_kwargs)
    return DefensePipeline(
        [s for _, s in sorted(pre, key=lambda t: t[0])],
        aggregator,
        [s for _, s in sorted(post, key=lambda t: t[0])],
    )


@config_check
def check_defense_config(cfg: Any) -> None:
    """The defense section builds a pipeline (names and parameters of the rule and stages)."""
    from ..config import defense_dict

    build_pipeline(defense_dict(cfg))
