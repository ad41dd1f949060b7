"""mkdocs hook: the configuration reference, generated from the pydantic models
(fedarena.config) and the registries (fedarena.registry), so the docs list exactly the
keys, types and defaults the code validates.

A page holding the line ``<!-- generated: config-keys -->`` gets the tables of every
config section; ``<!-- generated: components -->`` gets every registered dataset,
partition, model, attack, defense, defense stage, client-side defense and reproduction
with its parameters; ``<!-- readme: HEADING -->`` gets the README's section of that
heading (the capability and reproduction tables live in the README only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    return (
        "`null`"
        if value is None
        else f"`{value!r}`"
        if not isinstance(value, (int, float, bool, str))
        else f"`{str(value).lower() if isinstance(value, bool) else value}`"
    )


def _constraints(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def config_keys() -> str:
    from fedarena.config import ExperimentConfig
    from fedarena.registry import describe_type

    lines = []
    top = []
    for name, field in ExperimentConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            section = ann
            extra = section.model_config.get("extra") == "allow"
            lines += [f"### `{name}`", ""]
            if extra:
                lines += [
                    f"Besides these keys, `{name}.*` takes the parameters of the chosen "
                    f"{'attack' if name == 'attack' else 'defense, its stages and the client-side defense' if name == 'defense' else 'model'}"
                    " (see [Components](#components)).",
                    "",
                ]
            lines += ["| key | valid values | default | bounds |", "|---|---|---|---|"]
            for key, f in section.model_fields.items():
                lines.append(
                    f"| `{name}.{key}` | {_md(describe_type(f.annotation))} | {_default(f)} | "
                    f"{_constraints(f) or '-'} |"
                )
            lines.append("")
        else:
            top.append(f"| `{name}` | {_md(describe_type(ann))} | {_default(field)} | {_constraints(field) or '-'} |")
    head = ["### Top level", "", "| key | valid values | default | bounds |", "|---|---|---|---|", *top, ""]
    return "\n".join(head + lines)


def components() -> str:
    from fedarena.registry import ATTACKS, CLIENT_DEFENSES, DATASETS, DEFENSES, MODELS, PAPERS, PARTITIONS, STAGES

    out = []
    for title, reg, key in (
        ("Datasets", DATASETS, "data.dataset"),
        ("Partitions", PARTITIONS, "data.partition"),
        ("Models", MODELS, "model.name"),
        ("Attacks", ATTACKS, "attack.name"),
        ("Defenses", DEFENSES, "defense.name"),
        ("Defense stages", STAGES, "switched on by its key"),
        ("Client-side defenses", CLIENT_DEFENSES, "defense.client"),
        ("Reproductions", PAPERS, "fedarena reproduce NAME"),
    ):
        out += [
            f"### {title}",
            "",
            f"Chosen by `{key}`." if "." in key else f"{key[0].upper()}{key[1:]}.",
            "",
            "| name | what | parameters (default) |",
            "|---|---|---|",
        ]
        for name in reg.names():
            prefix = "data.synthetic" if reg is DATASETS and name == "synthetic" else reg.prefix
            params = [
                f"`{prefix}.{p.name}` = `{p.default!r}`"
                for p in reg.params(name).values()
                if not p.required and p.name not in ("root", "download", "verify")
            ]
            out.append(f"| `{name}` | {_md(reg.summary(name))} | {_md(', '.join(params)) or '-'} |")
        out.append("")
    return "\n".join(out)


MARKERS = {"<!-- generated: config-keys -->": config_keys, "<!-- generated: components -->": components}


def readme_section(heading: str, root: Path) -> str:
    """The body of the README's ``## heading`` section (one copy, no drift); links to files
    outside the docs become code spans."""
    text = (root / "README.md").read_text()
    m = re.search(rf"(?ms)^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text)
    if m is None:
        raise ValueError(f"README.md has no section '## {heading}'")

    def link(mm: re.Match) -> str:
        label, target = mm.group(1), mm.group(2)
        return mm.group(0) if target.startswith("http") else f"{label} (`{target}`)"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", link, m.group(1)).strip()


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    root = Path(config["config_file_path"]).parent
    return re.sub(r"<!-- readme: (.+?) -->", lambda m: readme_section(m.group(1), root), markdown)
