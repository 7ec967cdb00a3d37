"""The plain HTML of the login, setup and shared-link password pages, and the reading
of their form bodies.

Each page is one small, accessible form (labels, autocomplete hints, the error in a
`role="alert"` paragraph), with no script and one fixed style sheet allowed by its
hash in a strict Content-Security-Policy. Every page is sent with `FORM_HEADERS`: no
framing, no referrer (a setup link's token is in its URL), no caching.

A form body is `application/x-www-form-urlencoded` of at most `MAX_FORM_BYTES`: Starlette's
own form parser needs python-multipart, which is not a dependency, and these forms
need nothing but a few short fields.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from html import escape
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse

MAX_FORM_BYTES: Final = 16 * 1024
MAX_FIELDS: Final = 16
STYLE: Final = (
    "body{font:1rem/1.5 system-ui,sans-serif;max-width:26rem;margin:3rem auto;"
    "padding:0 1rem;color:#1a1a1a;background:#fff}"
    "label{display:block;margin-top:1rem;font-weight:600}"
    "input{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;"
    "border:1px solid #767676;border-radius:4px}"
    "button{margin-top:1.5rem;padding:.5rem 1.25rem;font:inherit}"
    ".hint{margin:.25rem 0 0;font-size:.875rem}"
    "[role=alert]{color:#b00020;font-weight:600}"
    "@media (prefers-color-scheme:dark){body{color:#eee;background:#121212}"
    "input{background:#1e1e1e;color:#eee;border-color:#999}[role=alert]{color:#ff8a80}}"
)
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
FORM_HEADERS: Final = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class FormRefused(Exception):  # noqa: N818 - an answer, not a failure
    """A form body that cannot be read: `status` and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form body (the first value of each name); an empty
    body, of any type, is a form without fields."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused(413, "The form is too large.")
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise FormRefused(415, "The form must be sent as application/x-www-form-urlencoded.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise FormRefused(400, "The form could not be read.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def page(
    title: str, body: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    """A whole HTML document around `body` (which must be escaped already)."""
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · picolytics</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )
    return HTMLResponse(document, status_code=status, headers={**FORM_HEADERS, **(headers or {})})


def alert(message: str | None) -> str:
    return f'<p role="alert" id="error">{escape(message)}</p>' if message else ""


def text_input(label: str, name: str, kind: str, autocomplete: str, value: str = "") -> str:
    hint = ""
    extra = ""
    if autocomplete == "new-password":
        hint = f'<p class="hint" id="{name}-hint">At least 10 characters.</p>'
        extra = f' minlength="10" aria-describedby="{name}-hint"'
    shown = f' value="{escape(value)}"' if value else ""
    return (
        f'<label for="{name}">{escape(label)}</label>'
        f'<input id="{name}" name="{name}" type="{kind}" autocomplete="{autocomplete}"'
        f" required{extra}{shown}>{hint}"
    )


def form(action: str, hidden: Mapping[str, str], inputs: list[str], button: str) -> str:
    fields = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in hidden.items()
    )
    return (
        f'<form method="post" action="{escape(action)}">{fields}{"".join(inputs)}'
        f'<button type="submit">{escape(button)}</button></form>'
    )


def seconds(count: int) -> str:
    return f"{count} second" + ("" if count == 1 else "s")


def message(text: str) -> str:
    return f"<p>{escape(text)}</p>"
