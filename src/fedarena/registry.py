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
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, get_type_hints

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
        a = self.annotation
        return getattr(a, "__name__", None) or str(a).replace("typing.", "")


class Registry:
    """A mapping from names to factories, with parameter introspection."""

    def __init__(self, kind: str, prefix: str, name_field: str | None = None):
        self.kind = kind  # e.g. "defense"
        self.prefix = prefix  # config prefix of its parameters, e.g. "defense"
        self.name_field = name_field or f"{prefix}.name"  # the key that selects it
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
        _discover()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        _discover()
        return name in self._items

    def get(self, name: str) -> Callable[..., Any]:
        _discover()
        if name not in self._items:
            raise ConfigError(self.name_field, f"unknown {self.kind} {name!r}", ", ".join(self.names()))
        return self._items[name]

    def params(self, name: str) -> dict[str, Param]:
        """Keyword parameters of a factory (name -> Param), read from its signature."""
        factory = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
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

    def accepts_extra(self, name: str) -> bool:
        factory = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())

    def validate(self, name: str, values: dict[str, Any], ignore: set[str] = frozenset()) -> dict[str, Any]:
        """Check ``values`` against the factory's parameters; return them coerced."""
        params = self.params(name)
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in ignore:
                continue
            if key not in params:
                if self.accepts_extra(name):
                    out[key] = value
                    continue
                valid = ", ".join(sorted(set(params) | set(ignore))) or "none"
                raise ConfigError(f"{self.prefix}.{key}", f"unknown parameter for {self.kind} {name!r}", valid)
            ann = params[key].annotation
            if ann is Any:
                out[key] = value
                continue
            try:
                out[key] = TypeAdapter(ann).validate_python(value)
            except ValidationError as e:
                err = e.errors()[0]
                raise ConfigError(f"{self.prefix}.{key}", f"{err['msg']} (got {value!r})", params[key].type_name) from None
        return out

    def build(self, name: str, values: dict[str, Any], ignore: set[str] = frozenset()) -> Any:
        kwargs = self.validate(name, values, ignore)
        return self.get(name)(**kwargs)

    def summary(self, name: str) -> str:
        """The first paragraph of the factory's docstring, on one line."""
        doc = (inspect.getdoc(self.get(name)) or "").strip()
        return " ".join(doc.split("\n\n")[0].split())


DATASETS = Registry("dataset", "data", "data.dataset")
PARTITIONS = Registry("partition", "data", "data.partition")
MODELS = Registry("model", "model", "model.name")
ATTACKS = Registry("attack", "attack")
DEFENSES = Registry("defense", "defense")
STAGES = Registry("defense stage", "defense", "defense")
PAPERS = Registry("reproduction", "reproduce", "reproduce NAME")

_PACKAGES = ("data", "models", "attacks", "defenses", "reproduce")
_discovered = False


def _discover() -> None:
    """Import every module of the plugin packages so their decorators run."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for pkg_name in _PACKAGES:
        pkg = importlib.import_module(f"fedarena.{pkg_name}")
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"fedarena.{pkg_name}.{mod.name}")
