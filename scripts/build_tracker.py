"""Minify the tracker into assets/pico.js and assets/pico.ext.js (`make tracker`).

    python scripts/build_tracker.py          # write both files, print their sizes
    python scripts/build_tracker.py --check  # exit 1 if either is stale or too big

assets/pico.js is tracker/pico.src.js. assets/pico.ext.js is the same source with
tracker/pico.ext.src.js (opt-in outbound-link and download events) put in place of
the MARKER comment, so both scripts share one core and the plain one carries none of
the extensions.

The minifier is calmjs.parse (pure Python, an ES5 parser and printer that also renames
local variables), so the build needs no Node.js and gives the same bytes on every
machine with the same calmjs.parse release. The budgets are for the files as served;
the gzip sizes are printed for the README.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

# calmjs.parse is a development dependency (pyproject's dev extra); it has no type hints.
from calmjs.parse import es5  # type: ignore[import-untyped]
from calmjs.parse.unparsers.es5 import minify_print  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tracker" / "pico.src.js"
EXTENSION = ROOT / "tracker" / "pico.ext.src.js"
ASSETS = ROOT / "assets"
MARKER = "/* pico.ext.src.js */"
# Output file name -> budget in bytes; the file must stay under it.
BUDGETS = {"pico.js": 1000, "pico.ext.js": 2000}


def minify(source: str) -> str:
    """The minified tracker, ending in one newline."""
    program = es5(source)
    # obfuscate renames locals only: the tracker's globals (window.pico) keep their names.
    text: str = minify_print(program, obfuscate=True, shadow_funcname=True, drop_semi=True)
    return text + "\n"


def gzip_size(data: bytes) -> int:
    """Bytes on the wire when served gzip-compressed (level 9, no timestamp)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def source(name: str) -> str:
    """The unminified source of assets/<name>."""
    core = SOURCE.read_text(encoding="utf-8")
    if core.count(MARKER) != 1:
        raise ValueError(f"{SOURCE.name} must hold the marker {MARKER} exactly once")
    # The marker is a comment, which the minifier drops anyway from pico.js.
    extension = EXTENSION.read_text(encoding="utf-8") if name == "pico.ext.js" else ""
    return core.replace(MARKER, extension)


def build(name: str = "pico.js") -> bytes:
    return minify(source(name)).encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; fail if a file is stale or too big"
    )
    args = parser.parse_args(argv)

    status = 0
    for name, budget in BUDGETS.items():
        data = build(name)
        output = ASSETS / name
        print(
            f"assets/{name}: {len(data)} bytes, {gzip_size(data)} bytes gzipped (budget {budget})"
        )
        if len(data) >= budget:
            print(f"error: assets/{name} must stay under {budget} bytes", file=sys.stderr)
            status = 1
        elif not args.check:
            output.write_bytes(data)
        elif not output.is_file() or output.read_bytes() != data:
            print(f"error: assets/{name} is stale; run `make tracker`", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
