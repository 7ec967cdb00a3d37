from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.resources import assets_dir
from picolytics.serve.app import create_app


def client(config: Config) -> TestClient:
    return TestClient(create_app(config))


def test_root_answers_ok() -> None:
    response = client(Config()).get("/")
    assert response.status_code == 200
    assert response.text == "OK"


def test_root_redirects_when_configured() -> None:
    response = client(Config(root_redirect="https://example.com/home")).get(
        "/", follow_redirects=False
    )
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.com/home"


def test_robots_disallows_everything() -> None:
    response = client(Config()).get("/robots.txt")
    assert response.status_code == 200
    assert response.text == "User-agent: *\nDisallow: /\n"


def test_unknown_paths_are_404() -> None:
    test_client = client(Config())
    for path in ("/nothing", "/../pyproject.toml", "/%2e%2e/README.md", "/sql/0001_initial.sql"):
        assert test_client.get(path).status_code == 404, path


@pytest.mark.parametrize("name", ["pico.js", "pico.ext.js"])
def test_shipped_trackers_are_served_with_cache_headers(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./static folder here
    response = client(Config(static_cache_max_age=120)).get("/" + name)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=120"
    assert response.content == (assets_dir() / name).read_bytes()


def test_static_dir_replaces_the_shipped_files(tmp_path: Path) -> None:
    custom = tmp_path / "static"
    custom.mkdir()
    (custom / "pico.js").write_text("/* custom tracker */")
    (custom / "img").mkdir()
    (custom / "img" / "logo.svg").write_text("<svg/>")
    (custom / ".secret").write_text("hidden")
    test_client = client(Config(static_dir=str(custom)))
    assert test_client.get("/pico.js").text == "/* custom tracker */"
    svg = test_client.get("/img/logo.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.headers["cache-control"] == "public, max-age=3600"
    assert test_client.get("/.secret").status_code == 404


def test_missing_static_dir_falls_back_to_shipped_assets(tmp_path: Path) -> None:
    response = client(Config(static_dir=str(tmp_path / "absent"))).get("/pico.js")
    assert response.status_code == 200
