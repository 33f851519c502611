"""The target table and the tool's own schema: quoted names, column checks, migrations."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _translate, _translated, describe_database
from backfill_quality.db.migration_files import migration_files, split_statements
from backfill_quality.errors import ConfigError, DatabaseError

INTEGER_ID_TYPES = frozenset({"smallint", "integer", "bigint"})
TEXT_ID_TYPES = frozenset({"text", "character varying"})
SUPPORTED_ID_TYPES = INTEGER_ID_TYPES | TEXT_ID_TYPES | {"uuid"}
SCORE_TYPES = frozenset({"smallint", "integer", "bigint"})
URL_TYPES = frozenset({"text", "character varying", "character"})
MIGRATIONS_TABLE = "backfill_quality_migrations"
MIGRATIONS_LOCK_KEY = 0x6266_7175_616C  # pg_advisory_lock key: two `migrate` runs never race
LOCK_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
"""Pauses before running a migration file again after a statement gave up waiting for a lock
(2 s each time): about half a minute in all for another session's transaction to end."""


# --- the target table --------------------------------------------------------------------------


def _table(target: Target) -> sql.Identifier:
    if target.schema:
        return sql.Identifier(target.schema, target.table)
    return sql.Identifier(target.table)


def _table_label(target: Target) -> str:
    return f"{target.schema}.{target.table}" if target.schema else target.table


def _columns(conn: psycopg.Connection[Any], table_oid: int) -> dict[str, tuple[int, str]]:
    rows = conn.execute(
        "SELECT attname, attnum, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table_oid,),
    ).fetchall()
    return {name: (num, type_name) for name, num, type_name in rows}


def _is_unique_column(conn: psycopg.Connection[Any], table_oid: int, attnum: int) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %s AND indisunique"
        " AND indisvalid AND indnkeyatts = 1 AND indkey[0] = %s AND indpred IS NULL"
        " AND indexprs IS NULL)",
        (table_oid, attnum),
    ).fetchone()
    return bool(row and row[0])


def _find_table(conn: psycopg.Connection[Any], target: Target) -> int:
    qualified = _table(target).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s)::oid", (qualified,)).fetchone()
    if row is None or row[0] is None:
        names = conn.execute(
            "SELECT string_agg(quote_ident(relname), ', ' ORDER BY relname) FROM"
            " (SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY c.relname LIMIT 20) t"
        ).fetchone()
        existing = names[0] if names and names[0] else "none"
        raise ConfigError(
            f"--table: table {_table_label(target)!r} does not exist in"
            f" {describe_database(conn)} (tables found: {existing}); check --table,"
            " or run `backfill-quality migrate` to create the default `images` table"
        )
    return int(row[0])


def _require_column(
    columns: dict[str, tuple[int, str]], name: str, option: str, target: Target
) -> tuple[int, str]:
    if name not in columns:
        raise ConfigError(
            f"{option}: column {name!r} does not exist in table {_table_label(target)!r}"
            f" (columns: {', '.join(columns) or 'none'})"
        )
    return columns[name]


def check_target(conn: psycopg.Connection[Any], target: Target) -> str:
    """Verify table and columns; return the id column's type name ('uuid', 'integer', …)."""
    with _translated(f"checking table {_table_label(target)!r}"):
        table_oid = _find_table(conn, target)
        columns = _columns(conn, table_oid)
        id_num, id_type = _require_column(columns, target.id_column, "--id-column", target)
        _, url_type = _require_column(columns, target.url_column, "--url-column", target)
        _, score_type = _require_column(columns, target.score_column, "--score-column", target)
        is_unique = _is_unique_column(conn, table_oid, id_num)
    if id_type not in SUPPORTED_ID_TYPES:
        raise ConfigError(
            f"--id-column: column {target.id_column!r} has type {id_type}; supported key types"
            f" are {', '.join(sorted(SUPPORTED_ID_TYPES))}"
        )
    if not is_unique:
        raise ConfigError(
            f"--id-column: column {target.id_column!r} is not a primary key or unique column of"
            f" {_table_label(target)!r}; keyset paging needs a unique key"
        )
    if score_type not in SCORE_TYPES:
        raise ConfigError(
            f"--score-column: column {target.score_column!r} has type {score_type};"
            " it must be an integer column (run `backfill-quality migrate` for the default)"
        )
    if url_type not in URL_TYPES:
        raise ConfigError(
            f"--url-column: column {target.url_column!r} has type {url_type}; it must be text"
        )
    return id_type


