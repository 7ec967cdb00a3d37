"""Find the shipped `sql/` and `assets/` folders wherever picolytics runs from.

Three layouts exist: an installed wheel (the folders travel inside the package as
`picolytics/_data/`), an editable install or a plain checkout (they sit at the top of
the repository, two levels above this file), and the PyInstaller binary (they are
unpacked next to the bundle, under `sys._MEIPASS`). This module must import nothing
beyond the standard library so it works in every one of them.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


class ResourceNotFoundError(FileNotFoundError):
    """A shipped folder (sql/ or assets/) could not be found in any known layout."""


def _candidates(name: str) -> list[Path]:
    found: list[Path] = []
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root is not None:
        found.append(Path(frozen_root) / name)
    packaged = resources.files("picolytics") / "_data" / name
    if isinstance(packaged, Path):
        found.append(packaged)
    found.append(Path(__file__).resolve().parents[2] / name)
    return found


def shipped_dir(name: str) -> Path:
    """Return the folder `name` ("sql" or "assets") that ships with picolytics."""
    candidates = _candidates(name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(path) for path in candidates)
    raise ResourceNotFoundError(f"picolytics' {name}/ folder is missing (looked in {tried})")


def sql_dir() -> Path:
    return shipped_dir("sql")


def assets_dir() -> Path:
    return shipped_dir("assets")
