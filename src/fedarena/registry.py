"""Name -> factory registries (timm style).

A factory is a class (or function) whose keyword-only arguments with defaults are its
parameters. ``fedarena list`` and config validation read them from the signature, so
adding a defense is one decorated class in one file::

    from fedarena.registry import DEFENSES

    @DEFENSES.register("my-mean")
    class MyMean(Aggregator):
        '''Plain mean (one-line summary shown by `fedarena list`).'''
        def __init__(self, *, scale: float = 1.0): ...
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import types
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError

from .errors import ConfigError


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    default: Any
    required: bool = False  # no default: positional inputs such as a model's input_shape

    @property
    def type_name(self) -> str:
        return describe_type(self.annotation)


def describe_type(a: Any) -> str:
    """A readable list of valid values: ``Optional[float]`` -> ``a float, or null``,
    ``Literal['a', 'b']`` -> ``'a', 'b'``, ``tuple[int, ...]`` -> ``a list of int``."""
    origin, args = get_origin(a), get_args(a)
    if origin is Literal:
        return ", ".join(repr(x) for x in args)
    if origin in (Union, types.UnionType):
        parts = [describe_type(x) for x in args if x is not type(None)]
        return " or ".join(parts) + (", or null" if type(None) in args else "")
    if origin in (list, tuple, set) and args:
        one = describe_type(args[0])
        many = _PLURALS.get(one, one)
        if origin is tuple and Ellipsis not in args:
            return f"a list of {len(args)} {many}"
        return f"a list of {many}"
    name = getattr(a, "__name__", None) or str(a).replace("typing.", "")
    return {"float": "a finite float", "int": "an integer", "bool": "true, false", "str": "a string"}.get(name, name)


_PLURALS = {
    "a finite float": "finite floats",
    "an integer": "integers",
    "a string": "strings",
    "true, false": "booleans",
}


def _target(factory: Callable[..., Any]) -> Callable[..., Any] | None:
    """The callable whose signature holds the factory's parameters; None for a class
    without its own ``__init__`` (it takes no parameters)."""
    if inspect.isclass(factory):
        return None if factory.__init__ is object.__init__ else factory.__init__
    return factory


#: the largest finite float32 (the tensors every parameter meets are float32)
FLOAT32_MAX = 3.4028234663852886e38


def float_problem(value: Any) -> Optional[tuple[str, float]]:
    """What is wrong with a float value (or a float inside a list) that every parameter
    and config key refuses, and the offending float: NaN/Inf, or a magnitude beyond
    float32 (it overflows the first kernel that takes it); None when nothing is."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            return "must be a finite number", v
        if isinstance(v, float) and abs(v) > FLOAT32_MAX:
            return f"must be within +-{FLOAT32_MAX:.4g} (the float32 range)", v
    return None


def check_value(key: str, value: Any, valid: str) -> None:
    """Generic checks every parameter gets: floats finite and within the float32 range
    (:func:`float_problem`), seeds non-negative."""
    problem = float_problem(value)
    if problem:
        raise ConfigError(key, f"{problem[0]} (got {problem[1]:g})", valid)
    if key.endswith("seed") and isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 2**63:
        raise ConfigError(key, f"a seed must be in 0..2**63-1 (got {value})", "an integer >= 0")


