"""The package's layers (docs/architecture.md): every import points down, never up or
sideways into another subpackage of the same layer. Read from the source with `ast`, so
imports inside functions and under TYPE_CHECKING count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "picolytics"

# Higher numbers sit higher. A unit is a subpackage or a top-level module.
LAYERS: dict[str, int] = {
    # ground: settings, the shared types, error classes, logging, resources
    "__init__": 0,
    "accounting": 0,
    "config": 0,
    "dimensions": 0,
    "errors": 0,
    "events": 0,
    "logs": 0,
    "resources": 0,
    "text": 0,
    # domain
    "enrich": 1,
    "storage": 1,
    # query: the one query layer, which every feature that shows numbers reads through
    "stats": 2,
    # features
    "ingest": 3,
    "report": 3,
    "tls": 3,
    "api": 3,
    "dashboard": 3,
    "imports": 3,
    # serving
    "serve": 4,
    # edge
    "cli": 5,
}
GROUND = 0


def unit_of(module: str) -> str:
    """ "picolytics.storage.writer" -> "storage"; "picolytics" -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    return module_name(path) if path.name == "__init__.py" else module_name(path.parent)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for every picolytics import in a module of `package`;
    `from picolytics import x` names the submodule x."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("picolytics")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "picolytics":
                found += [(node.lineno, _submodule_or_package(a.name)) for a in node.names]
            elif base.startswith("picolytics."):
                found.append((node.lineno, base))
    return found


def _submodule_or_package(name: str) -> str:
    is_module = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return f"picolytics.{name}" if is_module else "picolytics"


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in sources()}
    assert units <= set(LAYERS), (
        f"add these to LAYERS and docs/architecture.md: {units - set(LAYERS)}"
    )


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    importer = unit_of(module_name(path))
    wrong = []
    for line, module in imported_modules(path.read_text(encoding="utf-8"), package_of(path)):
        imported = unit_of(module)
        if imported == importer:
            continue
        higher = LAYERS[imported] > LAYERS[importer]
        sideways = LAYERS[imported] == LAYERS[importer] != GROUND
        if higher or sideways:
            wrong.append(f"line {line}: {module} ({imported}, layer {LAYERS[imported]})")
    assert not wrong, f"{importer} (layer {LAYERS[importer]}) imports upward or sideways: {wrong}"


def test_the_walk_sees_lazy_relative_and_package_imports() -> None:
    """The checker itself, so a blind walk cannot pass the test above."""
    source = (
        "from picolytics import __version__, events\n"
        "def f() -> None:\n"
        "    from picolytics.serve import app\n"
        "    from ..tls import store\n"
        "    from . import writer\n"
    )
    assert imported_modules(source, "picolytics.storage") == [
        (1, "picolytics"),
        (1, "picolytics.events"),
        (3, "picolytics.serve"),
        (4, "picolytics.tls"),
        (5, "picolytics.storage"),
    ]
