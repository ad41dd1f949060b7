"""What ``--quick`` runs: the paper's headline claim at the paper-like scale on
Fashion-MNIST when its files are found, else the scikit-learn digits version.

A paper module receives a :class:`Scale`: ``Scale.FULL`` (no ``--quick``),
``Scale.QUICK`` (``--quick``) or ``Scale.SMOKE`` (the test suite's version).
:meth:`Scale.of` also takes the older spellings (``False``, ``True``, ``"smoke"``).
From it and the data found, :func:`scale` picks one of three settings:

* ``full`` (``Scale.FULL``): every run and claim;
* ``headline`` (``Scale.QUICK`` with Fashion-MNIST found): the full settings, but only the
  runs of the paper's headline claim (a few minutes on 2 CPU cores);
* ``digits`` (``Scale.QUICK`` without Fashion-MNIST, or ``Scale.SMOKE``): the small
  digits version. The test suite passes ``Scale.SMOKE`` (with fewer rounds) so that it
  never depends on the data folder or runs for minutes.

Fashion-MNIST is looked for under ``data.root`` (``--set data.root=...``), then
``$FEDARENA_DATA``, then ``../shared/data`` (next to the working folder), then the default
cache ``~/.cache/fedarena``.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, Optional


class Scale(str, Enum):
    """How much of a reproduction to run: every run (``FULL``), ``--quick`` (``QUICK``)
    or the test suite's small version (``SMOKE``). Compare with the members
    (``s is Scale.FULL``). For modules written against the older flag, ``bool(s)`` is
    false for ``FULL`` only, as ``quick`` was."""

    FULL = "full"
    QUICK = "quick"
    SMOKE = "smoke"

    @classmethod
    def of(cls, value: Any) -> "Scale":
        """The Scale of ``value``: a Scale, its name/value (``"full"``, ``"quick"``,
        ``"smoke"``), or the older ``quick`` flag (``False`` -> FULL, ``True`` -> QUICK)."""
        if isinstance(value, cls):
            return value
        if value is False or value is None:
            return cls.FULL
        if value is True:
            return cls.QUICK
        if isinstance(value, str) and value.lower() in {m.value for m in cls}:
            return cls(value.lower())
        raise ValueError(f"scale: {value!r} is not a scale; valid: full, quick, smoke (or False / True)")

    @property
    def legacy(self) -> Any:
        """The older ``quick`` value of this scale (``False``, ``True`` or ``"smoke"``),
        as written in ``claims.json``."""
        return {"full": False, "quick": True, "smoke": "smoke"}[self.value]

    def __bool__(self) -> bool:
        # the older ``quick`` flag's truth value, so that a paper module written as
        # ``20 if quick else 200`` keeps working (a str Enum member would always be true)
        return self is not Scale.FULL

    def __str__(self) -> str:
        return self.value


SMOKE = Scale.SMOKE
FULL, HEADLINE, DIGITS = "full", "headline", "digits"


def find_fashion_mnist(root: Optional[str] = None) -> Optional[str]:
    """The first data folder holding ``fashion-mnist/`` IDX files, or None."""
    from ..data.datasets import IDX_FILES

    candidates = [
        root,
        os.environ.get("FEDARENA_DATA"),
        str(Path.cwd().parent / "shared" / "data"),
        str(Path("~/.cache/fedarena").expanduser()),
    ]
    for c in candidates:
        if c and all((Path(c).expanduser() / "fashion-mnist" / f).exists() for f in IDX_FILES):
            return str(Path(c).expanduser())
    return None


def scale(quick: Any, root: Optional[str] = None) -> str:
    """``full``, ``headline`` or ``digits`` for a :class:`Scale` (or an older ``quick``
    value, see :meth:`Scale.of`); see the module docstring."""
    s = Scale.of(quick)
    if s is Scale.FULL:
        return FULL
    if s is Scale.SMOKE:
        return DIGITS
    return HEADLINE if find_fashion_mnist(root) else DIGITS


def data_section(root: Optional[str]) -> dict:
    """``data.root``/``data.download`` for the headline scale: the folder where Fashion-MNIST was found."""
    found = find_fashion_mnist(root)
    return {"root": found, "download": False} if found else {}