class Registry:
    """A mapping from names to factories, with parameter introspection.

    ``packages``: the plugin packages whose modules are imported on the first lookup (so
    their decorators run): the components for the component registries, ``reproduce``
    alone for the reproductions (building a simulation loads no paper module)."""

    def __init__(
        self,
        kind: str,
        prefix: str,
        name_field: str | None = None,
        packages: tuple[str, ...] = ("data", "models", "attacks", "defenses"),
    ):
        self.kind = kind  # e.g. "defense"
        self.prefix = prefix  # config prefix of its parameters, e.g. "defense"
        self.name_field = name_field or f"{prefix}.name"  # the key that selects it
        self.packages = packages
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items and self._items[name] is not factory:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = factory
            try:
                factory.registered_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return factory

        return deco

    def names(self) -> list[str]:
        _discover(self.packages)
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        _discover(self.packages)
        return name in self._items

    def get(self, name: str) -> Callable[..., Any]:
        _discover(self.packages)
        if name not in self._items:
            raise ConfigError(self.name_field, f"unknown {self.kind} {name!r}", ", ".join(self.names()))
        return self._items[name]

    def params(self, name: str) -> dict[str, Param]:
        """Keyword parameters of a factory (name -> Param), read from its signature."""
        target = _target(self.get(name))
        if target is None:
            return {}
        sig = inspect.signature(target)
        try:
            hints = get_type_hints(target)
        except Exception:  # pragma: no cover - unresolved forward refs
            hints = {}
        out = {}
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            ann = hints.get(p.name, Any)
            out[p.name] = Param(p.name, ann, None if p.default is p.empty else p.default, p.default is p.empty)
        return out

    def owners(self) -> dict[str, list[str]]:
        """Each parameter name -> the components that take it (in name order)."""
        out: dict[str, list[str]] = {}
        for name in self.names():
            for key in self.params(name):
                out.setdefault(key, []).append(name)
        return out

    def accepts_extra(self, name: str) -> bool:
        target = _target(self.get(name))
        return target is not None and any(
            p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values()
        )

    def validate(
        self, name: str, values: dict[str, Any], ignore: set[str] = frozenset(), prefix: str | None = None
    ) -> dict[str, Any]:
        """Check ``values`` against the factory's parameters; return them coerced.
        ``prefix``: the config section the values come from (default: the registry's)."""
        prefix = prefix or self.prefix
        params = self.params(name)
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in ignore:
                continue
            if key not in params:
                if self.accepts_extra(name):
                    out[key] = value
                    continue
                valid = (
                    ", ".join(sorted(set(params) | set(ignore))) or f"none: {self.kind} {name!r} takes no parameters"
                )
                raise ConfigError(f"{prefix}.{key}", f"unknown parameter for {self.kind} {name!r}", valid)
            ann = params[key].annotation
            if ann is not Any:
                try:
                    value = TypeAdapter(ann).validate_python(value)
                except ValidationError as e:
                    err = e.errors()[0]
                    # a choice among names: the valid values say which; pydantic's line would list them twice
                    problem = "unknown value" if err["type"] == "literal_error" else err["msg"]
                    raise ConfigError(f"{prefix}.{key}", f"{problem} (got {value!r})", params[key].type_name) from None
            check_value(f"{prefix}.{key}", value, params[key].type_name)
            out[key] = value
        return out

    def build(
        self, name: str, values: dict[str, Any], ignore: set[str] = frozenset(), prefix: str | None = None
    ) -> Any:
        kwargs = self.validate(name, values, ignore, prefix)
        return self.get(name)(**kwargs)

    def summary(self, name: str) -> str:
        """The first paragraph of the factory's docstring, on one line."""
        doc = (inspect.getdoc(self.get(name)) or "").strip()
        return " ".join(doc.split("\n\n")[0].split())


DATASETS = Registry("dataset", "data", "data.dataset")
PARTITIONS = Registry("partition", "data", "data.partition")
MODELS = Registry("model", "model", "model.name", packages=("models", "run"))  # run: fl-pretrained
ATTACKS = Registry("attack", "attack")
DEFENSES = Registry("defense", "defense")
STAGES = Registry("defense stage", "defense", "defense")
#: client-side defenses (``defense.client``): their parameters are flat ``defense.*`` keys, as a stage's
CLIENT_DEFENSES = Registry("client-side defense", "defense", "defense.client")
PAPERS = Registry("reproduction", "reproduce", "reproduce NAME", packages=("reproduce",))

#: checks of a whole experiment config that need components (a defense pipeline that
#: builds, an attack whose strength can be searched, ...): registered by the component
#: modules with :func:`config_check`, run by :func:`fedarena.config.from_tree`, so the
#: config module imports no component
_CONFIG_CHECKS: list[Callable[[Any], None]] = []
_discovered: set[str] = set()


def config_check(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``fn(cfg)``: raise :class:`~fedarena.errors.ConfigError` for a config the
    component cannot run."""
    _CONFIG_CHECKS.append(fn)
    return fn


def run_config_checks(cfg: Any) -> None:
    """Every registered config check, in registration order (components loaded first)."""
    _discover(("data", "models", "attacks", "defenses"))
    for check in list(_CONFIG_CHECKS):
        check(cfg)


def _discover(packages: tuple[str, ...]) -> None:
    """Import every module of the plugin ``packages`` so their decorators run."""
    for pkg_name in packages:
        if pkg_name in _discovered:
            continue
        _discovered.add(pkg_name)
        pkg = importlib.import_module(f"fedarena.{pkg_name}")
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"fedarena.{pkg_name}.{mod.name}")
