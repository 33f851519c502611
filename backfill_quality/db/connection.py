"""Connecting: the autocommit connection, password redaction, and library errors translated.

Every psycopg error that leaves the package goes through `_translate` / `_translated`
(`DatabaseError`, `retryable=True` when reconnecting and trying again may succeed) or `connect`
(`DatabaseError` or `ConfigError`); no message contains the password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from backfill_quality.errors import ConfigError, DatabaseError
from backfill_quality.redaction import has_unparsable_password, redact, register_database_secrets

_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(database_url: str) -> str:
    """The URL (URI or key=value form) with any password replaced by ***."""
    if "://" not in database_url:
        return _KV_PASSWORD.sub(r"\1***", database_url)
    parts = urlsplit(database_url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    netloc = f"{userinfo}{at}{hostport}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query, flags=re.IGNORECASE)
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"  # urlunsplit would drop an empty //


_FORMS = (  # (worded so that no redaction pattern matches it)
    "a URL such as postgresql://app@db.example.com:5432/prod (a password goes after the user "
    "name and a colon, percent-encoded; or in PGPASSWORD), or key=value pairs such as "
    "'host=db.example.com port=5432 dbname=prod user=app'"
)
_URL_SCHEMES = ("postgresql://", "postgres://")
_REFUSED_BEFORE_CONNECTING = re.compile(
    r"^(connection is bad: )?(invalid \S+ (value|number)|could not match \d+ \w+ \w+ to"
    r"|weak sslmode|require_auth|sslrootcert|invalid SSL protocol)"
)
"""libpq's messages about an option value it refused before any network traffic (bad port,
unknown sslmode, hosts and ports that do not pair up): a usage error, not a database failure."""


def _unusable(reason: str) -> ConfigError:
    return ConfigError(
        f"--database-url: not a usable connection string: {redact(reason)}. Expected {_FORMS};"
        " check DATABASE_URL / --database-url and the PG* environment variables"
    )


def _parse_problem(database_url: str, exc: psycopg.Error) -> str:
    """Why libpq could not parse the string, with the hint a user needs for its shape."""
    text = database_url.strip()
    detail = " ".join(str(exc).split())
    if "://" in text and not text.startswith(_URL_SCHEMES):
        return f"a URL must start with postgresql:// or postgres:// ({detail})"
    if "://" not in text and "=" not in text:
        return f"neither a URL nor key=value pairs ({detail})"
    return detail


def _check_ports(params: dict[str, Any]) -> None:
    port = params.get("port")
    source = "the port"
    if not port and os.environ.get("PGPORT"):
        port, source = os.environ["PGPORT"], "PGPORT"
    for piece in str(port or "").split(","):
        piece = piece.strip()
        if piece and not (piece.isdigit() and 1 <= int(piece) <= 65535):
            raise _unusable(f"{source} {piece!r} is not a number from 1 to 65535")


def check_connection_string(database_url: str) -> None:
    """Refuse a string libpq cannot use, before libpq sees it: ConfigError, never the password.

    Catches stray quotes, a URL password with a character that must be percent-encoded, what
    libpq's parser refuses (no scheme, a misspelt scheme or option, an unterminated quote), and a
    port that is not a number from 1 to 65535.
    """
    register_database_secrets(database_url)
    if database_url.strip()[:1] in ("'", '"'):
        raise _unusable(
            "it is wrapped in quotes, which are taken as part of it here (from a .env file or a "
            "quoted YAML value?): remove them"
        )
    if has_unparsable_password(database_url):
        raise _unusable(
            "its password holds '/', '?', '#' or '@', which must be percent-encoded in a URL "
            "(%2F, %3F, %23, %40); or give the password in PGPASSWORD"
        )
    try:
        params: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(database_url))
    except psycopg.Error as exc:
        raise _unusable(_parse_problem(database_url, exc)) from None
    _check_ports(params)


def _where(database_url: str) -> str:
    """host:port/dbname as libpq would resolve it, without the password."""
    try:
        params: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(database_url))
    except psycopg.Error:
        return "the --database-url given"
    host = str(params.get("host") or os.environ.get("PGHOST") or "local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or "(default)")
    return f"{host}:{port}/{dbname}"


def connect(
    database_url: str,
    *,
    application_name: str = "backfill-quality",
    connect_timeout_s: int = 10,
) -> psycopg.Connection[Any]:
    """An autocommit connection.

    A connection string that cannot be used (malformed, a bad port, an option libpq refuses)
    becomes ConfigError; an unreachable or refusing server DatabaseError(retryable=True). Neither
    message, nor the exception it chains, contains the password.
    """
    check_connection_string(database_url)
    try:
        return psycopg.connect(
            database_url,
            autocommit=True,
            application_name=application_name,
            connect_timeout=connect_timeout_s,
        )
    except psycopg.Error as exc:
        detail = redact(" ".join(str(exc).split()))
        error: DatabaseError | ConfigError
        if isinstance(exc, psycopg.OperationalError) and not _REFUSED_BEFORE_CONNECTING.search(
            detail
        ):
            error = DatabaseError(
                f"could not connect to the database at {_where(database_url)}: {detail}"
                " — check that it is up and reachable, and DATABASE_URL / --database-url or the"
                " PG* environment variables",
                retryable=True,
            )
        else:  # libpq refused an option before connecting: retrying cannot help
            error = _unusable(detail.removeprefix("connection is bad: "))
        cause = exc if redact(str(exc)) == str(exc) else None  # never chain an echoed secret
        raise error from cause


def describe_database(conn: psycopg.Connection[Any]) -> str:
    """'host:port/dbname', or 'socket DIR:port/dbname' for a Unix socket (no password)."""
    info = conn.info
    if info.host.startswith("/"):
        return f"socket {info.host}:{info.port}/{info.dbname}"
    return f"{info.host}:{info.port}/{info.dbname}"


def is_retryable(exc: psycopg.Error) -> bool:
    """True when a new connection / another attempt may succeed."""
    return isinstance(
        exc,
        psycopg.OperationalError | psycopg.InterfaceError | psycopg.errors.TransactionRollback,
    )


def _translate(exc: psycopg.Error, action: str) -> DatabaseError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_retryable(exc):
        return DatabaseError(
            f"database connection problem while {action}: {first_line}"
            " — the database may be restarting or unreachable; retry or check it is up",
            retryable=True,
        )
    return DatabaseError(
        f"database error while {action}: {first_line}"
        " — check --table / --id-column / --score-column and that `migrate` was run",
        retryable=False,
    )


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise _translate(exc, action) from exc


def _raw(
    conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, params: Sequence[Any]
) -> psycopg.RawCursor[Any]:
    """Execute with PostgreSQL's own $n placeholders: psycopg does not escape a '%' inside an
    sql.Identifier, so a '%'-style query breaks on a column named like "u%s"."""
    cur = psycopg.RawCursor(conn)
    cur.execute(query, params)
    return cur
