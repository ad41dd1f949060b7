"""Sweep specs: a base config, a grid over any config keys, named variants -> runs.

A spec is a YAML file::

    name: attacks-vs-defenses          # optional, the sweep's name
    base:                              # a config tree (same keys as a run config) ...
      fl: {rounds: 20, num_clients: 20}
    # config: path/to/base.yaml        # ... and/or a config file (relative to the spec)
    grid:                              # every combination; a dict replaces the whole block
      attack:
        - {name: none}
        - {name: backdoor, num_malicious: 4, poison_frac: 0.5}
        - {name: alie, num_malicious: 4}
      defense: [{name: fedavg}, {name: median}, {name: rlr, theta: 8}]
      seed: [0, 1]
      fl.lr: [0.1, 0.05]               # a dotted key sets one value
    variants:                          # optional: named partial configs, crossed with the grid
      iid: {}
      non-iid: {data: {partition: dirichlet, alpha: 0.3}}

A ``select:`` block tunes defense parameters by their worst case over the grid's attacks
on a validation split before the runs play (:mod:`fedarena.studies.select`,
``examples/tuned-sweep.yaml``).

Each run gets an id made of its variant and grid labels (``non-iid,backdoor,median,seed=0``):
a block's label is its ``name`` (with the parameters that tell same-named blocks apart),
a scalar's is ``key=value``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import MAX_NAME_LENGTH, NAME_PATTERN, ExperimentConfig, merge_trees, dump_config, from_tree, load_yaml
from ..errors import ConfigError

SPEC_KEYS = {"name", "base", "config", "grid", "variants", "select"}
#: the most runs a sweep may have unless ``--max-runs`` raises it (validation alone takes
#: about 10 ms a run; a typo in a grid should not start an hour of it)
MAX_RUNS = 2000


@dataclass
class Job:
    """One run of a study: its id, its config tree and the labels of its grid cell."""

    run_id: str
    config: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)

    def validated(self) -> ExperimentConfig:
        try:
            return from_tree(self.config)
        except ConfigError as e:
            raise ConfigError(f"{e.field} (run {self.run_id})", e.problem, e.valid) from None


def config_sha(cfg: ExperimentConfig) -> str:
    """Identity of a run's resolved config (what decides whether a stored run is this one)."""
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    variants: dict[str, dict[str, Any]]
    #: ``select:`` -- worst-case tuning of defense parameters (:mod:`fedarena.studies.select`)
    select: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "SweepSpec":
        path = Path(path)
        if path.is_dir():
            raise ConfigError("SPEC", f"{str(path)!r} is a folder", "a sweep spec YAML file")
        if not path.is_file():
            raise ConfigError("SPEC", f"file {str(path)!r} not found", "a sweep spec YAML file")
        tree = load_yaml(path)
        return cls.from_tree(tree, default_name=path.stem, root=path.parent)

    @classmethod
    def from_tree(cls, tree: dict[str, Any], default_name: str = "sweep", root: Optional[Path] = None) -> "SweepSpec":
        unknown = set(tree) - SPEC_KEYS
        if unknown:
            raise ConfigError(f"spec.{sorted(unknown)[0]}", "unknown key", ", ".join(sorted(SPEC_KEYS)))
        base: dict[str, Any] = {}
        if tree.get("config"):
            if not isinstance(tree["config"], str):
                raise ConfigError("spec.config", f"must be a path (got {tree['config']!r})", "a config YAML file")
            cpath = Path(tree["config"])
            base = load_yaml(cpath if cpath.is_absolute() or root is None else root / cpath)
        base = merge_trees(base, _mapping(tree.get("base") or {}, "spec.base"))
        grid = _mapping(tree.get("grid") or {}, "spec.grid")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"spec.grid.{key}", f"must be a non-empty list (got {values!r})", "[value, ...]")
        variants = _mapping(tree.get("variants") or {}, "spec.variants")
        for vname, v in variants.items():
            _mapping(v or {}, f"spec.variants.{vname}")
        if not (base or grid or variants):
            raise ConfigError(
                "spec",
                "is empty: it would run the default experiment once",
                "a spec with base, config, grid or variants (see examples/sweep.yaml)",
            )
        name = tree.get("name") or default_name
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name) or len(name) > MAX_NAME_LENGTH:
            raise ConfigError(
                "spec.name",
                f"must be 1..{MAX_NAME_LENGTH} characters of letters, digits and ._+=,@- (got {str(name)[:40]!r})",
                "e.g. attacks-vs-defenses (it names the sweep folder)",
            )
        spec = cls(name, base, grid, {k: v or {} for k, v in variants.items()})
        if tree.get("select"):  # parsed and checked by studies.select.selection_of, before any run plays
            spec.select = _mapping(tree["select"], "spec.select")
        return spec

    @property
    def size(self) -> int:
        """The number of runs: variants x the product of the grid's axes."""
        return max(1, len(self.variants)) * math.prod(len(v) for v in self.grid.values())

    def jobs(self, max_runs: int = MAX_RUNS, progress: Optional[Callable[[int, int], None]] = None) -> list[Job]:
        """Every run of the sweep (variants x grid), validated; ``progress(done, total)``
        after each. A sweep of more than ``max_runs`` runs is refused before any is built."""
        if self.size > max_runs:
            raise ConfigError(
                "spec.grid",
                f"makes {self.size:,} runs, more than the limit of {max_runs:,}",
                "a smaller grid, or raise the limit with --max-runs",
            )
        labels = {key: grid_labels(key, values) for key, values in self.grid.items()}
        out, seen = [], set()
        for vname, variant in (self.variants or {"": {}}).items():
            for combo in itertools.product(*(range(len(v)) for v in self.grid.values())):
                tree = merge_trees(copy.deepcopy(self.base), variant)
                cell: dict[str, Any] = {"variant": vname} if self.variants else {}
                parts = [vname] if self.variants else []
                for (key, values), i in zip(self.grid.items(), combo):
                    set_key(tree, key, copy.deepcopy(values[i]))
                    cell[key] = labels[key][i] if isinstance(values[i], dict) else values[i]
                    parts.append(labels[key][i])
                run_id = ",".join(parts) or "run"
                if run_id in seen:
                    raise ConfigError("spec.grid", f"two runs get the id {run_id!r}", "distinct grid values")
                seen.add(run_id)
                tree["name"] = run_name(run_id)
                job = Job(run_id, tree, cell)
                job.validated()
                out.append(job)
                if progress is not None:
                    progress(len(out), self.size)
        return out


