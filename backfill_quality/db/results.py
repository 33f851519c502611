"""The results table: what each score was made of, one row per scored image, beside the table.

`<table>_quality_results` (same schema) is keyed by `image_id`, the image's key in its own type,
with `ON DELETE CASCADE` from the user's table. It stores the keys of `results.RESULT_KEYS` (the
`score --json` record): scalars in typed columns, `subject` and `checks` in jsonb, and each
check's score and passed again as typed columns generated from `checks` (`bird_size_score`,
`bird_size_passed`, …) so trends and rescoring filter and aggregate them without jsonb.

`plan_results_table` is the step `results-table` of `migrate` (db/migrate.py `STEPS`);
`write_score_results` (writes.py) fills the table in the same statement as the score's UPDATE.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from backfill_quality.config import Target
from backfill_quality.db.connection import _raw, _translated
from backfill_quality.db.migration_steps import Batch, StepPlan, Subject, lock_timeout
from backfill_quality.db.schema import SUPPORTED_ID_TYPES, _columns, _is_unique_column, _table
from backfill_quality.errors import ConfigError
from backfill_quality.models import RowId
from backfill_quality.results import CHECK_NAMES, RESULT_KEYS

RESULTS_SUFFIX = "_quality_results"
KEY_COLUMN = "image_id"
MAX_IDENTIFIER_BYTES = 63

# result key -> (column, type); the order of RESULT_KEYS
COLUMNS: dict[str, tuple[str, str]] = {
    "source": ("source", "text NOT NULL"),
    "width": ("width", "integer NOT NULL"),
    "height": ("height", "integer NOT NULL"),
    "score": ("score", "smallint NOT NULL CHECK (score BETWEEN 0 AND 100)"),
    "category": ("category", "text NOT NULL CHECK (category IN ('high', 'medium', 'low'))"),
    "brightness": ("brightness", "double precision NOT NULL"),
    "detector": ("detector", "text NOT NULL"),
    "presence": ("presence", "double precision"),
    "subject": ("subject", "jsonb"),
    "checks": ("checks", "jsonb NOT NULL"),
    "bytes": ("bytes", "bigint NOT NULL"),
    "contentSha256": ("content_sha256", "text NOT NULL"),
    "etag": ("etag", "text"),
    "lastModified": ("last_modified", "text"),
    "scorerVersion": ("scorer_version", "text NOT NULL"),
    "measurementVersion": ("measurement_version", "text"),
    "scoredAt": ("scored_at", "timestamptz NOT NULL DEFAULT now()"),
    "fetchMs": ("fetch_ms", "double precision"),
    "scoreMs": ("score_ms", "double precision"),
}
JSONB_KEYS = frozenset({"subject", "checks"})
ADDED_COLUMNS = ("measurement_version",)
"""Columns added since the first results tables: step `results-table` adds them when missing
(nullable, no default: a change of the catalog only, no rewrite)."""
INDEXED_COLUMNS = (
    ("scorer_version",),
    ("scored_at",),
    ("category",),
    ("content_sha256", "scorer_version"),
)
"""Rescoring finds stale versions and reuses results by content hash; trends group by time and
category."""


def check_column(check: str, part: Literal["score", "passed"]) -> str:
    """'birdSize', 'score' -> 'bird_size_score' (a generated column)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", check).lower() + f"_{part}"


def _short(name: str, suffix: str) -> str:
    """`name + suffix`, within PostgreSQL's 63 bytes: a long name is cut and given a hash of
    the whole, so two long table names never share a results table."""
    whole = name + suffix
    if len(whole.encode()) <= MAX_IDENTIFIER_BYTES:
        return whole
    tag = "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len((tag + suffix).encode())
    cut = name.encode()[:room].decode(errors="ignore")
    return cut + tag + suffix


def results_table_name(target: Target) -> str:
    """The results table's name (without schema): `<table>_quality_results`."""
    return _short(target.table, RESULTS_SUFFIX)


def _results(target: Target) -> sql.Identifier:
    name = results_table_name(target)
    return sql.Identifier(target.schema, name) if target.schema else sql.Identifier(name)


def results_label(target: Target) -> str:
    """The results table's name as the user writes it (quoted where SQL needs it)."""
    return Target(table=results_table_name(target), schema=target.schema).label


# --- the migration step ------------------------------------------------------------------------


