"""Minify tracker/pico.src.js into assets/pico.js and print its size (`make tracker`).

    python scripts/build_tracker.py          # write assets/pico.js
    python scripts/build_tracker.py --check  # exit 1 if assets/pico.js is stale or too big

The minifier is calmjs.parse (pure Python, an ES5 parser and printer that also renames
local variables), so the build needs no Node.js and gives the same bytes on every
machine with the same calmjs.parse release. The budget is 1000 bytes for the file as
served; the gzip size is printed for the README.
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
OUTPUT = ROOT / "assets" / "pico.js"
BUDGET_BYTES = 1000


def minify(source: str) -> str:
    """The minified tracker, ending in one newline."""
    program = es5(source)
    # obfuscate renames locals only: the tracker's globals (window.pico) keep their names.
    text: str = minify_print(program, obfuscate=True, shadow_funcname=True, drop_semi=True)
    return text + "\n"


def gzip_size(data: bytes) -> int:
    """Bytes on the wire when served gzip-compressed (level 9, no timestamp)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def build() -> bytes:
    return minify(SOURCE.read_text(encoding="utf-8")).encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; fail if assets/pico.js is stale"
    )
    args = parser.parse_args(argv)

    data = build()
    name = OUTPUT.relative_to(ROOT)
    print(f"{name}: {len(data)} bytes, {gzip_size(data)} bytes gzipped (budget {BUDGET_BYTES})")
    if len(data) >= BUDGET_BYTES:
        print(f"error: {name} must stay under {BUDGET_BYTES} bytes", file=sys.stderr)
        return 1
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_bytes() != data:
            print(f"error: {name} is stale; run `make tracker`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
