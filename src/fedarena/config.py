"""The experiment configuration: pydantic models, YAML loading and dotted overrides.

Key names are part of the public interface (see the README's config reference). Every
user error becomes a :class:`~fedarena.errors.ConfigError`: one line naming the key,
the problem and the valid values.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import FLOAT32_MAX, float_problem

AUTO_MODELS = {"digits": "mlp", "synthetic": "mlp", "mnist": "cnn", "fashion-mnist": "cnn", "cifar10": "cifar-cnn"}


def _within_float32(v: Any) -> Any:
    """Every float key (and float list element) passes :func:`fedarena.registry.float_problem`."""
    problem = float_problem(v)
    if problem:
        raise ValueError(problem[0])  # the error line adds the value given
    return v


class _Float32(BaseModel):
    """A section whose float keys must fit float32 (:func:`_within_float32`)."""

    _float32 = field_validator("*")(classmethod(lambda cls, v: _within_float32(v)))


class _Strict(_Float32):
    # every float key rejects NaN and +-Inf ("must be a finite number") and values beyond float32
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: upper bounds that keep a single run's work finite (a typo such as 1e9 epochs is an error, not a hang)
MAX_LOCAL_EPOCHS = 1000
MAX_LOCAL_STEPS = 100_000
MAX_ROUNDS = 1_000_000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+=,@-]*$"
MAX_NAME_LENGTH = 100


class DataConfig(_Strict):
    dataset: str = "digits"
    root: Optional[str] = None  # default: $FEDARENA_DATA, else ~/.cache/fedarena
    download: bool = True
    verify: bool = True  # check every dataset file against its known hashes before parsing it
    partition: str = "iid"
    alpha: float = Field(0.5, gt=0)
    classes_per_client: int = Field(2, ge=1)
    q: float = Field(0.5, ge=0, le=1)
    q_rest: Literal["all", "others"] = "all"  # dominant-class: where the other samples come from
    dirichlet_variant: Literal["per-class", "per-client"] = "per-class"
    min_size: int = Field(2, ge=0)  # dirichlet: redraw until every client has this many samples
    per_class: int = Field(32, ge=1)  # per-class-sample: samples of each class per client (overlapping)
    synthetic: dict[str, Any] = Field(default_factory=dict)  # options of the synthetic generator


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "auto"


class FLConfig(_Strict):
    algorithm: Literal["fedavg", "fedsgd"] = "fedavg"
    num_clients: int = Field(20, ge=1)
    clients_per_round: Optional[int] = Field(None, ge=1)  # default: all clients
    sampling: Literal["uniform", "fixed-malicious", "periodic", "counts"] = "uniform"  # run/sampling.py
    period: int = Field(10, ge=1)  # periodic: rounds per cycle
    spike_rounds: int = Field(2, ge=0)  # periodic: attacker rounds at the start of each cycle
    spike_malicious: int = Field(6, ge=0)  # periodic: attackers in each of those rounds
    malicious_counts: list[int] = Field(default_factory=list)  # counts: attackers per round (cyclic)
    forced_rounds: list[int] = Field(default_factory=list)  # LeadFL reference quirk: rounds {0, 10, 12}
    forced_malicious: int = Field(5, ge=0)  # attackers in a forced round
    rounds: int = Field(30, ge=1, le=MAX_ROUNDS)
    local_epochs: int = Field(1, ge=1, le=MAX_LOCAL_EPOCHS)
    local_steps: Optional[int] = Field(None, ge=1, le=MAX_LOCAL_STEPS)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # local optimizer (fedavg)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw moment decay rates, each in [0, 1)
    adam_eps: float = Field(1e-8, gt=0)
    client_state: Literal["reset", "persistent"] = "reset"  # local optimizer state across participations
    lr_decay_at: list[int] = Field(default_factory=list)  # rounds at which lr *= lr_decay
    lr_decay: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(None, gt=0)
    client_momentum: float = Field(0.0, ge=0, lt=1)
    server_lr: float = Field(1.0, gt=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    vectorize: bool = True  # False: train every client on the sequential path
    chunk_size: Optional[int] = Field(None, ge=1)  # clients per vmap call (None: automatic)
    #: how the clients' buffers (BatchNorm statistics) become the global ones: "mean" of the round's
    #: clients, or "selected": the clients the server rule accepted, with its weights (LeadFL reference code)
    buffers: Literal["mean", "selected"] = "mean"


class OptimizeConfig(_Strict):
    """``attack.optimize``: search the attack's strength against the defense each round
    (:mod:`fedarena.attacks.optimize`)."""

    objective: Literal["distance", "loss"] = "distance"
    search: Literal["grid", "golden", "byzfl"] = "grid"
    evals: int = Field(20, ge=1, le=1000)  # objective evaluations per round, the default strength's included
    range: Optional[tuple[float, float]] = None  # None: the attack's declared range
    include_default: bool = True
    start: float = 0.0  # search=byzfl
    delta: float = 10.0  # search=byzfl
    ratio: float = Field(0.8, gt=0.5, lt=1.0)  # search=byzfl
    batch_size: int = Field(256, ge=1)  # objective=loss: the attackers' held-out batch


class AttackConfig(_Float32):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "none"
    num_malicious: int = Field(0, ge=0)
    start_round: int = Field(0, ge=0)
    end_round: Optional[int] = Field(None, ge=0)  # inclusive; None: until the end
    optimize: Optional[OptimizeConfig] = None  # true, or a mapping of OptimizeConfig keys; None/false: off

    @field_validator("optimize", mode="before")
    @classmethod
    def _optimize_switch(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DefenseConfig(_Float32):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = "fedavg"
    weighted: bool = False
    f: Optional[int] = Field(None, ge=0)  # attackers the rule assumes; None: see Experiment.declared_f
    #: client-side defense of benign clients (registry.CLIENT_DEFENSES: none, leadfl, ldp, fl-wbc); its
    #: parameters are ``defense.*`` keys like the aggregator's and the stages'
    client: str = "none"

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EvalConfig(_Strict):
    every: int = Field(1, ge=1)
    batch_size: int = Field(1000, ge=1)
    recovery_threshold: float = Field(0.3, ge=0, le=1)  # backdoor accuracy that ends a spike's recovery
    # test: the dataset's test split; validation: a stratified validation_frac of the training data, held out
    # from training (the same samples for every seed), stands in for it (worst-case tuning, studies/select.py)
    split: Literal["test", "validation"] = "test"
    validation_frac: float = Field(0.2, gt=0, lt=1)
    test_samples: Optional[int] = Field(None, ge=1)  # evaluate on the first N test samples (None: all)


class RunConfig(_Strict):
    """How a run is kept on disk (does not change its results)."""

    checkpoint_every: int = Field(10, ge=0)  # rounds between checkpoints; 0: none


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = Field(0, ge=0, lt=2**63)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    fl: FLConfig = Field(default_factory=FLConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        import re

        if not 1 <= len(v) <= MAX_NAME_LENGTH or not re.match(NAME_PATTERN, v):
            shown = v if len(v) <= 40 else v[:37] + "..."
            raise ValueError(
                f"name|must be 1..{MAX_NAME_LENGTH} characters of letters, digits and ._+=,@- "
                f"(got {shown!r}, {len(v)} characters)|e.g. mnist-alie-krum (it names the run folder)"
            )
        return v

    @model_validator(mode="after")
    def _combinations(self) -> "ExperimentConfig":
        fl = self.fl
        if self.data.synthetic and self.data.dataset != "synthetic":
            key = next(iter(self.data.synthetic))
            raise ValueError(
                f"data.synthetic.{key}|only applies when data.dataset = 'synthetic' "
                f"(got {self.data.dataset!r})|set data.dataset=synthetic, or drop this key"
            )
        if fl.clients_per_round is not None and fl.clients_per_round > fl.num_clients:
            raise ValueError(
                f"fl.clients_per_round|must be <= fl.num_clients = {fl.num_clients} (got {fl.clients_per_round})|1..{fl.num_clients}"
            )
        if self.attack.num_malicious > fl.num_clients:
            raise ValueError(
                f"attack.num_malicious|must be <= fl.num_clients = {fl.num_clients} (got {self.attack.num_malicious})|0..{fl.num_clients}"
            )
        if self.attack.name != "none" and self.attack.num_malicious == 0:
            raise ValueError(
                f"attack.num_malicious|must be >= 1 when attack.name = {self.attack.name!r}|1..{fl.num_clients}"
            )
        if fl.optimizer != "sgd" and fl.momentum:
            raise ValueError(
                f"fl.momentum|applies to fl.optimizer=sgd only (got {fl.momentum} with {fl.optimizer}; "
                "Adam's moments are set by fl.adam_betas)|0 with adam/adamw"
            )
        if not all(0 <= b < 1 for b in fl.adam_betas):
            raise ValueError(f"fl.adam_betas|each must be in [0, 1) (got {list(fl.adam_betas)})|e.g. [0.9, 0.999]")
        if fl.algorithm == "fedsgd" and (fl.optimizer != "sgd" or fl.client_state != "reset"):
            key = "fl.optimizer" if fl.optimizer != "sgd" else "fl.client_state"
            raise ValueError(
                f"{key}|needs local steps (fl.algorithm=fedavg); fedsgd clients send one gradient "
                "(their momentum is fl.client_momentum)|sgd / reset with fedsgd"
            )
        if fl.sampling == "counts" and not fl.malicious_counts:
            raise ValueError(
                "fl.malicious_counts|must list the attackers of each round when fl.sampling = 'counts'|e.g. [6, 6, 0, 0]"
            )
        if any(c < 0 for c in fl.malicious_counts):
            raise ValueError(
                f"fl.malicious_counts|counts must be >= 0 (got {fl.malicious_counts})|non-negative integers"
            )
        last = math.log10(fl.lr) + len(fl.lr_decay_at) * math.log10(fl.lr_decay)  # log10 of the last lr
        if fl.lr_decay_at and not -30 <= last <= math.log10(FLOAT32_MAX):
            raise ValueError(
                f"fl.lr_decay|{len(fl.lr_decay_at)} decays of fl.lr = {fl.lr:g} by {fl.lr_decay:g} reach "
                f"lr = 1e{last:.0f}, outside the float32 range the steps carry|a decay that keeps every "
                f"lr within 1e-30..{FLOAT32_MAX:.3g}"
            )
        if self.attack.end_round is not None and self.attack.end_round < self.attack.start_round:
            raise ValueError("attack.end_round|must be >= attack.start_round|an inclusive round index >= start_round")
        return self

    @property
    def cohort_size(self) -> int:
        return self.fl.clients_per_round or self.fl.num_clients

    @property
    def model_name(self) -> str:
        return AUTO_MODELS.get(self.data.dataset, "mlp") if self.model.name == "auto" else self.model.name

    @property
    def declared_f(self) -> int:
        """``defense.f`` if set; else the expected number of attackers in a cohort,
        ``round(cohort * num_malicious / num_clients)`` -- a fixed, declared number that
        does not follow the per-round true count."""
        if self.defense.f is not None:
            return self.defense.f
        return round(self.cohort_size * self.attack.num_malicious / self.fl.num_clients)


# ---------------------------------------------------------------- loading
def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars: ``3`` -> int, ``0.1`` -> float, ``true`` -> bool,
    ``[1,2]`` -> list, ``null`` -> None; anything else stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError("--set", f"expected key=value (got {assignment!r})", "e.g. --set fl.rounds=10")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(
            "--set",
            f"no key name before '=' in {assignment!r}" if not key.strip() else f"empty part in key {key.strip()!r}",
            "key=value with a dotted key, e.g. fl.rounds=10",
        )
    node = tree
    for p in parts[:-1]:
        if node.get(p) is True or node.get(p) is None:  # a switch (attack.optimize=true) opened as a section
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(key, f"{p!r} is {node!r}, not a section", "a dotted key such as fl.rounds")
    node[parts[-1]] = parse_value(value)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError("config", f"file {str(p)!r} not found", "a path to a YAML file")
    if p.is_dir():
        raise ConfigError("config", f"{str(p)!r} is a folder", "a path to a YAML file, e.g. configs/quickstart.yaml")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            "config", f"cannot read {str(p)!r} ({type(e).__name__}: {e})", "a readable YAML file"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError("config", f"{p} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError("config", f"{p} must hold a mapping at the top level")
    return tree


def from_tree(tree: dict[str, Any]) -> ExperimentConfig:
    """Validate a nested dict; raise :class:`ConfigError` with the first problem."""
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, ") and "|" not in msg:
            msg = msg[len("Value error, ") :]
        if msg.startswith("Value error, ") and "|" in msg:
            field, problem, valid = msg[len("Value error, ") :].split("|", 2)
            raise ConfigError(field, problem, valid) from None
        if err["type"] == "extra_forbidden":
            section = _section(ExperimentConfig, err["loc"][:-1])
            valid = ", ".join(section.model_fields) if section else None
            raise ConfigError(loc, "unknown key", valid) from None
        got = err.get("input")
        at = next((i for i, x in enumerate(err["loc"]) if isinstance(x, int)), None)
        if at is not None:  # a list element: name the list, the position and the list's valid values
            key = ".".join(str(x) for x in err["loc"][:at])
            problem = " is missing" if err["type"] == "missing" else f": {msg}"
            raise ConfigError(
                key, f"item {err['loc'][at]}{problem} (got {got!r})", _field_type(err["loc"][:at]) or _valid_hint(err)
            ) from None
        if err["type"] == "missing" and isinstance(got, (list, tuple)):
            raise ConfigError(loc, f"{msg} (got {list(got)!r})", _field_type(err["loc"])) from None
        raise ConfigError(
            loc,
            f"{msg} (got {got!r})" if not isinstance(got, dict) else msg,
            _valid_hint(err) or _field_type(err["loc"]),
        ) from None
    validate_plugins(cfg)
    return cfg


def _model_of(annotation: Any) -> Optional[type[BaseModel]]:
    """The pydantic model of a field annotated ``Model`` or ``Optional[Model]``."""
    for a in (annotation, *get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _section(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    for part in loc:
        field = model.model_fields.get(str(part))
        sub = _model_of(field.annotation) if field is not None else None
        if sub is None:
            return None
        model = sub
    return model


def _field_type(loc: tuple) -> Optional[str]:
    """The valid values of the field at ``loc``, from its annotation (e.g. ``an integer, or null``)."""
    from .registry import describe_type

    section = _section(ExperimentConfig, tuple(str(x) for x in loc[:-1] if not isinstance(x, int)))
    field = section.model_fields.get(str(loc[-1])) if section else None
    return describe_type(field.annotation) if field is not None else None


def _valid_hint(err: dict) -> Optional[str]:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return str(ctx["expected"])
    for k, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if k in ctx:
            return f"{sym} {ctx[k]}"
    return None


def validate_plugins(cfg: ExperimentConfig) -> None:
    """Check names and parameters of dataset, partition, model, attack and defense (the
    checks that need a component are registered by it: :func:`fedarena.registry.config_check`)."""
    from .registry import ATTACKS, DATASETS, MODELS, PARTITIONS, run_config_checks

    DATASETS.get(cfg.data.dataset)
    if cfg.data.dataset == "synthetic":
        options = sorted(set(DATASETS.params("synthetic")) - {"root", "download", "verify"})
        for key in cfg.data.synthetic:
            if key not in options:
                raise ConfigError(
                    f"data.synthetic.{key}", "unknown option of the synthetic dataset", ", ".join(options)
                )
        DATASETS.validate("synthetic", cfg.data.synthetic, prefix="data.synthetic")
    PARTITIONS.get(cfg.data.partition)
    MODELS.validate(cfg.model_name, dict(cfg.model.model_extra or {}))
    ATTACKS.validate(cfg.attack.name, cfg.attack.params())
    _check_benign_left(cfg, ATTACKS.get(cfg.attack.name))
    run_config_checks(cfg)  # the defense pipeline builds, attack.optimize can search, ...


def _check_benign_left(cfg: ExperimentConfig, attack: Any) -> None:
    """Attacks that craft from the benign updates (ALIE, IPM, Min-Max, Min-Sum, ROP) need
    benign clients in the cohort: every client malicious (or a fixed-malicious cohort of
    attackers only) is an error, not a run of silent zero updates."""
    threat = getattr(attack, "threat", None)
    if getattr(threat, "knowledge", None) != "benign" or cfg.attack.num_malicious == 0:
        return
    n, m, k = cfg.fl.num_clients, cfg.attack.num_malicious, cfg.cohort_size
    all_mal = m >= n or (cfg.fl.sampling == "fixed-malicious" and round(k * m / n) >= k)
    if all_mal:
        raise ConfigError(
            "attack.num_malicious",
            f"attack {cfg.attack.name!r} crafts from the benign clients' updates, "
            f"and with {m} of {n} clients malicious no cohort has a benign one",
            f"1..{n - 1}"
            if k == n and n > 1
            else "at least 2 clients (fl.num_clients) with one benign"
            if n == 1
            else "fewer attackers than clients, at least one benign per cohort",
        )


def defense_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    d = {"name": cfg.defense.name, "weighted": cfg.defense.weighted, "f": cfg.declared_f}
    d.update(cfg.defense.params())
    return d


def load_config(
    path: Optional[str | Path] = None, overrides: Optional[list[str]] = None, base: Optional[dict] = None
) -> ExperimentConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated config."""
    tree: dict[str, Any] = copy.deepcopy(base or {})
    if path is not None:
        tree = merge_trees(tree, load_yaml(path))
    given = tree.get("name")
    derived = given is None or given == auto_name(tree)
    renamed, plugins, explicit = False, [], set()
    for o in overrides or []:
        _drop_params_of_replaced_plugin(tree, o, explicit)
        apply_override(tree, o)
        key, _, value = o.partition("=")
        explicit.add(key.strip())
        renamed |= key.strip() == "name"
        if key.strip() in NAMING_KEYS:
            plugins.append(re.sub(r"[^A-Za-z0-9._+=,@-]", "_", value.strip()))
    if not renamed and (derived or plugins):
        tree["name"] = (auto_name(tree) if derived else "-".join([str(given), *plugins]))[:MAX_NAME_LENGTH]
    return from_tree(tree)


