"""`--order-by`: the column checked against the catalog, the EXPLAIN that tells whether an index
serves the order, and the `migrate` step `order-index` that creates the one that does.

A run in priority order reads keyset pages over (column, key): first the rows whose value is
not NULL, with one row comparison `(col, key) > ($value::type, $key)` (`<` and both columns
descending for --descending), then the NULLs by key (`db.pages`). The partial index
`ON t (col [DESC], key [DESC]) WHERE score IS NULL` serves the first phase, so a page reads
about `--batch-size` index entries however many rows are scored or left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import OrderBy, Target
from backfill_quality.db.connection import _translated
from backfill_quality.db.migration_steps import StepPlan, Subject, _plan_index, object_name
from backfill_quality.db.pages import IdRange, PageOrder, order_page_plan
from backfill_quality.db.schema import _columns, _find_table, _table_label
from backfill_quality.errors import ConfigError

SORTABLE_TYPES = frozenset(
    {"smallint", "integer", "bigint", "numeric", "real", "double precision"}
    | {"text", "character varying", "date", "timestamp without time zone"}
    | {"timestamp with time zone", "uuid", "boolean"}
)
"""Column types (as `format_type` names them) a run may be ordered by: each has a total btree
order and a text form that casts back to the same value (the cursor is kept as text)."""
ORDER_INDEX_STEP = "order-index"
DEMO_TABLE_COLUMNS = {
    "id": (1, "uuid"),
    "url": (2, "text"),
    "created_at": (3, "timestamp with time zone"),
}
"""The columns of the demo's table, which step `table` creates when there is none yet."""


def _order_option(order_by: OrderBy) -> str:
    return " ".join(order_by.cli_options())


def _check_column(
    columns: dict[str, tuple[int, str]], target: Target, order_by: OrderBy, label: str
) -> str:
    """The order column's type; ConfigError when it is missing, unsortable or the score."""
    option = f"--order-by {order_by.column}"
    if order_by.column not in columns:
        raise ConfigError(
            f"{option}: column {order_by.column!r} does not exist in table {label!r}"
            f" (columns: {', '.join(columns) or 'none'})"
        )
    if order_by.column == target.score_column:
        raise ConfigError(
            f"{option}: that is the score column, NULL in every row left to score; order by"
            " another column (for example created_at), or leave --order-by out"
        )
    column_type = columns[order_by.column][1]
    if column_type not in SORTABLE_TYPES:
        raise ConfigError(
            f"{option}: column {order_by.column!r} of {label!r} has type {column_type}, which"
            " cannot be a priority order; supported types: " + ", ".join(sorted(SORTABLE_TYPES))
        )
    return column_type


def check_order(conn: psycopg.Connection[Any], target: Target, order_by: OrderBy) -> PageOrder:
    """The page order of `--order-by`, its column checked in the catalog (ConfigError: exit 2)."""
    label = _table_label(target)
    with _translated(f"checking --order-by {order_by.column!r} of {label!r}"):
        columns = _columns(conn, _find_table(conn, target))
    column_type = _check_column(columns, target, order_by, label)
    return PageOrder(order_by.column, order_by.descending, column_type)


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    for node in plan if isinstance(plan, list) else [plan]:
        inner = node.get("Plan", node)
        yield inner
        for child in inner.get("Plans", ()):
            yield from _nodes(child)


def has_order_index(
    conn: psycopg.Connection[Any], target: Target, order: PageOrder, id_range: IdRange | None
) -> bool:
    """Whether an index delivers the first page in this order: EXPLAIN of the real page query
    with sorts discouraged still sorts (a Sort node) when none does. Planned, not run."""
    plan = order_page_plan(conn, target, order, id_range=id_range)
    return not any(node.get("Node Type") == "Sort" for node in _nodes(plan))


def slow_order_warning(target: Target, order: PageOrder) -> str:
    """What a run without the order's index tells the user (it continues)."""
    order_by = OrderBy(order.column, order.descending)
    migrate = " ".join(["backfill-quality migrate", *target.cli_options(), _order_option(order_by)])
    return (
        f"--order-by {order_by}: no index serves this order (EXPLAIN of the page query sorts"
        " every unscored row), so each page will read the whole table and the run will be slow"
        f" on a large one; create the index once with `{migrate}`. Continuing"
    )


def plan_order_index(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    """`ON t (col [DESC], key [DESC]) WHERE score IS NULL`, for `migrate --order-by`."""
    order_by, t = subject.order_by, subject.target
    if order_by is None:
        return StepPlan(ORDER_INDEX_STEP, "skipped", "no --order-by given")
    columns = _columns(conn, subject.table_oid) if subject.table_oid else DEMO_TABLE_COLUMNS
    _check_column(columns, t, order_by, subject.label)
    direction = ["desc"] if order_by.descending else []
    name = object_name("idx", t.table, order_by.column, *direction, t.score_column, "null")
    desc = sql.SQL(" DESC" if order_by.descending else "")
    shape = sql.SQL("({col}{desc}, {key}{desc}) WHERE {score} IS NULL").format(
        col=sql.Identifier(order_by.column),
        key=sql.Identifier(t.id_column),
        score=sql.Identifier(t.score_column),
        desc=desc,
    )
    return _plan_index(conn, subject, ORDER_INDEX_STEP, name, shape)
