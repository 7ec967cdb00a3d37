"""The committed trackers, assets/pico.js and assets/pico.ext.js: under budget, and fresh
builds of their sources."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
# The budgets the README promises: each file as served stays under its budget.
BUDGETS = {"pico.js": 1000, "pico.ext.js": 2000}
# Names the browser and the server rely on, which must survive minification.
CORE_NAMES = ('"/p"', "sendBeacon", "keepalive", "self.pico", "dataset.ping", '"nav"', "p:")
EXTENSION_NAMES = ('"auxclick"', '"outbound"', '"download"', ".outbound", ".downloads")


def load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_tracker", ROOT / "scripts" / "build_tracker.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build_script() -> ModuleType:
    return load_build_script()


@pytest.fixture
def assets_copy(build_script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The build script pointed at a copy of the committed assets."""
    folder = tmp_path / "assets"
    folder.mkdir()
    for name in BUDGETS:
        shutil.copy(ASSETS / name, folder / name)
    monkeypatch.setattr(build_script, "ASSETS", folder)
    return folder


@pytest.mark.parametrize("name", BUDGETS)
def test_committed_tracker_is_under_budget(name: str) -> None:
    data = (ASSETS / name).read_bytes()
    gzipped = len(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"assets/{name}: {len(data)} bytes, {gzipped} bytes gzipped")
    assert len(data) < BUDGETS[name], f"assets/{name} is {len(data)} bytes"
    assert 0 < gzipped < len(data)


@pytest.mark.parametrize("name", BUDGETS)
def test_committed_tracker_equals_a_fresh_build(build_script: ModuleType, name: str) -> None:
    assert build_script.BUDGETS == BUDGETS
    assert (ASSETS / name).read_bytes() == build_script.build(name), (
        f"assets/{name} is stale: run `make tracker` and commit the result"
    )


def test_build_script_check_mode_passes(
    build_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_script.main(["--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["assets/pico.js", "assets/pico.ext.js"]
    assert all("bytes gzipped" in line for line in lines)


@pytest.mark.parametrize("name", BUDGETS)
def test_build_script_check_mode_fails_on_a_stale_file(
    build_script: ModuleType, assets_copy: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = assets_copy / name
    stale.write_bytes(stale.read_bytes() + b"// stale\n")
    assert build_script.main(["--check"]) == 1
    assert f"assets/{name} is stale" in capsys.readouterr().err
    assert stale.read_bytes().endswith(b"// stale\n")  # --check never writes


def test_build_script_check_mode_fails_on_a_missing_file(
    build_script: ModuleType, assets_copy: Path
) -> None:
    (assets_copy / "pico.ext.js").unlink()
    assert build_script.main(["--check"]) == 1


def test_build_script_writes_both_files(build_script: ModuleType, assets_copy: Path) -> None:
    for name in BUDGETS:
        (assets_copy / name).unlink()
    assert build_script.main([]) == 0
    for name in BUDGETS:
        assert (assets_copy / name).read_bytes() == (ASSETS / name).read_bytes()


def test_build_script_refuses_a_file_over_budget(
    build_script: ModuleType,
    assets_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (assets_copy / "pico.ext.js").unlink()
    monkeypatch.setattr(build_script, "BUDGETS", {"pico.js": 1000, "pico.ext.js": 1000})
    assert build_script.main([]) == 1
    assert "assets/pico.ext.js must stay under 1000 bytes" in capsys.readouterr().err
    assert not (assets_copy / "pico.ext.js").exists()  # nothing over budget is written


def test_source_without_the_marker_is_an_error(
    build_script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "pico.src.js"
    source.write_text(build_script.SOURCE.read_text().replace(build_script.MARKER, ""))
    monkeypatch.setattr(build_script, "SOURCE", source)
    with pytest.raises(ValueError, match="marker"):
        build_script.build("pico.ext.js")


def test_minified_trackers_are_valid_es5_and_keep_their_contract(
    build_script: ModuleType,
) -> None:
    plain = (ASSETS / "pico.js").read_text(encoding="utf-8")
    extended = (ASSETS / "pico.ext.js").read_text(encoding="utf-8")
    for text in (plain, extended):
        build_script.es5(text)  # parses, or raises
        for kept in CORE_NAMES:
            assert kept in text, kept
        assert "localStorage" not in text and "sessionStorage" not in text
        assert "cookie" not in text
    for kept in EXTENSION_NAMES:
        assert kept in extended, kept
        assert kept not in plain, kept  # pico.js carries none of the extensions


def test_build_script_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_tracker.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("assets/pico.js: ")
    assert "\nassets/pico.ext.js: " in result.stdout
