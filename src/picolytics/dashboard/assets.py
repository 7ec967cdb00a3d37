"""The dashboard's script and style sheets, `dashboard/static/`, served from memory at
/dashboard/static/.

The folder ships inside the package (the wheel takes every file of it; the binary
gets it from build.spec's `datas`), so it is found with importlib.resources like
`picolytics/data/`. Only `.js` and `.css` files are served (not the vendored
READMEs and licences), read once at startup so that no request touches the disk or
can name a path outside the folder. Each answer has a strong ETag (a hash of the
bytes) and `Cache-Control: no-cache`: the browser keeps the files and asks again
with `If-None-Match`, answered 304, so a new version of picolytics is picked up at
the next page load without names that change.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger(__name__)

PREFIX: Final = "/dashboard/static/"
_TYPES: Final = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def static_dir() -> Path:
    """The shipped folder of the dashboard's static files."""
    folder = resources.files("picolytics.dashboard") / "static"
    return Path(str(folder))


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load(folder: Path) -> dict[str, Asset]:
    """URL path (under PREFIX) -> the file, for every .js and .css file of `folder`."""
    found: dict[str, Asset] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        kind = _TYPES.get(path.suffix)
        if kind is None or not path.is_file() or any(p.startswith(".") for p in relative.parts):
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[PREFIX + relative.as_posix()] = Asset(body, kind, etag)
    if PREFIX + "dashboard.js" not in found:  # a build that left the folder out
        log.error("dashboard: no static files in %s: the dashboard cannot draw", folder)
    return found


class StaticAssets:
    """GET /dashboard/static/{path}: one of the loaded files, or 404."""

    def __init__(self, folder: Path | None = None) -> None:
        self.files = load(folder or static_dir())

    def size(self) -> int:
        """The bytes of every file served (the page's budget counts them)."""
        return sum(len(asset.body) for asset in self.files.values())

    async def serve(self, request: Request) -> Response:
        asset = self.files.get(request.url.path)
        if asset is None:
            return PlainTextResponse("Not Found", status_code=404)
        headers = {**_HEADERS, "ETag": asset.etag}
        wanted = request.headers.get("if-none-match", "")
        if asset.etag in (tag.strip() for tag in wanted.split(",")):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