#: the keys that name a run: ``<dataset>-<attack>-<defense>``
NAMING_KEYS = ("data.dataset", "attack.name", "defense.name")


def auto_name(tree: dict[str, Any]) -> str:
    """``<dataset>-<attack>-<defense>`` of a config tree (defaults where unset).

    :func:`load_config` names a run this way when its name was not given, or was itself
    this derived name (the built-in demo's ``digits-backdoor-fedavg``), so
    ``--set defense.name=median`` on the demo names it ``digits-backdoor-median``. A name
    the user chose is kept; ``--set`` of a naming key then appends the new value
    (``my-study`` -> ``my-study-median``). ``--set name=...`` always wins."""

    def get(section: str, key: str, default: str) -> str:
        node = tree.get(section)
        return str(node.get(key, default)) if isinstance(node, dict) else default

    return "-".join((get("data", "dataset", "digits"), get("attack", "name", "none"), get("defense", "name", "fedavg")))


#: keys of the attack / defense sections that do not belong to the chosen attack or defense
#: (and the parameters of the client-side defenses, :func:`_section_common`)
_SECTION_COMMON = {
    "attack": {"name", "num_malicious", "start_round", "end_round", "optimize"},
    "defense": {"name", "weighted", "f", "client"},
}


def _section_common(section: str) -> set[str]:
    if section != "defense":
        return _SECTION_COMMON[section]
    from .registry import CLIENT_DEFENSES

    return _SECTION_COMMON[section] | set(CLIENT_DEFENSES.owners())


