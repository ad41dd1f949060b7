"""What ``--quick`` runs: the paper's headline claim at the paper-like scale on
Fashion-MNIST when its files are found, else the scikit-learn digits version.

Three scales, chosen from the ``quick`` value a paper module receives:

* ``full`` (``quick`` false): every run and claim;
* ``headline`` (``--quick`` with Fashion-MNIST found): the full settings, but only the
  runs of the paper's headline claim (a few minutes on 2 CPU cores);
* ``digits`` (``--quick`` without Fashion-MNIST, or ``quick="smoke"``): the small
  digits version. The test suite passes ``quick="smoke"`` (with fewer rounds) so that it
  never depends on the data folder or runs for minutes.

Fashion-MNIST is looked for under ``data.root`` (``--set data.root=...``), then
``$FEDARENA_DATA``, then ``../shared/data`` (next to the working folder), then the default
cache ``~/.cache/fedarena``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

SMOKE = "smoke"
FULL, HEADLINE, DIGITS = "full", "headline", "digits"


def find_fashion_mnist(root: Optional[str] = None) -> Optional[str]:
    """The first data folder holding ``fashion-mnist/`` IDX files, or None."""
    from ..data.datasets import IDX_FILES

    candidates = [root, os.environ.get("FEDARENA_DATA"), str(Path.cwd().parent / "shared" / "data"),
                  str(Path("~/.cache/fedarena").expanduser())]
    for c in candidates:
        if c and all((Path(c).expanduser() / "fashion-mnist" / f).exists() for f in IDX_FILES):
            return str(Path(c).expanduser())
    return None


def scale(quick, root: Optional[str] = None) -> str:
    """``full``, ``headline`` or ``digits`` (see the module docstring)."""
    if not quick:
        return FULL
    if quick == SMOKE:
        return DIGITS
    return HEADLINE if find_fashion_mnist(root) else DIGITS


def data_section(root: Optional[str]) -> dict:
    """``data.root``/``data.download`` for the headline scale: the folder where Fashion-MNIST was found."""
    found = find_fashion_mnist(root)
    return {"root": found, "download": False} if found else {}
