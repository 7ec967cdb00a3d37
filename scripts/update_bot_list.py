"""Refresh the bot list shipped in the package and the snapshots the tests use.

Fetches the npm packages `crawler-user-agents` and `top-user-agents` with `npm pack`
(the npm registry is reachable from CI and developer machines) and writes:

- src/picolytics/data/crawler_patterns.json  (patterns only, plus version)
- src/picolytics/data/LICENSE.crawler-user-agents
- tests/data/crawler-user-agents.json        (full upstream file, with example instances)
- tests/data/LICENSE.crawler-user-agents
- tests/data/top-user-agents.json             (the top browser user agents)
- tests/data/LICENSE.top-user-agents

Usage: python scripts/update_bot_list.py [--crawler-version X] [--top-version Y]
Then run `pytest tests/test_enrich.py`: a new upstream pattern that flags a real
browser, or a pattern Python cannot compile, shows up there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Run as `python scripts/...`, scripts/ is on sys.path; a test that loads this file by
# its path needs it added, to find the sibling module npm_package.py.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from npm_package import packed, read_member, version_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DATA = ROOT / "src" / "picolytics" / "data"
TEST_DATA = ROOT / "tests" / "data"


def update_crawlers(tarball: Path) -> int:
    """Write the pattern list and the test snapshot; return the pattern count."""
    raw = read_member(tarball, "crawler-user-agents.json")
    version = version_of(tarball)
    entries = json.loads(raw)
    shipped = {
        "source": "https://www.npmjs.com/package/crawler-user-agents",
        "version": version,
        "license": "MIT",
        "patterns": [entry["pattern"] for entry in entries],
    }
    text = json.dumps(shipped, indent=1, ensure_ascii=False) + "\n"
    (PACKAGE_DATA / "crawler_patterns.json").write_text(text, encoding="utf-8")
    licence = read_member(tarball, "LICENSE")
    (PACKAGE_DATA / "LICENSE.crawler-user-agents").write_bytes(licence)
    (TEST_DATA / "LICENSE.crawler-user-agents").write_bytes(licence)
    (TEST_DATA / "crawler-user-agents.json").write_bytes(raw)
    return len(entries)


def update_top_agents(tarball: Path) -> int:
    """Write the top browser user agents snapshot; return how many there are."""
    raw = read_member(tarball, "src/index.json")
    (TEST_DATA / "top-user-agents.json").write_bytes(raw)
    (TEST_DATA / "LICENSE.top-user-agents").write_bytes(read_member(tarball, "LICENSE.md"))
    return len(json.loads(raw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crawler-version", default="latest")
    parser.add_argument("--top-version", default="latest")
    args = parser.parse_args()
    with packed(f"crawler-user-agents@{args.crawler_version}") as tarball:
        crawlers = update_crawlers(tarball)
    with packed(f"top-user-agents@{args.top_version}") as tarball:
        top = update_top_agents(tarball)
    # A script's output is its report; logging setup would add nothing here.
    print(f"crawler patterns: {crawlers}; top user agents: {top}")


if __name__ == "__main__":
    main()
