"""Masking secrets in any text before it reaches a terminal, a log line, a file or a webhook.

Two nets, so that a password is masked whatever shape the text around it has, and whether or not
libpq (or this module) can parse the connection string it came from:

- patterns, for any text: `user:SECRET@host` — everything after `user:` up to the last `@` of the
  word, with or without a scheme (`postgresql://`, `postgresql//`, `postgresql:/`, `jdbc:…`,
  none) — and `password=SECRET` in any case and spacing, quoted or not (also `sslpassword=`,
  `PGPASSWORD=`, and `password=` in a URL query, which ends at the next `&`);
- literals: the secrets this process was given, registered once at start-up and replaced wherever
  they appear — the connection string's password as typed and percent-decoded, the pieces libpq
  may echo when it cuts an unescaped password apart, and PGPASSWORD.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

MASK = "***"
_MIN_SECRET_LEN = 3  # shorter "secrets" would mask ordinary words (the patterns still apply)
_DELIMITERS = r"\s:/@'\"`"
_USERINFO_HEAD = re.compile(  # `user:` after a scheme; or without, when not `scheme://host`
    rf"(?<![^{_DELIMITERS}])(?:[A-Za-z][A-Za-z0-9+.-]*+:/++[^{_DELIMITERS}]*+|[^{_DELIMITERS}]*+"
    r"(?=:(?!//))):"
)
"""Possessive and anchored at a delimiter, so a long URL costs linear time (it is redacted
on the event loop, in every log line and checkpoint save)."""
_WORD = re.compile(r"\S+")
_PASSWORD_KEY = r"(?i:\b\w*password|\bpasswd|\bpwd)"
_QUERY_PASSWORD = re.compile(rf"(?P<key>[?&]{_PASSWORD_KEY}=)(?P<secret>[^\s&]*)")
_KV_PASSWORD = re.compile(
    rf"(?<![?&])(?P<key>{_PASSWORD_KEY}\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|\S+)",
    re.DOTALL,
)
_KV_VALUE_END = re.compile(r"\s+\w+\s*=|$")  # where a value typed with blanks ends, roughly
_PIECE_SEPARATORS = re.compile(r"[\s/?#@:&='\"]+")
_MUST_ENCODE_IN_URL_PASSWORD = "/?#@"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` masks it wherever it appears."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _secrets.add(value)


def _unquoted(value: str) -> str:
    """A libpq key=value value without its quotes and backslash escapes."""
    if len(value) >= 1 and value[0] in "'\"":
        value = value[1:-1] if len(value) >= 2 and value[-1] == value[0] else value[1:]
        return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL)
    return value


def secrets_in(text: str) -> list[str]:
    """Every password-shaped value in `text`, as typed: the `user:SECRET@` of a URL-like word
    (up to its last '@'), `?password=SECRET`, and `password=SECRET` (quoted or not; an unquoted
    value runs on to the next `key=`, since a blank in it makes libpq echo the rest)."""
    found = [secret for word in _WORD.findall(text) if (secret := _userinfo_secret(word))]
    found += [unquote(match["secret"]) for match in _QUERY_PASSWORD.finditer(text)]
    for match in _KV_PASSWORD.finditer(text):
        value = match["secret"]
        if value[:1] not in "'\"":
            end = _KV_VALUE_END.search(text, match.start("secret"))
            value = text[match.start("secret") : end.start() if end else len(text)]
        found.append(_unquoted(value))
    return [secret for secret in found if secret]


def register_database_secrets(database_url: str) -> None:
    """Register the password of a connection string of any shape (parsed or not), and PGPASSWORD.

    A password with an unescaped '/', '?', '#' or '@' is cut into pieces by libpq's parser, which
    may echo them as host, port or database name: each piece is registered too.
    """
    register_secret(os.environ.get("PGPASSWORD"))
    for secret in secrets_in(database_url):
        for variant in {secret, unquote(secret)}:
            register_secret(variant)
            for piece in _PIECE_SEPARATORS.split(variant):
                register_secret(piece)


def raw_url_password(database_url: str) -> str | None:
    """The password of a `scheme://user:password@host/...` URL as typed, even when it holds an
    unescaped '/', '?', '#' or '@' that makes URL parsing miss it (a host cannot hold '@')."""
    _, sep, rest = database_url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def has_unparsable_password(database_url: str) -> bool:
    """Whether the URL's password holds a character that must be percent-encoded: libpq ends the
    user information at the first '@' or '/', and URL parsers at the first '/', '?' or '#'."""
    raw = raw_url_password(database_url)
    if raw is None:
        return False
    if any(char in raw for char in _MUST_ENCODE_IN_URL_PASSWORD):
        return True
    try:
        return urlsplit(database_url).password != raw
    except ValueError:
        return True


def _userinfo_span(word: str) -> tuple[int, int] | None:
    """Where the secret of `user:SECRET@` is in a word: after the first `user:` up to the
    word's last '@'."""
    last_at = word.rfind("@")
    head = _USERINFO_HEAD.search(word, 0, last_at) if last_at > 0 else None
    return (head.end(), last_at) if head else None


def _userinfo_secret(word: str) -> str:
    span = _userinfo_span(word)
    return word[span[0] : span[1]] if span else ""


def _mask_userinfo(match: re.Match[str]) -> str:
    word = match.group()
    span = _userinfo_span(word)
    return f"{word[: span[0]]}{MASK}{word[span[1] :]}" if span else word


def redact(text: str) -> str:
    """Mask every known secret and password-shaped fragment in `text`."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _WORD.sub(_mask_userinfo, text)
    text = _QUERY_PASSWORD.sub(rf"\g<key>{MASK}", text)
    return _KV_PASSWORD.sub(rf"\g<key>{MASK}", text)