def _key_type(conn: psycopg.Connection[Any], subject: Subject) -> str:
    """The id column's exact type (with its length, e.g. character varying(40)), checked; the
    demo's table that step `table` is about to create has a uuid key."""
    target = subject.target
    if subject.table_oid is None:
        return "uuid"
    columns = _columns(conn, subject.table_oid)
    if target.id_column not in columns:
        raise ConfigError(
            f"--id-column: column {target.id_column!r} does not exist in table"
            f" {subject.label!r} (columns: {', '.join(columns) or 'none'})"
        )
    attnum, type_name = columns[target.id_column]
    if type_name not in SUPPORTED_ID_TYPES:
        raise ConfigError(
            f"--id-column: column {target.id_column!r} has type {type_name}; supported key types"
            f" are {', '.join(sorted(SUPPORTED_ID_TYPES))}"
        )
    if not _is_unique_column(conn, subject.table_oid, attnum):
        raise ConfigError(
            f"--id-column: column {target.id_column!r} is not a primary key or unique column of"
            f" {subject.label!r}; the results table references it"
        )
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s AND attnum = %s",
        (subject.table_oid, attnum),
    ).fetchone()
    return str(row[0]) if row else type_name


def create_statements(target: Target, key_type: str) -> list[sql.Composed]:
    """CREATE TABLE and CREATE INDEX … IF NOT EXISTS for the target's results table."""
    results = _results(target)
    name = results_table_name(target)
    columns = [
        sql.SQL("{} {} PRIMARY KEY REFERENCES {} ({}) ON DELETE CASCADE ON UPDATE CASCADE").format(
            sql.Identifier(KEY_COLUMN),
            sql.SQL(key_type),
            _table(target),
            sql.Identifier(target.id_column),
        )
    ]
    columns += [
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(declaration))
        for column, declaration in COLUMNS.values()
    ]
    for check in CHECK_NAMES:
        parts: tuple[tuple[Literal["score", "passed"], str], ...] = (
            ("score", "smallint"),
            ("passed", "boolean"),
        )
        for part, cast in parts:
            columns.append(
                sql.SQL("{} {} GENERATED ALWAYS AS ((checks -> {} ->> {})::{}) STORED").format(
                    sql.Identifier(check_column(check, part)),
                    sql.SQL(cast),
                    sql.Literal(check),
                    sql.Literal(part),
                    sql.SQL(cast),
                )
            )
    statements = [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(results, sql.SQL(", ").join(columns))
    ]
    for indexed in INDEXED_COLUMNS:
        index = _short(name, "_" + "_".join(indexed) + "_idx")
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(index),
                results,
                sql.SQL(", ").join(sql.Identifier(c) for c in indexed),
            )
        )
    return statements


def plan_results_table(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    """Step `results-table`: `<table>_quality_results` in the table's schema, with its indexes,
    in one transaction.

    Cheap on a live table: the new table is empty, so the foreign key needs no scan, only a brief
    lock on the user's table (waited for at most 2 s, then planned and run again like every step).
    The key column is checked here, so an unusable --id-column stops `migrate` before any step.
    """
    t = subject.target
    beside = Target(
        table=t.table,
        schema=subject.schema,
        id_column=t.id_column,
        url_column=t.url_column,
        score_column=t.score_column,
    )
    label = results_label(beside)
    found = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (subject.schema, results_table_name(beside)),
    ).fetchone()
    if found is not None:
        if found[0] not in ("r", "p"):
            raise ConfigError(
                f"results-table: {label} already exists and is not a table; rename it"
            )
        missing = _missing_columns(conn, subject.schema, results_table_name(beside))
        if not missing:
            return StepPlan("results-table", "already present", label)
        table = sql.Identifier(subject.schema, results_table_name(beside))
        adds = tuple(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text").format(
                table, sql.Identifier(column)
            )
            for column in missing
        )
        detail = f"{label}: added the column {', '.join(missing)} (no rewrite)"
        return StepPlan("results-table", "created", detail, (Batch((lock_timeout(), *adds)),))
    key_type = _key_type(conn, subject)
    detail = (
        f"{label}, what each score was made of, keyed by {t.id_column} ({key_type}),"
        " ON DELETE CASCADE"
    )
    statements = (lock_timeout(), *create_statements(beside, key_type))
    return StepPlan("results-table", "created", detail, (Batch(statements),))


def _missing_columns(conn: psycopg.Connection[Any], schema: str, name: str) -> list[str]:
    """The columns of ADDED_COLUMNS the results table `schema.name` lacks."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, name),
    ).fetchall()
    present = {str(row[0]) for row in rows}
    return [column for column in ADDED_COLUMNS if column not in present]


def _results_oid_columns(conn: psycopg.Connection[Any], target: Target) -> set[str] | None:
    """The results table's column names, None when it does not exist."""
    with _translated(f"looking for the results table {results_label(target)}"):
        row = conn.execute(
            "SELECT to_regclass(%s)::oid", (_results(target).as_string(conn),)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0"
            " AND NOT attisdropped",
            (row[0],),
        ).fetchall()
    return {str(name) for (name,) in rows}