# --- migrations --------------------------------------------------------------------------------


def applied_migrations(conn: psycopg.Connection[Any]) -> set[str]:
    """Names recorded in the migrations table (created if absent)."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(MIGRATIONS_TABLE))
    )
    rows = conn.execute(sql.SQL("SELECT name FROM {}").format(sql.Identifier(MIGRATIONS_TABLE)))
    return {str(name) for (name,) in rows.fetchall()}


class _LockWaitExpired(Exception):
    """A migration statement gave up waiting for its lock (the file's lock_timeout)."""


def _apply_migration(conn: psycopg.Connection[Any], name: str, script: str) -> None:
    for statement in split_statements(script):
        try:
            conn.execute(statement.encode())  # bytes: the SQL text is sent as is (no % params)
        except psycopg.errors.LockNotAvailable as exc:
            raise _LockWaitExpired(name) from exc
        except psycopg.Error as exc:
            error = _translate(exc, f"applying migration {name}")
            raise DatabaseError(
                f"{error} (the migration is idempotent: fix the cause and run `migrate` again)",
                retryable=error.retryable,
            ) from exc
    conn.execute(
        "INSERT INTO backfill_quality_migrations (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
        (name,),
    )


def _apply_with_retries(
    conn: psycopg.Connection[Any],
    name: str,
    script: str,
    delays_s: Sequence[float],
    on_lock_wait: Callable[[str], None],
) -> None:
    """Apply one file; when a statement gives up waiting for a lock, pause and run the whole
    file again (its statements are idempotent), at most len(delays_s) more times."""
    for attempt, delay_s in enumerate((*delays_s, None), start=1):
        try:
            _apply_migration(conn, name, script)
            return
        except _LockWaitExpired as exc:
            if delay_s is None:
                raise DatabaseError(
                    f"applying migration {name}: the table stayed locked by another session "
                    f"({len(delays_s) + 1} tries, each waiting briefly so as not to hold up its "
                    "queries); run `migrate` again once that session's long transaction has ended",
                    retryable=True,
                ) from exc.__cause__
            on_lock_wait(
                f"{name}: the table is locked by another session; trying again in {delay_s:g}s"
                f" (attempt {attempt + 1} of {len(delays_s) + 1})"
            )
            time.sleep(delay_s)


def apply_migrations(
    conn: psycopg.Connection[Any],
    *,
    lock_retry_delays_s: Sequence[float] = LOCK_RETRY_DELAYS_S,
    on_lock_wait: Callable[[str], None] = lambda message: None,
) -> list[str]:
    """Apply pending migration files in order, each statement in autocommit; return their names.

    A file is recorded only once all its statements succeeded, so an interrupted run (say
    during CREATE INDEX CONCURRENTLY) re-runs the whole file, which cleans up after itself.
    Statements that need a strong lock wait for it at most 2 s (each file's lock_timeout): a
    statement queued for such a lock holds up every query behind it. The file is then tried
    again after each of `lock_retry_delays_s`, and `on_lock_wait` is told so.
    """
    if not conn.autocommit:
        raise DatabaseError("apply_migrations needs an autocommit connection (use db.connect)")
    applied: list[str] = []
    with _translated("preparing the migrations"):
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,))
    try:
        with _translated("reading the applied migrations"):
            done = applied_migrations(conn)
        for name, script in migration_files():
            if name not in done:
                _apply_with_retries(conn, name, script, lock_retry_delays_s, on_lock_wait)
                applied.append(name)
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))
    return applied
