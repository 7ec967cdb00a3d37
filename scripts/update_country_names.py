"""Refresh the English country names that the Stats API shows for `visit:country_name`.

Fetches the npm package `i18n-iso-countries` (MIT) with `npm pack` (the npm registry
is reachable from CI and developer machines), reads its `langs/en.json` (ISO 3166-1
alpha-2 code -> an English name, or a list of names: the official one first, then
aliases such as "United States" for "United States of America") and writes:

- src/picolytics/data/country_names.json  (the file api/v2_names.py loads)
- src/picolytics/data/LICENSE.i18n-iso-countries

The file maps each uppercase two-letter code to its names, the first being the one
shown; the API also accepts the others in `is`/`is_not` filters. A name that two codes
share ("Congo") stays with both: a filter on it selects both countries.

Usage: python scripts/update_country_names.py [--version X]
Then run `pytest tests/test_api_v2_country_names.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Run as `python scripts/...`, scripts/ is on sys.path; loaded by its path, it needs it.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from npm_package import packed, read_member, version_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DATA = ROOT / "src" / "picolytics" / "data"
PACKAGE = "i18n-iso-countries"


def names_of(countries: dict[str, str | list[str]]) -> dict[str, list[str]]:
    """Code -> names (the shown one first, no duplicates), for two-letter codes only."""
    found: dict[str, list[str]] = {}
    for key, value in sorted(countries.items()):
        code = key.strip().upper()
        if len(code) != 2 or not code.isascii() or not code.isalpha():
            continue
        names = [value] if isinstance(value, str) else list(value)
        found[code] = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    return found


def update(tarball: Path) -> int:
    """Write the names file and the licence; return the number of countries."""
    english = json.loads(read_member(tarball, "langs/en.json"))
    version = version_of(tarball)
    countries = names_of(english["countries"])
    shipped = {
        "source": f"https://www.npmjs.com/package/{PACKAGE}",
        "version": version,
        "license": "MIT",
        "countries": countries,
    }
    text = json.dumps(shipped, indent=0, ensure_ascii=False) + "\n"
    (PACKAGE_DATA / "country_names.json").write_text(text, encoding="utf-8")
    licence = read_member(tarball, "LICENSE")
    (PACKAGE_DATA / "LICENSE.i18n-iso-countries").write_bytes(licence)
    return len(countries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="latest")
    args = parser.parse_args()
    with packed(f"{PACKAGE}@{args.version}") as tarball:
        count = update(tarball)
    # A script's output is its report; logging setup would add nothing here.
    print(f"countries: {count}")


if __name__ == "__main__":
    main()
