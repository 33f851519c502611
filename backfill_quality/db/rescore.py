"""Rescoring's SQL: which scored rows are stale, their stored results, and the guarded rewrite.

A page joins the user's table (alias `t`) to its results table (alias `r`, NULL for a row scored
before the table existed) in key order, keyset over the id like a run's pages, and brings what
each row's rescore needs: the score and versions it read, the stored measurements, hash and
validators, and whether a result measured with the current measurement version exists for the
stored hash (so the row may be revalidated with a conditional GET and reuse it).

`--where` is the user's own boolean SQL over `t.` and `r.`; `check_where` runs EXPLAIN on it once
at the start, so a typo is a ConfigError (exit 2) naming the database's reason, not a traceback
mid-run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from backfill_quality.config import Target
from backfill_quality.db.connection import _raw, _translate, _translated, is_retryable
from backfill_quality.db.pages import EXACT_COUNT_TIMEOUT_MS, IdRange, _row_id
from backfill_quality.db.results import COLUMNS, JSONB_KEYS, KEY_COLUMN, _results, results_label
from backfill_quality.db.schema import _table, _table_label
from backfill_quality.db.writes import WriteResult
from backfill_quality.errors import ConfigError
from backfill_quality.models import ImageRow, RowId
from backfill_quality.results import RESULT_KEYS

MEASURED_KEYS = ("width", "height", "brightness", "detector", "presence", "subject")
"""What the five checks read (`models.Measurements`), as result keys."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which scored rows a rescore takes: stale ones (or every one with `is_all`), narrowed by
    the user's `where` (SQL over `t.` and `r.`, or None)."""

    scorer_version: str
    measurement_version: str
    is_all: bool = False
    where: str | None = None
    started_at: datetime | None = None
    """When the rescore started (database clock): rows whose result was written since are
    left out, so a resumed rescore never takes a row it already rewrote."""


@dataclass(frozen=True, slots=True)
class StoredRow(ImageRow):
    """A scored row as a rescore reads it: the score and version the write is guarded by, and
    what was stored (None for a row without a result: `version` None)."""

    score: int = 0
    version: str | None = None
    measurement_version: str | None = None
    measured: Mapping[str, Any] | None = None
    """width, height, brightness, detector, presence, subject (the stored measurements)."""
    content_sha256: str | None = None
    byte_size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    has_current_twin: bool = False
    """A result measured with the current measurement version exists for `content_sha256`."""


@dataclass(frozen=True, slots=True)
class RescoreWrite:
    """One row to rewrite: the key, the score and version read (the guard), the new result."""

    row_id: RowId
    read_score: int
    read_version: str | None
    result: Mapping[str, Any]


def _filter(
    target: Target, selection: Selection, after_id: RowId | None, id_range: IdRange | None
) -> tuple[sql.Composed, list[Any]]:
    """FROM … WHERE … of the rows to rescore after the cursor; parameters from $1."""
    key = sql.SQL("t.{}").format(sql.Identifier(target.id_column))
    parts: list[sql.Composable] = [
        sql.SQL("t.{} IS NOT NULL").format(sql.Identifier(target.score_column))
    ]
    params: list[Any] = []
    if not selection.is_all:
        params.append(selection.scorer_version)
        parts.append(sql.SQL(f"r.scorer_version IS DISTINCT FROM ${len(params)}"))
    if selection.started_at is not None:
        params.append(selection.started_at)
        parts.append(sql.SQL(f"(r.scored_at IS NULL OR r.scored_at < ${len(params)})"))
    lo, hi = id_range if id_range is not None else (None, None)
    for operator, value in ((">", after_id), (">=", lo), ("<", hi)):
        if value is not None:
            params.append(value)
            parts.append(sql.SQL(f"{{}} {operator} ${len(params)}").format(key))
    if selection.where:  # checked by check_where; the newline ends a trailing -- comment
        parts.append(sql.SQL("({}\n)").format(sql.SQL(selection.where)))
    clause = sql.SQL("FROM {table} t LEFT JOIN {results} r ON r.{image_id} = {key} WHERE {w}")
    return clause.format(
        table=_table(target),
        results=_results(target),
        image_id=sql.Identifier(KEY_COLUMN),
        key=key,
        w=sql.SQL(" AND ").join(parts),
    ), params


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    """The database's clock (the one `scored_at` is written with)."""
    with _translated("reading the database's clock"):
        row = _raw(conn, sql.SQL("SELECT clock_timestamp()"), []).fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def check_where(conn: psycopg.Connection[Any], target: Target, selection: Selection) -> None:
    """EXPLAIN the selection once: ConfigError (exit 2) with the database's reason when
    `--where` is not a boolean expression over `t.` and `r.`."""
    if selection.where is None:
        return
    if not selection.where.strip():
        raise ConfigError(
            "--where is empty: give a boolean SQL expression, e.g. r.category = 'low'"
        )
    if problem := where_text_problem(selection.where):
        raise ConfigError(
            f"--where {selection.where!r} {problem}: it must be one boolean SQL expression over"
            " t. and r., e.g. --where \"r.category = 'low'\"; nothing was rescored"
        )
    clause, params = _filter(target, selection, None, None)
    query = sql.SQL("EXPLAIN SELECT 1 {}").format(clause)
    try:
        with conn.transaction():
            _raw(conn, query, params).fetchall()
    except psycopg.Error as exc:
        if is_retryable(exc):
            raise _translate(exc, "checking --where") from exc
        raise _where_error(selection.where, exc) from exc


