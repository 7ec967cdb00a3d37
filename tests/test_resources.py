"""sql/ and assets/ are found from the checkout (editable install) and from a wheel."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from picolytics.resources import assets_dir, sql_dir

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_finds_the_checkout_folders() -> None:
    assert sql_dir() == REPO / "sql"
    assert assets_dir() == REPO / "assets"
    assert (sql_dir() / "0001_initial.sql").is_file()
    assert (assets_dir() / "pico.js").is_file()


@pytest.mark.slow
def test_installed_wheel_carries_sql_and_assets(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("picolytics-*.whl")
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    # Install the wheel's files alone (no dependencies needed for this check).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from picolytics.resources import sql_dir, assets_dir;"
        "print(sql_dir()); print(assets_dir())"
    )
    output = subprocess.run(
        [str(python), "-c", probe, str(tmp_path / "site")],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.split()
    found_sql, found_assets = (Path(line) for line in output)
    assert found_sql == tmp_path / "site" / "picolytics" / "_data" / "sql"
    assert (found_sql / "0001_initial.sql").is_file()
    assert (found_assets / "pico.js").is_file()
    assert (found_assets / "pico.ext.js").is_file()