def relabel(jobs: list[Job], axis: str, labels: dict[str, str]) -> list[Job]:
    """``jobs`` with the ``axis`` labels renamed by ``labels`` (the grid's automatic labels
    of same-named blocks list the keys that tell them apart; an arena gives them short
    names), in the run ids and run names too."""
    out = []
    for job in jobs:
        old = job.labels[axis]
        new = labels.get(old, old)
        run_id = job.run_id.replace(old, new, 1)
        out.append(Job(run_id, dict(job.config, name=run_name(run_id)), {**job.labels, axis: new}))
    return out


def run_name(run_id: str) -> str:
    """The config ``name`` of a run: its id with the characters a name may not hold
    (brackets, spaces, ...) replaced by ``-``, at most 100 characters."""
    name = re.sub(r"[^A-Za-z0-9._+=,@-]", "-", run_id).strip("-._+=,@") or "run"
    if len(name) > 100:
        name = name[:87] + "-" + hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return name


def _mapping(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(where, f"must be a mapping (got {type(v).__name__})", "key: value pairs")
    return v


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree[a][b] = value`` for ``key = "a.b"`` (a dict value replaces the whole block)."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"spec.grid.{key}", f"{p!r} is not a section", "a dotted config key")
    node[parts[-1]] = value


def _block_name(key: str, block: dict[str, Any]) -> str:
    """A block's name; an attack whose strength ``attack.optimize`` searches gets ``+opt``."""
    return str(block.get("name", key)) + ("+opt" if block.get("optimize") else "")


def grid_labels(key: str, values: list[Any]) -> list[str]:
    """Short, distinct labels of one grid axis's values."""
    out = []
    for v in values:
        if isinstance(v, dict):
            name = _block_name(key, v)
            same = [w for w in values if isinstance(w, dict) and _block_name(key, w) == name]
            if len(same) > 1:
                differing = sorted(
                    k for k in set().union(*same) if k != "name" and len({repr(w.get(k)) for w in same}) > 1
                )
                name += "(" + ",".join(f"{k}={v.get(k)}" for k in differing) + ")"
            out.append(name)
        else:
            out.append(f"{key.split('.')[-1]}={v}")
    if len(set(out)) < len(out):
        out = [f"{o}#{i}" for i, o in enumerate(out)]
    return out
