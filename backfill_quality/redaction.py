"""Masking secrets in any text before it reaches a terminal, a log line or a file.

Two nets: patterns (`scheme://user:secret@`, `password=secret`), and the literal secrets this
process knows of (the password of the database URL, PGPASSWORD), registered once at start-up.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

MASK = "***"
_MIN_SECRET_LEN = 3  # shorter "secrets" would mask ordinary words
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*):[^/@\s]*@")
_KV_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` masks it wherever it appears."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _secrets.add(value)


def raw_url_password(database_url: str) -> str | None:
    """The password of a `scheme://user:password@host/...` URL as typed, even when it holds an
    unescaped '/', '?' or '#' that makes standard URL parsing miss it (hosts cannot hold '@')."""
    _, sep, rest = database_url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def has_unparsable_password(database_url: str) -> bool:
    """Whether the URL's password holds a character that must be percent-encoded."""
    raw = raw_url_password(database_url)
    try:
        parsed = urlsplit(database_url).password
    except ValueError:
        parsed = None
    return raw is not None and parsed != raw


def register_database_secrets(database_url: str) -> None:
    """Register the password of a libpq URL or key=value string, and PGPASSWORD.

    A password with an unescaped '/', '?' or '#' is cut into pieces by libpq's parser, which may
    echo them as host, port or database name: each piece is registered too.
    """
    register_secret(os.environ.get("PGPASSWORD"))
    if "://" in database_url:
        password = raw_url_password(database_url)
        if password:
            register_secret(password)
            register_secret(unquote(password))
            for piece in re.split(r"[/?#@:]", password):
                register_secret(piece)
    for match in _KV_PASSWORD.finditer(database_url):
        register_secret(match.group(2).strip("'"))


def redact(text: str) -> str:
    """Mask every known secret and password-shaped fragment in `text`."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(rf"\g<scheme>\g<user>:{MASK}@", text)
    return _KV_PASSWORD.sub(rf"\1={MASK}", text)
