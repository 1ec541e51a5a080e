"""Secrets out of what autotune prints: the one masking function for storage URLs, used by
every message, table and page that shows one (`autotune.storage.shown`).

Plain string work, no SQLAlchemy: a URL that does not parse (a bad port, an ``@`` in the
password) is masked the same way as one that does, so nothing depends on the parser.
"""

from __future__ import annotations

import re

MASK = "***"
# ?password=... and the like in a query string (some drivers take credentials there).
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token|sslpassword)=)[^&#]*")


def masked_url(url: str) -> str:
    """`url` with its password (and any password in its query) replaced by ***.

    The user info ends at the last ``@`` of the authority, whatever the password holds
    (``user:p@ss@host`` is user ``user``, password ``p@ss``); SQLite URLs name a path,
    which may hold an ``@`` and no credentials."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().startswith("sqlite"):
        return _QUERY_SECRET.sub(rf"\1{MASK}", url)
    # The authority ends at the first '/', '?' or '#' after its last '@' (a password may
    # hold any of them before it).
    at = rest.rfind("@", 0, _authority_end(rest))
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        rest = f"{user}:{MASK}{rest[at:]}" if colon else rest
    return _QUERY_SECRET.sub(rf"\1{MASK}", f"{scheme}://{rest}")


def _authority_end(rest: str) -> int:
    at = rest.rfind("@")
    start = at + 1 if at >= 0 else 0
    ends = [i for i in (rest.find(c, start) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(rest)


def scrubbed(text: str, url: str) -> str:
    """`text` (e.g. a driver's error message) with `url`'s password masked wherever it
    appears, as the URL or on its own."""
    if not url:
        return text
    text = text.replace(url, masked_url(url))
    secret = password_of(url)
    return text.replace(secret, MASK) if secret else text


def password_of(url: str) -> str | None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().startswith("sqlite"):
        return None
    at = rest.rfind("@", 0, _authority_end(rest))
    if at < 0:
        return None
    _user, colon, password = rest[:at].partition(":")
    return password if colon and password else None


def ambiguous(url: str) -> bool:
    """Whether the URL's user info holds an unescaped ``@``: parsers then disagree where the
    password ends (SQLAlchemy ends it at the first, and would send the rest as the host
    name, printed in its errors)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower().startswith("sqlite"):
        return False
    return rest[: _authority_end(rest)].count("@") > 1