def where_text_problem(where: str) -> str | None:
    """Why `where` is not one self-contained expression (None when it is): outside string
    literals and quoted names, no `;`, no `$` (placeholders, dollar quotes), and parentheses
    that never close more than they opened, so it cannot reach past its own `( … )`."""
    depth = 0
    index = 0
    while index < len(where):
        char = where[index]
        if char in "'\"":
            end = index + 1
            while end < len(where):
                if where[end] == char and where[end + 1 : end + 2] == char:
                    end += 2  # a doubled quote inside the literal
                elif where[end] == char:
                    break
                else:
                    end += 1
            if end >= len(where):
                return "has an unterminated quote"
            index = end + 1
            continue
        if char == ";":
            return "holds a ';'"
        if char == "$":
            return "holds a '$' (no placeholders or dollar quotes)"
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return "closes a parenthesis it did not open"
        index += 1
    return "leaves a parenthesis open" if depth else None


def _where_error(where: str, exc: psycopg.Error) -> ConfigError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"--where {where!r} is not a usable condition: {reason}. It must be a boolean SQL"
        " expression over t. (your table) and r. (its results table, NULL for rows scored"
        " without a result), e.g. --where \"r.category = 'low'\"; nothing was rescored"
    )


def _page_query(
    target: Target,
    selection: Selection,
    after_id: RowId | None,
    limit: int,
    id_range: IdRange | None,
) -> tuple[sql.Composed, list[Any]]:
    clause, params = _filter(target, selection, after_id, id_range)
    params.append(selection.measurement_version)
    current = len(params)
    params.append(limit)
    query = sql.SQL(
        "SELECT t.{id}, t.{url}, t.{score}, r.scorer_version, r.measurement_version,"
        " r.width, r.height, r.brightness, r.detector, r.presence, r.subject,"
        " r.content_sha256, r.bytes, r.etag, r.last_modified,"
        " (SELECT true FROM {results} c WHERE c.content_sha256 = r.content_sha256"
        " AND c.measurement_version = ${current} LIMIT 1)"
        " {clause} ORDER BY t.{id} LIMIT ${limit}"
    ).format(
        id=sql.Identifier(target.id_column),
        url=sql.Identifier(target.url_column),
        score=sql.Identifier(target.score_column),
        results=_results(target),
        current=sql.SQL(str(current)),
        clause=clause,
        limit=sql.SQL(str(len(params))),
    )
    return query, params


def fetch_rescore_page(
    conn: psycopg.Connection[Any],
    target: Target,
    selection: Selection,
    *,
    after_id: RowId | None,
    limit: int,
    id_range: IdRange | None = None,
) -> list[StoredRow]:
    """The next `limit` rows to rescore after `after_id`, in key order (keyset, never OFFSET)."""
    query, params = _page_query(target, selection, after_id, limit, id_range)
    with _translated(f"reading the next page to rescore of {_table_label(target)!r}"):
        rows = _raw(conn, query, params).fetchall()
    found = []
    for row in rows:
        row_id, url, score, version, measurement, *measured, sha, size, etag, modified, twin = row
        has_measurements = measurement is not None and measured[0] is not None
        subject = measured[5]
        if isinstance(subject, str):
            subject = json.loads(subject)
        stored = dict(zip(MEASURED_KEYS, [*measured[:5], subject], strict=True))
        found.append(
            StoredRow(
                id=_row_id(row_id),
                url=url or "",
                score=int(score),
                version=version,
                measurement_version=measurement,
                measured=stored if has_measurements else None,
                content_sha256=sha,
                byte_size=size,
                etag=etag,
                last_modified=modified,
                has_current_twin=bool(twin),
            )
        )
    return found


def count_to_rescore(
    conn: psycopg.Connection[Any],
    target: Target,
    selection: Selection,
    *,
    after_id: RowId | None = None,
    id_range: IdRange | None = None,
) -> int:
    """Rows left to rescore: exact, or the planner's estimate when counting takes too long."""
    clause, params = _filter(target, selection, after_id, id_range)
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {EXACT_COUNT_TIMEOUT_MS}")
            row = _raw(conn, sql.SQL("SELECT count(*) {}").format(clause), params).fetchone()
        return int(row[0]) if row else 0
    except psycopg.errors.QueryCanceled:
        pass
    except psycopg.Error as exc:
        raise _translate(exc, "counting the rows to rescore") from exc
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 {}").format(clause)
    with _translated("estimating the rows to rescore"):
        found = _raw(conn, query, params).fetchone()
    plan = found[0] if found else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def find_current_measurements(
    conn: psycopg.Connection[Any], target: Target, content_sha256: str, measurement_version: str
) -> dict[str, Any] | None:
    """The stored measurements of a result of these bytes measured with the current
    measurement version, or None."""
    columns = sql.SQL(", ").join(sql.Identifier(COLUMNS[k][0]) for k in MEASURED_KEYS)
    query = sql.SQL(
        "SELECT {} FROM {} WHERE content_sha256 = $1 AND measurement_version = $2 LIMIT 1"
    ).format(columns, _results(target))
    with _translated(f"looking up a result by content hash in {results_label(target)}"):
        row = _raw(conn, query, [content_sha256, measurement_version]).fetchone()
    if row is None:
        return None
    found = dict(zip(MEASURED_KEYS, row, strict=True))
    if isinstance(found["subject"], str):
        found["subject"] = json.loads(found["subject"])
    return found


