"""The committed tracker, assets/pico.js: under budget, and a fresh build of its source."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "assets" / "pico.js"
BUDGET_BYTES = 1000


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


def test_committed_tracker_is_under_1000_bytes() -> None:
    size = len(COMMITTED.read_bytes())
    assert size < BUDGET_BYTES, f"assets/pico.js is {size} bytes; the budget is {BUDGET_BYTES}"


def test_committed_tracker_gzipped_is_under_1000_bytes() -> None:
    data = COMMITTED.read_bytes()
    gzipped = len(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"assets/pico.js: {len(data)} bytes, {gzipped} bytes gzipped")
    assert 0 < gzipped < BUDGET_BYTES


def test_committed_tracker_equals_a_fresh_build(build_script: ModuleType) -> None:
    assert COMMITTED.read_bytes() == build_script.build(), (
        "assets/pico.js is stale: run `make tracker` and commit the result"
    )


def test_build_script_check_mode_passes(
    build_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_script.main(["--check"]) == 0
    assert "bytes gzipped" in capsys.readouterr().out


def test_build_script_check_mode_fails_on_a_stale_file(
    build_script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stale = tmp_path / "pico.js"
    stale.write_bytes(COMMITTED.read_bytes() + b"// stale\n")
    monkeypatch.setattr(build_script, "OUTPUT", stale)
    monkeypatch.setattr(build_script, "ROOT", tmp_path)
    assert build_script.main(["--check"]) == 1
    assert stale.read_bytes().endswith(b"// stale\n")  # --check never writes


def test_minified_tracker_is_valid_es5_and_keeps_its_contract(build_script: ModuleType) -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    build_script.es5(text)  # parses, or raises
    # Names the browser and the server rely on must survive minification.
    for kept in ('"/p"', "sendBeacon", "keepalive", "self.pico", "dataset.ping", '"nav"'):
        assert kept in text, kept
    assert "localStorage" not in text and "sessionStorage" not in text
    assert "cookie" not in text


def test_build_script_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_tracker.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("assets/pico.js: ")