def _drop_params_of_replaced_plugin(tree: dict[str, Any], assignment: str, explicit: set[str] = frozenset()) -> None:
    """``--set attack.name=X`` on a config written for attack Y drops Y's own parameters
    (they would be unknown to X); later overrides may set X's. Parameters set by earlier
    overrides of the same command (``explicit`` keys) stay, whatever their order: X
    takes them, or validation names them as unknown to X. Likewise ``--set
    defense.client=X`` drops the parameters of client-side defense Y that X does not read
    (``pert_strength`` stays from ``leadfl`` to ``ldp``)."""
    key, _, value = assignment.partition("=")
    section, _, field = key.strip().partition(".")
    if field not in ("name", "client") or section not in _SECTION_COMMON or not isinstance(tree.get(section), dict):
        return
    if field == "client" and section != "defense":
        return

    def stated(k: str) -> bool:
        return any(e == f"{section}.{k}" or e.startswith(f"{section}.{k}.") for e in explicit)

    old = tree[section].get(field)
    if old in (None, parse_value(value)):
        return
    if field == "name":
        common = _section_common(section)
        tree[section] = {k: v for k, v in tree[section].items() if k in common or stated(k)}
        return
    from .registry import CLIENT_DEFENSES

    new = parse_value(value)
    if not (isinstance(old, str) and isinstance(new, str) and old in CLIENT_DEFENSES and new in CLIENT_DEFENSES):
        return  # an unknown name: validation names it
    gone = set(CLIENT_DEFENSES.params(old)) - set(CLIENT_DEFENSES.params(new))
    tree[section] = {k: v for k, v in tree[section].items() if k not in gone or stated(k)}


