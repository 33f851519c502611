"""Connecting: the autocommit connection, password redaction, and library errors translated.

Every psycopg error that leaves the package goes through `_translate` / `_translated`
(`DatabaseError`, `retryable=True` when reconnecting and trying again may succeed) or `connect`
(`DatabaseError` or `ConfigError`); no message contains the password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from backfill_quality.errors import ConfigError, DatabaseError
from backfill_quality.redaction import has_unparsable_password

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


def _passwords(database_url: str) -> list[str]:
    """Every password the URL or the environment may hand to libpq (to scrub from messages)."""
    found = [os.environ.get("PGPASSWORD", "")]
    with suppress(psycopg.Error):
        found.append(str(psycopg.conninfo.conninfo_to_dict(database_url).get("password") or ""))
    if "://" in database_url:
        userinfo = urlsplit(database_url).netloc.rpartition("@")[0]
        found.append(userinfo.partition(":")[2])
    return [p for p in found if p]


def _scrub(message: str, database_url: str) -> str:
    for password in _passwords(database_url):
        message = message.replace(password, "***")
    return _KV_PASSWORD.sub(r"\1***", message)


def _where(database_url: str) -> str:
    """host:port/dbname as libpq would resolve it, without the password."""
    if has_unparsable_password(database_url):
        return "the --database-url given (its password must be percent-encoded)"
    try:
        params: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(database_url))
    except psycopg.Error:
        return redact_url(database_url) or "the default database"
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

    An unreachable server becomes DatabaseError(retryable=True), a malformed URL ConfigError;
    neither message contains the password.
    """
    try:
        return psycopg.connect(
            database_url,
            autocommit=True,
            application_name=application_name,
            connect_timeout=connect_timeout_s,
        )
    except psycopg.Error as exc:
        detail = _scrub(" ".join(str(exc).split()), database_url)
        if has_unparsable_password(database_url):  # libpq's message quotes pieces of it
            detail = "percent-encode '/', '?', '#', '@' and ':' in the password"
        message = (
            f"could not connect to the database at {_where(database_url)}: {detail}"
            " — check DATABASE_URL / --database-url or the PG* environment variables"
        )
        error: DatabaseError | ConfigError
        if isinstance(exc, psycopg.OperationalError):
            error = DatabaseError(message, retryable=True)
        else:  # a malformed URL or an unknown option: a usage error, retrying cannot help
            error = ConfigError(f"--database-url: {message}")
        if any(p in str(exc) for p in _passwords(database_url)):
            raise error from None  # the libpq message echoes the password: do not chain it
        raise error from exc


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
