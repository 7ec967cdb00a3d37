"""Text from clients made safe to store and compare: one rule for every field, request
or lookup (`sanitize_text`), and one spelling of a site's domain (`normalise_domain`)."""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and every surrogate code point: in a Python str a
# surrogate can never be encoded as UTF-8 (json.loads already joins valid pairs into
# one code point, so whatever surrogate is left is a lone one).
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def sanitize_text(value: str, max_length: int) -> str:
    """Drop control characters and surrogates, trim whitespace, cut to max_length.

    Removed, not replaced: NUL and other C0 controls, DEL, C1 controls, and surrogate
    code points (none can be stored by PostgreSQL or encoded as UTF-8). Cutting counts
    code points; with surrogates gone a cut can never split a character's encoding
    (it may still split a multi-code-point grapheme such as a flag emoji).
    """
    if not value.isprintable():  # fast path: printable text has nothing to remove
        value = _UNSAFE_CHARS.sub("", value)
    value = value.strip()
    if len(value) > max_length:
        value = value[:max_length].rstrip()
    return value


def normalise_domain(name: str) -> str:
    """A domain spelt as sites.domain spells it: lowercase, IDNA, without "www." or a
    trailing dot. What cannot be IDNA-encoded is kept as typed (lowercased), so a
    lookup of it simply finds no site."""
    domain = name.strip().lower().rstrip(".").removeprefix("www.")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain
