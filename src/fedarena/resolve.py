"""The fully resolved configuration of a run, and the short description a summary carries.

``config.yaml`` holds what the run actually used: the config the user wrote plus every
default of the chosen attack, defense (aggregator, active stages and client-side
defense), model and synthetic dataset, the resolved model name, the cohort size and the
declared number of attackers. Loading it again gives the same run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import ATTACKS, CLIENT_DEFENSES, DATASETS, DEFENSES, MODELS, STAGES

if TYPE_CHECKING:  # pragma: no cover - config imports this module to write config.yaml
    from .config import ExperimentConfig


def _plain(v: Any) -> Any:
    """YAML/JSON-friendly values (tuples -> lists)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _defaults(registry, name: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: _plain(p.default) for k, p in registry.params(name).items() if not p.required and k not in skip}


def attack_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """The chosen attack's parameters: its defaults, overridden by the config."""
    return {**_defaults(ATTACKS, cfg.attack.name), **_plain(cfg.attack.params())}


def client_defense_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """The parameters of the chosen client-side defense (``defense.client``): its
    defaults, overridden by the config. The keys of other client-side defenses are not
    its (at their defaults, the config check lets them pass: they are dropped here)."""
    name = cfg.defense.client
    mine = CLIENT_DEFENSES.params(name)
    given = CLIENT_DEFENSES.validate(name, {k: v for k, v in cfg.defense.params().items() if k in mine})
    return {**_defaults(CLIENT_DEFENSES, name), **_plain(given)}


def defense_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """The aggregator's parameters and those of every active stage (defaults filled in);
    not the client-side defense's (:func:`client_defense_params`)."""
    client_keys = CLIENT_DEFENSES.owners()
    given = {k: v for k, v in _plain(cfg.defense.params()).items() if k not in client_keys}
    out = _defaults(DEFENSES, cfg.defense.name, skip=("weighted",))
    for trigger in STAGES.names():
        if given.get(trigger):
            out.update(_defaults(STAGES, trigger))
    out.update(given)
    return out


def resolved_config(cfg: ExperimentConfig) -> dict[str, Any]:
    tree = cfg.model_dump(mode="json")
    tree["model"] = {**_defaults(MODELS, cfg.model_name), **tree["model"], "name": cfg.model_name}
    if cfg.data.dataset == "synthetic":
        tree["data"]["synthetic"] = {
            **_defaults(DATASETS, "synthetic", skip=("root", "download", "verify")),
            **tree["data"]["synthetic"],
        }
    tree["fl"]["clients_per_round"] = cfg.cohort_size
    # every declared key of the two sections (attack.optimize, defense.client, ...), then the plugin's own
    common = {k: tree["attack"][k] for k in type(cfg.attack).model_fields}
    tree["attack"] = {**common, **attack_params(cfg)}
    declared = {k: tree["defense"][k] for k in type(cfg.defense).model_fields}
    tree["defense"] = {**declared, "f": cfg.declared_f, **client_defense_params(cfg), **defense_params(cfg)}
    return tree


def describe(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a summary names: dataset, model, attack and defense with their parameters."""
    return {
        "dataset": cfg.data.dataset,
        "partition": cfg.data.partition,
        "model": cfg.model_name,
        "attack": {"name": cfg.attack.name, "num_malicious": cfg.attack.num_malicious, **attack_params(cfg)},
        "defense": {"name": cfg.defense.name, "f": cfg.declared_f, **defense_params(cfg)},
    }
