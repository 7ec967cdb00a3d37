"""Static files (pico.js and friends): the shipped assets, or STATIC_DIR when it exists."""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from picolytics.resources import assets_dir

log = logging.getLogger(__name__)

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


def choose_static_dir(static_dir: str) -> Path:
    """STATIC_DIR replaces the built-in files when that folder exists (a custom tracker)."""
    custom = Path(static_dir)
    if static_dir and custom.is_dir():
        log.info("serving static files from %s", custom.resolve())
        return custom
    return assets_dir()


def index_files(folder: Path) -> dict[str, Path]:
    """URL path -> file, fixed at startup so no request can reach outside the folder."""
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files["/" + relative.as_posix()] = path
    return files


class StaticFiles:
    def __init__(self, folder: Path, max_age: int) -> None:
        self.files = index_files(folder)
        self.cache_control = f"public, max-age={max_age}"

    async def serve(self, request: Request) -> Response:
        path = self.files.get(request.url.path)
        if path is None:
            return PlainTextResponse("Not Found", status_code=404)
        content_type = _CONTENT_TYPES.get(path.suffix) or (
            mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        return FileResponse(
            path, media_type=content_type, headers={"Cache-Control": self.cache_control}
        )