# --- the guarded rewrite ------------------------------------------------------------------------


def _result_values(first: int) -> tuple[list[sql.Composable], list[sql.Composable], int]:
    """Column names and $n values of a result (scoredAt: now()); the next free position."""
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    position = first
    for result_key in RESULT_KEYS:
        column, declaration = COLUMNS[result_key]
        names.append(sql.Identifier(column))
        if result_key == "scoredAt":
            values.append(sql.SQL("now()"))
            continue
        cast = declaration.split(" NOT NULL")[0].split(" CHECK")[0]
        values.append(sql.SQL(f"${position}::{cast}"))
        position += 1
    return names, values, position


def rescore_statement(target: Target, *, has_result: bool) -> sql.Composed:
    """One statement: the new score and result, only if the row still has the score ($3) and
    the result version ($4) it was read with; $1 the new score, $2 the key, $5… the result.

    A row with a result: its result row is locked (FOR UPDATE) and re-read after any concurrent
    writer commits, so a second rescore that read the same version finds it changed and writes
    nothing. A row without one ("unknown version"): the result is inserted first, ON CONFLICT DO
    NOTHING, and the score updated only when the insert happened: "still no result" is the
    guard, and the unique key decides between two rescores.
    """
    key = sql.Identifier(target.id_column)
    score = sql.Identifier(target.score_column)
    image_id = sql.Identifier(KEY_COLUMN)
    names, values, _ = _result_values(5)
    if has_result:
        updates = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(name, value)
            for name, value in zip(names, values, strict=True)
        )
        return sql.SQL(
            "WITH guard AS (SELECT {image_id} FROM {results} WHERE {image_id} = $2"
            " AND scorer_version = $4::text FOR UPDATE),"
            " updated AS (UPDATE {table} t SET {score} = $1::smallint FROM guard"
            " WHERE t.{key} = guard.{image_id} AND t.{score} = $3::smallint RETURNING t.{key})"
            " UPDATE {results} r SET {updates} FROM updated WHERE r.{image_id} = updated.{key}"
        ).format(
            image_id=image_id,
            results=_results(target),
            table=_table(target),
            score=score,
            key=key,
            updates=updates,
        )
    return sql.SQL(
        "WITH inserted AS (INSERT INTO {results} ({image_id}, {names})"
        " SELECT t.{key}, {values} FROM {table} t WHERE t.{key} = $2 AND t.{score} = $3::smallint"
        " AND $4::text IS NULL ON CONFLICT ({image_id}) DO NOTHING RETURNING {image_id})"
        " UPDATE {table} t SET {score} = $1::smallint FROM inserted"
        " WHERE t.{key} = inserted.{image_id}"
    ).format(
        results=_results(target),
        image_id=image_id,
        names=sql.SQL(", ").join(names),
        values=sql.SQL(", ").join(values),
        table=_table(target),
        key=key,
        score=score,
    )


def _parameters(write: RescoreWrite) -> list[Any]:
    params: list[Any] = [
        write.result["score"],
        write.row_id,
        write.read_score,
        write.read_version,
    ]
    for key in RESULT_KEYS:
        if key == "scoredAt":
            continue
        value = write.result[key]
        params.append(Jsonb(value) if key in JSONB_KEYS and value is not None else value)
    return params


def write_rescores(
    conn: psycopg.Connection[Any], target: Target, rows: Sequence[RescoreWrite]
) -> list[WriteResult]:
    """Rewrite each row's score and result, each in its own transaction, pipelined; a row whose
    score or result changed since it was read is not written (`is_written=False`, no error)."""
    statements = {flag: rescore_statement(target, has_result=flag) for flag in (True, False)}
    results: list[WriteResult] = []
    try:
        with conn.pipeline() as pipeline, psycopg.RawCursor(conn) as cur:
            for write in rows:
                try:
                    statement = statements[write.read_version is not None]
                    cur.execute(statement, _parameters(write))
                    pipeline.sync()
                except (psycopg.IntegrityError, psycopg.DataError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    error = (
                        f"the database refused score {write.result['score']} for row"
                        f" {write.row_id}: {reason}"
                    )
                    results.append(WriteResult(write.row_id, False, error))
                    continue
                results.append(WriteResult(write.row_id, cur.rowcount == 1))
    except psycopg.Error as exc:
        failure = _translate(exc, f"rewriting scores of {_table_label(target)!r}")
        failure.confirmed = list(results)
        raise failure from exc
    return results
