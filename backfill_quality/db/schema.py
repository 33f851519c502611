"""The target table: quoted names, finding it (through the search_path), column checks."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _translated, describe_database
from backfill_quality.errors import ConfigError

INTEGER_ID_TYPES = frozenset({"smallint", "integer", "bigint"})
TEXT_ID_TYPES = frozenset({"text", "character varying"})
SUPPORTED_ID_TYPES = INTEGER_ID_TYPES | TEXT_ID_TYPES | {"uuid"}
SCORE_TYPES = frozenset({"smallint", "integer", "bigint"})
URL_TYPES = frozenset({"text", "character varying", "character"})


# --- the target table --------------------------------------------------------------------------


def _table(target: Target) -> sql.Identifier:
    if target.schema:
        return sql.Identifier(target.schema, target.table)
    return sql.Identifier(target.table)


def _table_label(target: Target) -> str:
    return target.label


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


def _find_table(
    conn: psycopg.Connection[Any], target: Target, *, from_migrate: bool = False
) -> int:
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
            f" {describe_database(conn)} (tables found: {existing}){_elsewhere_hint(conn, target)};"
            + (
                " check --table (migrate creates only the demo's `images`, when no --table is"
                " given)"
                if from_migrate
                else " check --table, or run `backfill-quality migrate` to create the default"
                " `images` table"
            )
        )
    return int(row[0])


def tables_named_elsewhere(conn: psycopg.Connection[Any], target: Target) -> list[str]:
    """Tables of the target's name (any case) in schemas the name did not reach, as
    `schema.table` labels: the user's table may be there, off the search_path."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND lower(c.relname) = lower(%s)"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND (%s::text IS NULL OR n.nspname <> %s OR c.relname <> %s)"
        " ORDER BY 1, 2 LIMIT 5",
        (target.table, target.schema, target.schema, target.table),
    ).fetchall()
    return [Target(table=table, schema=schema).label for schema, table in rows]


def _elsewhere_hint(conn: psycopg.Connection[Any], target: Target) -> str:
    if target.schema:  # `--table a.b` for a table named "a.b"?
        dotted = Target(table=f"{target.schema}.{target.table}")
        if len(dotted.table.encode()) <= 63 and conn.execute(
            "SELECT to_regclass(%s)", (_table(dotted).as_string(conn),)
        ).fetchone() != (None,):
            return (
                f"; a table named {dotted.label} exists: double-quote it, --table '{dotted.label}'"
            )
    found = tables_named_elsewhere(conn, target)
    if not found:
        return ""
    options = " or ".join(f"--table {label}" for label in found)
    return f"; found {', '.join(found)}, not on the search_path: use {options}"


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