def has_results_table(conn: psycopg.Connection[Any], target: Target) -> bool:
    """Whether the target's results table exists."""
    with _translated(f"looking for the results table {results_label(target)}"):
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (_results(target).as_string(conn),)
        ).fetchone()
    return bool(row and row[0])


def require_results_table(conn: psycopg.Connection[Any], target: Target) -> None:
    """ConfigError naming `backfill-quality migrate` when the results table or one of its
    newer columns is missing."""
    columns = _results_oid_columns(conn, target)
    if columns is not None and (missing := [c for c in ADDED_COLUMNS if c not in columns]):
        raise ConfigError(
            f"the results table {results_label(target)} lacks the column {', '.join(missing)}"
            f" (added by a newer version): run `backfill-quality migrate --table {target.label}"
            f" --id-column {target.id_column}` once (it adds the column without rewriting"
            " anything), then run again. Nothing was written"
        )
    if columns is None:
        raise ConfigError(
            f"the results table {results_label(target)} (what each score was made of, written"
            f" with the score) does not exist: run `backfill-quality migrate --table"
            f" {target.label} --id-column {target.id_column}` once (it creates it without"
            " rewriting or long-locking your table), then run again. Nothing was written"
        )


# --- writing and reading -----------------------------------------------------------------------


def guarded_write_statement(target: Target) -> sql.Composed:
    """One statement: the guarded score UPDATE and, only for the row it updated, the result.

    $1 is the score (written to both tables), $2 the row's key, $3… the result's values in
    RESULT_KEYS order (scoredAt excepted: the database's now(), the same clock for every worker).
    A result already there (its score was reset to NULL since) is replaced.
    """
    score = sql.Identifier(target.score_column)
    key = sql.Identifier(target.id_column)
    names: list[sql.Composable] = [sql.Identifier(KEY_COLUMN)]
    values: list[sql.Composable] = [key]
    position = 3
    for result_key in RESULT_KEYS:
        column, declaration = COLUMNS[result_key]
        names.append(sql.Identifier(column))
        if result_key == "score":
            values.append(sql.SQL("$1::smallint"))
        elif result_key == "scoredAt":
            values.append(sql.SQL("now()"))
        else:
            cast = declaration.split(" NOT NULL")[0].split(" CHECK")[0]
            values.append(sql.SQL(f"${position}::{cast}"))
            position += 1
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(COLUMNS[k][0])) for k in RESULT_KEYS
    )
    return sql.SQL(
        "WITH updated AS (UPDATE {table} SET {score} = $1 WHERE {key} = $2 AND {score} IS NULL"
        " RETURNING {key}) INSERT INTO {results} ({names}) SELECT {values} FROM updated"
        " ON CONFLICT ({image_id}) DO UPDATE SET {updates}"
    ).format(
        table=_table(target),
        score=score,
        key=key,
        results=_results(target),
        names=sql.SQL(", ").join(names),
        values=sql.SQL(", ").join(values),
        image_id=sql.Identifier(KEY_COLUMN),
        updates=updates,
    )


def write_parameters(row_id: RowId, result: Mapping[str, Any]) -> list[Any]:
    """The parameters of `guarded_write_statement` for one row."""
    params: list[Any] = [result["score"], row_id]
    for key in RESULT_KEYS:
        if key in ("score", "scoredAt"):
            continue
        value = result[key]
        params.append(Jsonb(value) if key in JSONB_KEYS and value is not None else value)
    return params


def read_results(conn: psycopg.Connection[Any], target: Target) -> dict[RowId, dict[str, Any]]:
    """Every stored result by image key (uuid keys as text), under the keys of RESULT_KEYS."""
    columns = [sql.Identifier(COLUMNS[k][0]) for k in RESULT_KEYS]
    query = sql.SQL("SELECT {}, {} FROM {}").format(
        sql.Identifier(KEY_COLUMN), sql.SQL(", ").join(columns), _results(target)
    )
    with _translated(f"reading {results_label(target)}"):
        rows = _raw(conn, query, []).fetchall()
    found: dict[RowId, dict[str, Any]] = {}
    for key, *values in rows:
        record = dict(zip(RESULT_KEYS, values, strict=True))
        if isinstance(record["scoredAt"], datetime):
            record["scoredAt"] = record["scoredAt"].isoformat(timespec="milliseconds")
        found[key if isinstance(key, int) else str(key)] = record
    return found