def merge_trees(a: dict, b: dict) -> dict:
    """``b`` laid over ``a``: nested mappings merge key by key, anything else replaces."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_trees(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (every default filled in, see :mod:`fedarena.resolve`):
    what ``config.yaml`` holds; loading it gives the same run."""
    from .resolve import resolved_config

    return yaml.safe_dump(resolved_config(cfg), sort_keys=False)


#: the demo (``configs/demo.yaml``; ``fedarena run --demo``, and ``fedarena run`` without arguments):
#: digits, 20 clients, 30 rounds, 2 local epochs, 4 clients plant a backdoor, FedAvg. A named config, not a
#: base: a config file, ``--set`` without a config, a sweep and the Python API all start from the library
#: defaults (the pydantic models above), never from this.
DEMO_RUN: dict[str, Any] = {
    "name": "digits-backdoor-fedavg",
    "seed": 0,
    "data": {"dataset": "digits", "partition": "iid"},
    "fl": {"num_clients": 20, "rounds": 30, "local_epochs": 2, "batch_size": 16, "lr": 0.1},
    "attack": {"name": "backdoor", "num_malicious": 4, "target": 0, "poison_frac": 0.5},
    "defense": {"name": "fedavg"},
    "eval": {"every": 1},
}
DEFAULT_RUN = DEMO_RUN  # the former name of the demo (kept for existing imports)
