"""The rows to score: keyset page queries, counts and estimates of the rows left."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _raw, _translate, _translated
from backfill_quality.db.schema import _table, _table_label, check_target
from backfill_quality.models import ImageRow, RowId

EXACT_COUNT_LIMIT = 2_000_000
EXACT_COUNT_TIMEOUT_MS = 3000

IdRange = tuple[RowId | None, RowId | None]

# id column type (as check_target names it) -> the element type of an array of such keys
_KEY_ARRAY_ELEMENT = {
    "uuid": "uuid",
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "text": "text",
    "character varying": "character varying",
}


# --- reading pages ---------------------------------------------------------------------------


def _unscored_filter(
    target: Target, after_id: RowId | None, id_range: IdRange | None
) -> tuple[sql.Composed, list[RowId]]:
    """WHERE clause (and its parameters) of the rows still to score after the cursor."""
    parts = [sql.SQL("{} IS NULL").format(sql.Identifier(target.score_column))]
    params: list[RowId] = []
    lo, hi = id_range if id_range is not None else (None, None)
    for operator, value in ((">", after_id), (">=", lo), ("<", hi)):
        if value is not None:
            params.append(value)
            condition = f"{{}} {operator} ${len(params)}"
            parts.append(sql.SQL(condition).format(sql.Identifier(target.id_column)))
    return sql.SQL(" AND ").join(parts), params


def _page_query(
    target: Target, after_id: RowId | None, limit: int, id_range: IdRange | None
) -> tuple[sql.Composed, list[RowId]]:
    where, params = _unscored_filter(target, after_id, id_range)
    limit_param = sql.SQL(f"${len(params) + 1}")
    query = sql.SQL(
        "SELECT {id}, {url} FROM {table} WHERE {where} ORDER BY {id} LIMIT {limit}"
    ).format(
        id=sql.Identifier(target.id_column),
        url=sql.Identifier(target.url_column),
        table=_table(target),
        where=where,
        limit=limit_param,
    )
    return query, [*params, limit]


def _row_id(value: Any) -> RowId:
    if isinstance(value, int):
        return value
    return str(value)


def _key_array_type(id_type: str) -> sql.SQL:
    """The SQL array type of keys of this id column type (a fixed whitelist, never user text)."""
    element = _KEY_ARRAY_ELEMENT.get(id_type)
    if element is None:
        raise ValueError(f"unsupported id column type {id_type!r}")
    return sql.SQL(element + "[]")


def _ids_after_query(target: Target, id_type: str) -> sql.Composed:
    key = sql.Identifier(target.id_column)
    return sql.SQL(
        "SELECT {key} FROM {table} WHERE {key} = ANY($1::{array}) AND {key} > $2"
    ).format(key=key, table=_table(target), array=_key_array_type(id_type))


def ids_after(
    conn: psycopg.Connection[Any],
    target: Target,
    ids: Sequence[RowId],
    after_id: RowId,
    *,
    id_type: str | None = None,
) -> set[RowId]:
    """Which of `ids` sort after `after_id` in the table's key order (the database decides:
    text keys follow its collation, not Python's).

    The keys are compared in the column's own type (`id_type`, as `check_target` returns it;
    looked up when not given), so the primary key index finds them: no scan past the mark.
    """
    if not ids:
        return set()
    query = _ids_after_query(target, id_type or check_target(conn, target))
    with _translated(f"reading failed rows of {_table_label(target)!r}"):
        rows = _raw(conn, query, [[str(i) for i in ids], after_id]).fetchall()
    return {_row_id(row_id) for (row_id,) in rows}


def explain_ids_after(
    conn: psycopg.Connection[Any],
    target: Target,
    ids: Sequence[RowId],
    after_id: RowId,
    *,
    id_type: str,
) -> str:
    """EXPLAIN text of the `ids_after` query with these values (for tests)."""
    query = sql.SQL("EXPLAIN {}").format(_ids_after_query(target, id_type))
    with _translated("explaining the failed rows query"):
        rows = _raw(conn, query, [[str(i) for i in ids], after_id]).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def fetch_page(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None,
    limit: int,
    id_range: IdRange | None = None,
) -> list[ImageRow]:
    """The next `limit` unscored rows after `after_id`, in key order (keyset, never OFFSET).

    A NULL url comes back as '' so the caller records the row as failed with a clear reason.
    """
    query, params = _page_query(target, after_id, limit, id_range)
    with _translated(f"reading the next page of {_table_label(target)!r}"):
        rows = _raw(conn, query, params).fetchall()
    return [ImageRow(id=_row_id(row_id), url=url or "") for row_id, url in rows]


def explain_page_query(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    limit: int = 50,
    id_range: IdRange | None = None,
    analyze: bool = False,
) -> str:
    """EXPLAIN text of the page query with these values (for tests and the benchmark)."""
    query, params = _page_query(target, after_id, limit, id_range)
    options = sql.SQL("(ANALYZE, BUFFERS) ") if analyze else sql.SQL("")
    with _translated("explaining the page query"):
        rows = _raw(conn, sql.SQL("EXPLAIN {}{}").format(options, query), params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def estimate_unscored(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    id_range: IdRange | None = None,
) -> int:
    """The planner's row estimate of the unscored rows (instant, approximate)."""
    where, params = _unscored_filter(target, after_id, id_range)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(_table(target), where)
    with _translated("estimating the rows left"):
        row = _raw(conn, query, params).fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def count_unscored(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    id_range: IdRange | None = None,
) -> int:
    """Rows left to score: exact when cheap, else the planner's estimate.

    The exact count reads the partial index of unscored rows. It is skipped when the planner
    expects more than EXACT_COUNT_LIMIT rows, and abandoned after EXACT_COUNT_TIMEOUT_MS, so a
    huge table never stalls the start; the estimate is then returned instead.
    """
    estimate = estimate_unscored(conn, target, after_id=after_id, id_range=id_range)
    if estimate > EXACT_COUNT_LIMIT:
        return estimate
    where, params = _unscored_filter(target, after_id, id_range)
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_table(target), where)
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {EXACT_COUNT_TIMEOUT_MS}")
            row = _raw(conn, query, params).fetchone()
    except psycopg.errors.QueryCanceled:
        return estimate
    except psycopg.Error as exc:
        raise _translate(exc, "counting the rows left") from exc
    return int(row[0]) if row else 0
