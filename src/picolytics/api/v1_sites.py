"""`GET /api/v1/sites`: the sites an API key may read, as Plausible's Sites API lists
them (read-only; docs/api-v1.md).

`{"sites": [{"domain": ..., "timezone": ...}], "meta": {"after", "before", "limit"}}`,
in the order of their domains, a page of `limit` (1 to 100, default 100) at a time.
`after` and `before` are the opaque cursors of the previous answer's `meta` (null:
no page that way), as in Plausible's cursor pagination. A key limited to some sites
lists those of them that exist; a key of every site lists every site.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from picolytics.errors import ApiParamError
from picolytics.storage.api_keys import ApiKey

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 100
MAX_CURSOR: Final = 400  # characters: the base64 of a domain of at most 253
# Domains in byte order (COLLATE "C"), the order the cursors compare in.
_SCOPE: Final = "(%(every)s OR domain = ANY(%(domains)s::text[]))"
FORWARD: Final = f"""
SELECT domain, timezone FROM sites
WHERE {_SCOPE} AND (%(cursor)s::text IS NULL OR domain COLLATE "C" > %(cursor)s)
ORDER BY domain COLLATE "C" LIMIT %(limit)s
"""
BACKWARD: Final = f"""
SELECT domain, timezone FROM sites
WHERE {_SCOPE} AND domain COLLATE "C" < %(cursor)s
ORDER BY domain COLLATE "C" DESC LIMIT %(limit)s
"""


def encode_cursor(domain: str) -> str:
    return base64.urlsafe_b64encode(domain.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    invalid = ApiParamError("Invalid pagination cursor.")
    if len(cursor) > MAX_CURSOR:
        raise invalid
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        raise invalid from None
    if "\x00" in text:
        raise invalid
    return text


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiParamError(f"Please provide limit as a number between 1 and {MAX_LIMIT}.")
    return int(text)


async def list_sites(
    connection: AsyncConnection[Any], key: ApiKey, params: dict[str, str]
) -> dict[str, Any]:
    """One page of the key's sites, with Plausible's pagination `meta`."""
    limit = _limit(params.get("limit"))
    after, before = params.get("after") or None, params.get("before") or None
    if after is not None and before is not None:
        raise ApiParamError("Please provide either `after` or `before`, not both.")
    given = before if before is not None else after
    cursor = decode_cursor(given) if given is not None else None
    values = {
        "every": key.sites is None,
        "domains": list(key.sites or ()),
        "cursor": cursor,
        "limit": limit + 1,  # one more: is there a page beyond?
    }
    backward = before is not None
    found = connection.cursor(row_factory=tuple_row)
    await found.execute(BACKWARD if backward else FORWARD, values)
    rows = await found.fetchall()
    beyond = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
    sites = [{"domain": domain, "timezone": timezone} for domain, timezone in rows]
    first = encode_cursor(rows[0][0]) if rows else None
    last = encode_cursor(rows[-1][0]) if rows else None
    more_after = (not backward and beyond) or (backward and rows != [])
    more_before = (backward and beyond) or (not backward and cursor is not None and rows != [])
    return {
        "sites": sites,
        "meta": {
            "after": last if more_after else None,
            "before": first if more_before else None,
            "limit": limit,
        },
    }
