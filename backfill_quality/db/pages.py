"""The rows to score: keyset page queries, counts and estimates of the rows left."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _raw, _translate, _translated
from backfill_quality.db.schema import _table, _table_label, check_target
from backfill_quality.models import ImageRow, OrderCursor, PageKey, RowId

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


@dataclass(frozen=True, slots=True)
class PageOrder:
    """A checked `--order-by`: the column, the direction, and the column's type (one of
    `db.order.SORTABLE_TYPES`, read from the catalog) that cursor values are cast back to."""

    column: str
    descending: bool
    sql_type: str


def _column(order: PageOrder) -> sql.Identifier:
    return sql.Identifier(order.column)


# --- reading pages ---------------------------------------------------------------------------


def _unscored_filter(
    target: Target,
    after_id: PageKey | None,
    id_range: IdRange | None,
    order: PageOrder | None = None,
) -> tuple[sql.Composed, list[Any]]:
    """WHERE clause (and its parameters) of the rows still to score after the cursor."""
    parts = [sql.SQL("{} IS NULL").format(sql.Identifier(target.score_column))]
    params: list[Any] = []
    lo, hi = id_range if id_range is not None else (None, None)
    after = after_id if order is None else None  # with an order: the condition below
    for operator, value in ((">", after), (">=", lo), ("<", hi)):
        if value is not None:
            params.append(value)
            condition = f"{{}} {operator} ${len(params)}"
            parts.append(sql.SQL(condition).format(sql.Identifier(target.id_column)))
    if order is not None and after_id is not None:
        parts.append(_after_in_order(target, order, _order_cursor(after_id), params))
    return sql.SQL(" AND ").join(parts), params


def _order_cursor(key: PageKey) -> OrderCursor:
    if not isinstance(key, OrderCursor):
        raise TypeError(f"an --order-by page starts after an OrderCursor, not {key!r}")
    return key


def _after_in_order(
    target: Target, order: PageOrder, cursor: OrderCursor, params: list[Any]
) -> sql.Composed:
    """Rows after `cursor` in the order (values first, then NULLs by key); adds its params."""
    key, column = sql.Identifier(target.id_column), _column(order)
    if cursor.value is None:
        params.append(cursor.id)
        return sql.SQL("({} IS NULL AND {} > ${})").format(column, key, sql.SQL(str(len(params))))
    return sql.SQL("({} OR {} IS NULL)").format(_after_value(target, order, cursor, params), column)


def _after_value(
    target: Target, order: PageOrder, cursor: OrderCursor, params: list[Any]
) -> sql.Composed:
    """`(col, key) > ($v::type, $k)` (`<` descending): after the cursor among the values, one
    row comparison that the index (col, key) serves as its Index Cond; adds its params."""
    params.extend([cursor.value, cursor.id])
    return sql.SQL("({col}, {key}) {op} (${v}::{type}, ${i})").format(
        col=_column(order),
        key=sql.Identifier(target.id_column),
        op=sql.SQL("<" if order.descending else ">"),
        v=sql.SQL(str(len(params) - 1)),
        type=sql.SQL(order.sql_type),
        i=sql.SQL(str(len(params))),
    )


def _page_query(
    target: Target, after_id: RowId | None, limit: int, id_range: IdRange | None
) -> tuple[sql.Composed, list[Any]]:
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


def _values_page_query(
    target: Target,
    order: PageOrder,
    after: OrderCursor | None,
    limit: int,
    id_range: IdRange | None,
) -> tuple[sql.Composed, list[Any]]:
    """Phase 1 of an ordered run: rows whose order value is not NULL, after `after`, in
    (column, key) order: one row comparison that the index (column, key) serves, both ways.

    The value comes back as JSON text (`to_json(col) #>> '{}'`): ISO 8601 for dates and times
    whatever the session's DateStyle, exact digits for numbers; cast back by the next query.
    """
    where, params = _unscored_filter(target, None, id_range)
    column, key = _column(order), sql.Identifier(target.id_column)
    conditions = [where, sql.SQL("{} IS NOT NULL").format(column)]
    if after is not None:
        conditions.append(_after_value(target, order, after, params))
    direction = sql.SQL(" DESC" if order.descending else "")
    query = sql.SQL(
        "SELECT {key}, {url}, to_json({col}) #>> '{{}}' FROM {table} WHERE {where}"
        " ORDER BY {col}{dir}, {key}{dir} LIMIT ${limit}"
    ).format(
        key=key,
        url=sql.Identifier(target.url_column),
        col=column,
        table=_table(target),
        where=sql.SQL(" AND ").join(conditions),
        dir=direction,
        limit=sql.SQL(str(len(params) + 1)),
    )
    return query, [*params, limit]


def _nulls_page_query(
    target: Target,
    order: PageOrder,
    after_id: RowId | None,
    limit: int,
    id_range: IdRange | None,
) -> tuple[sql.Composed, list[Any]]:
    """Phase 2 of an ordered run: rows whose order value is NULL, in key order (NULLs last)."""
    where, params = _unscored_filter(target, after_id, id_range)
    query = sql.SQL(
        "SELECT {key}, {url}, NULL::text FROM {table} WHERE {where} AND {col} IS NULL"
        " ORDER BY {key} LIMIT ${limit}"
    ).format(
        key=sql.Identifier(target.id_column),
        url=sql.Identifier(target.url_column),
        col=_column(order),
        table=_table(target),
        where=where,
        limit=sql.SQL(str(len(params) + 1)),
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


def _ids_after_query(
    target: Target, id_type: str, after_id: PageKey, order: PageOrder | None = None
) -> tuple[sql.Composed, list[Any]]:
    key = sql.Identifier(target.id_column)
    params: list[Any] = [None]  # $1: the keys, filled in by the caller
    if order is None:
        params.append(after_id)
        after = sql.SQL("{} > $2").format(key)
    else:
        after = _after_in_order(target, order, _order_cursor(after_id), params)
    query = sql.SQL("SELECT {key} FROM {table} WHERE {key} = ANY($1::{array}) AND {after}").format(
        key=key, table=_table(target), array=_key_array_type(id_type), after=after
    )
    return query, params


def ids_after(
    conn: psycopg.Connection[Any],
    target: Target,
    ids: Sequence[RowId],
    after_id: PageKey,
    *,
    id_type: str | None = None,
    order: PageOrder | None = None,
) -> set[RowId]:
    """Which of `ids` sort after `after_id` in the table's key order (the database decides:
    text keys follow its collation, not Python's), or with `order` after that cursor.

    The keys are compared in the column's own type (`id_type`, as `check_target` returns it;
    looked up when not given), so the primary key index finds them: no scan past the mark.
    """
    if not ids:
        return set()
    query, params = _ids_after_query(target, id_type or check_target(conn, target), after_id, order)
    params[0] = [str(i) for i in ids]
    with _translated(f"reading failed rows of {_table_label(target)!r}"):
        rows = _raw(conn, query, params).fetchall()
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
    query, params = _ids_after_query(target, id_type, after_id)
    params[0] = [str(i) for i in ids]
    with _translated("explaining the failed rows query"):
        rows = _raw(conn, sql.SQL("EXPLAIN {}").format(query), params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def fetch_page(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: PageKey | None,
    limit: int,
    id_range: IdRange | None = None,
    order: PageOrder | None = None,
) -> list[ImageRow]:
    """The next `limit` unscored rows after `after_id`, in key order (keyset, never OFFSET).

    With `order` (--order-by), `after_id` is the last row's `OrderCursor` (None: from the start)
    and the rows come in the column's order, ties by key, NULLs last in key order; each row
    carries its own cursor (`row.key`). A NULL url comes back as '' so the caller records the row
    as failed with a clear reason.
    """
    label = _table_label(target)
    if order is None:
        if isinstance(after_id, OrderCursor):
            raise TypeError("an OrderCursor needs the order it was read in")
        query, params = _page_query(target, after_id, limit, id_range)
        with _translated(f"reading the next page of {label!r}"):
            rows = _raw(conn, query, params).fetchall()
        return [ImageRow(id=_row_id(row_id), url=url or "") for row_id, url in rows]
    cursor = None if after_id is None else _order_cursor(after_id)
    found: list[tuple[Any, ...]] = []
    with _translated(f"reading the next page of {label!r} in the order of {order.column!r}"):
        if cursor is None or cursor.value is not None:
            query, params = _values_page_query(target, order, cursor, limit, id_range)
            found = _raw(conn, query, params).fetchall()
        if len(found) < limit:  # the values are exhausted: the NULLs follow, by key
            after_null = cursor.id if cursor is not None and cursor.value is None else None
            query, params = _nulls_page_query(
                target, order, after_null, limit - len(found), id_range
            )
            found += _raw(conn, query, params).fetchall()
    return [
        ImageRow(id=_row_id(row_id), url=url or "", order_key=OrderCursor(value, _row_id(row_id)))
        for row_id, url, value in found
    ]


def explain_page_query(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    limit: int = 50,
    id_range: IdRange | None = None,
    analyze: bool = False,
    order: PageOrder | None = None,
) -> str:
    """EXPLAIN text of the page query with these values (for tests and the benchmark); with
    `order`, of the first phase's query (the order's values) from the start."""
    if order is None:
        query, params = _page_query(target, after_id, limit, id_range)
    else:
        query, params = _values_page_query(target, order, None, limit, id_range)
    options = sql.SQL("(ANALYZE, BUFFERS) ") if analyze else sql.SQL("")
    with _translated("explaining the page query"):
        rows = _raw(conn, sql.SQL("EXPLAIN {}{}").format(options, query), params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def order_page_plan(
    conn: psycopg.Connection[Any],
    target: Target,
    order: PageOrder,
    *,
    id_range: IdRange | None = None,
    limit: int = 50,
) -> Any:
    """The JSON plan of the first page of an ordered run, sorts discouraged (`enable_sort`
    off): a Sort node left in it means no index can deliver the rows in this order."""
    query, params = _values_page_query(target, order, None, limit, id_range)
    explain = sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)
    with _translated("explaining the page query"), conn.transaction():
        conn.execute("SET LOCAL enable_sort = off")
        row = _raw(conn, explain, params).fetchone()
    plan = row[0] if row else []
    return json.loads(plan) if isinstance(plan, str) else plan


def estimate_unscored(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: PageKey | None = None,
    id_range: IdRange | None = None,
    order: PageOrder | None = None,
) -> int:
    """The planner's row estimate of the unscored rows (instant, approximate)."""
    where, params = _unscored_filter(target, after_id, id_range, order)
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
    after_id: PageKey | None = None,
    id_range: IdRange | None = None,
    order: PageOrder | None = None,
) -> int:
    """Rows left to score (after the cursor, in `order`): exact when cheap, else the planner's
    estimate.

    The exact count reads the partial index of unscored rows. It is skipped when the planner
    expects more than EXACT_COUNT_LIMIT rows, and abandoned after EXACT_COUNT_TIMEOUT_MS, so a
    huge table never stalls the start; the estimate is then returned instead.
    """
    estimate = estimate_unscored(conn, target, after_id=after_id, id_range=id_range, order=order)
    if estimate > EXACT_COUNT_LIMIT:
        return estimate
    where, params = _unscored_filter(target, after_id, id_range, order)
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
