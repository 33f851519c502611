"""The steps of `migrate`, in order: each looks at the catalog and plans what is missing.

A step is a name and a planner (the list is `db.migrate.STEPS`). The planner reads the catalog
(never changes it) and returns a `StepPlan`: "already present" with nothing to run, "skipped"
(not asked for), or "created" with its statements in batches, each batch one transaction (or,
for CREATE INDEX CONCURRENTLY, single statements in autocommit). Add a step by writing a planner
and listing it in `STEPS`.

Every name is quoted with psycopg.sql; the tool's own objects are named after the table and
column (`idx_<table>_<score>_null`), bounded to PostgreSQL's 63 bytes, in the table's schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from backfill_quality.config import DEFAULT_TABLE, MAX_IDENTIFIER_BYTES, OrderBy, Target
from backfill_quality.db.connection import _raw
from backfill_quality.db.schema import SCORE_TYPES, _columns, _find_table, tables_named_elsewhere
from backfill_quality.db.shards import SHARD_PLAN_TABLE
from backfill_quality.errors import ConfigError, MigrationBlockedError

Outcome = Literal["created", "already present", "skipped"]
Statement = sql.Composed | sql.SQL
LOCK_TIMEOUT = "2s"  # a statement queued for a strong lock holds up every query behind it
CONCURRENT_LOCK_TIMEOUT = "10s"  # CONCURRENTLY blocks no one while it waits
NOTIFY_TRIGGER = "backfill_quality_notify"
RESET_TRIGGER = "backfill_quality_reset_on_url_change"
LEGACY_CHANNEL = "backfill_quality"
"""The channel of a trigger installed by a version before per-table channels (no arguments)."""
BAD_ROWS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Batch:
    """Statements run together: one transaction, or (atomic=False) each on its own."""

    statements: tuple[Statement, ...]
    is_atomic: bool = True


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step found and will do; `undo` puts the table back if a later batch fails
    after an earlier one committed."""

    step: str
    outcome: Outcome
    detail: str
    batches: tuple[Batch, ...] = ()
    undo: Batch | None = None


@dataclass(frozen=True, slots=True)
class Subject:
    """The table the steps work on, found in the catalog (`table_oid` None: step `table`
    creates it in `schema`), and what the user asked for."""

    target: Target
    schema: str
    table_oid: int | None
    with_watch: bool
    order_by: OrderBy | None = None
    """`migrate --order-by`: the order whose index step `order-index` creates."""

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.target.table)

    @property
    def label(self) -> str:
        return Target(table=self.target.table, schema=self.schema).label

    def in_schema(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)


def object_name(*parts: str) -> str:
    """`parts` joined by `_`, cut to 63 bytes with a hash suffix when longer (PostgreSQL would
    silently truncate, and two long names could then collide)."""
    name = "_".join(parts)
    encoded = name.encode()
    if len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    head = encoded[: MAX_IDENTIFIER_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}_{digest}"


def watch_channel(schema: str, table: str) -> str:
    """The NOTIFY channel of one table's trigger (at most 63 bytes, as NOTIFY requires)."""
    channel = f"{LEGACY_CHANNEL}:{Target(table=table, schema=schema).label}"
    if len(channel.encode()) <= MAX_IDENTIFIER_BYTES:
        return channel
    return f"{LEGACY_CHANNEL}:{hashlib.sha256(f'{schema}.{table}'.encode()).hexdigest()[:16]}"


def lock_timeout(value: str = LOCK_TIMEOUT, *, is_local: bool = True) -> sql.Composed:
    scope = sql.SQL("SET LOCAL" if is_local else "SET")
    return sql.SQL("{} lock_timeout = {}").format(scope, sql.Literal(value))


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


# --- finding the table -------------------------------------------------------------------------


def resolve_subject(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    may_create_table: bool,
    with_watch: bool,
    order_by: OrderBy | None = None,
) -> Subject:
    """The target's table as PostgreSQL resolves the name (an unqualified one through the
    search_path). Missing: ConfigError, unless `may_create_table` (no --table given) and no
    table of the default name exists in any schema, when step `table` creates it."""
    qualified = sql.Identifier(*filter(None, (target.schema, target.table))).as_string(conn)
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (qualified,),
    ).fetchone()
    if row is not None:
        if row[2] not in ("r", "p"):
            raise ConfigError(f"--table: {target.label} is not a table (a view or another kind)")
        return Subject(target, str(row[1]), int(row[0]), with_watch, order_by)
    if not may_create_table or target.schema or target.table != DEFAULT_TABLE:
        _find_table(conn, target, from_migrate=True)  # the ConfigError that names what exists
    elsewhere = tables_named_elsewhere(conn, target)
    if elsewhere:
        raise ConfigError(
            f"--table: no {target.label} table on the search_path, but {', '.join(elsewhere)}"
            f" exists: name it, e.g. --table {elsewhere[0]} (migrate creates the demo's"
            f" {DEFAULT_TABLE} table only when there is none)"
        )
    schema = _one(conn, "SELECT current_schema()", ())
    if schema is None:
        raise ConfigError(
            "--table: no schema of the search_path exists to create the demo's table in;"
            " create one or name the table with --table SCHEMA.TABLE"
        )
    return Subject(target, str(schema), None, with_watch, order_by)


# --- the steps ---------------------------------------------------------------------------------


def plan_table(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    if subject.table_oid is not None:
        return StepPlan("table", "already present", subject.label)
    t = subject.target
    create = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ({id} uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
        " {url} text NOT NULL, created_at timestamptz DEFAULT now())"
    ).format(table=subject.table, id=sql.Identifier(t.id_column), url=sql.Identifier(t.url_column))
    detail = f"{subject.label}, the demo's minimal table (no table was named and none existed)"
    return StepPlan("table", "created", detail, (Batch((lock_timeout(), create)),))


def plan_score_column(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    column = subject.target.score_column
    columns = _columns(conn, subject.table_oid) if subject.table_oid else {}
    if column in columns:
        if columns[column][1] not in SCORE_TYPES:
            raise ConfigError(
                f"--score-column: column {column!r} of {subject.label} has type"
                f" {columns[column][1]}; the score needs an integer column: name another one"
            )
        return StepPlan("score-column", "already present", f"{column} {columns[column][1]}")
    add = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} INTEGER").format(
        subject.table, sql.Identifier(column)
    )
    return StepPlan("score-column", "created", f"{column} integer", (Batch((lock_timeout(), add)),))


def _outside_range(subject: Subject) -> sql.Composed:
    return sql.SQL("NOT ({score} IS NULL OR {score} BETWEEN 0 AND 100)").format(
        score=sql.Identifier(subject.target.score_column)
    )


def refuse_rows_outside_range(conn: psycopg.Connection[Any], subject: Subject) -> None:
    """MigrationBlockedError naming the rows whose score breaks the CHECK, if there are any."""
    t = subject.target
    where = _outside_range(subject)
    count = _raw(conn, sql.SQL("SELECT count(*) FROM {} WHERE {}").format(subject.table, where), [])
    bad = int(count.fetchone()[0])  # type: ignore[index]
    if not bad:
        return
    listing = sql.SQL("SELECT {id}, {score} FROM {table} WHERE {where} ORDER BY {id}").format(
        id=sql.Identifier(t.id_column),
        score=sql.Identifier(t.score_column),
        table=subject.table,
        where=where,
    )
    first = _raw(conn, sql.SQL("{} LIMIT {}").format(listing, BAD_ROWS_SHOWN), []).fetchall()
    shown = ", ".join(f"{key} ({score})" for key, score in first)
    more = ", …" if bad > len(first) else ""
    rows = "1 row" if bad == 1 else f"{bad} rows"
    raise MigrationBlockedError(
        f"{rows} of {subject.label} {'has' if bad == 1 else 'have'} a {t.score_column} outside"
        f" 0-100 ({t.id_column} (score): {shown}{more}), so its CHECK constraint cannot be"
        f" added; nothing was changed. List them with: {listing.as_string(conn)}; then set each"
        " to a score in 0-100, or to NULL to have it scored again, and run `migrate` again"
    )


def plan_score_check(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    t = subject.target
    name = object_name(t.table, t.score_column, "check")
    oid = subject.table_oid
    query = "SELECT convalidated FROM pg_constraint WHERE conrelid = %s AND conname = %s"
    is_valid = _one(conn, query, (oid, name)) if oid else None
    if is_valid:
        return StepPlan("score-check", "already present", name)
    if oid and t.score_column in _columns(conn, oid):
        refuse_rows_outside_range(conn, subject)
    validate = sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
        subject.table, sql.Identifier(name)
    )
    if is_valid is False:  # left NOT VALID by an interrupted or older `migrate`
        detail = f"{name}: validated (it was left NOT VALID)"
        return StepPlan("score-check", "created", detail, (Batch((lock_timeout(), validate)),))
    add = sql.SQL(
        "ALTER TABLE {table} ADD CONSTRAINT {name}"
        " CHECK ({score} IS NULL OR {score} BETWEEN 0 AND 100) NOT VALID"
    ).format(table=subject.table, name=sql.Identifier(name), score=sql.Identifier(t.score_column))
    drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
        subject.table, sql.Identifier(name)
    )
    return StepPlan(
        "score-check",
        "created",
        f"{name}: {t.score_column} NULL or 0-100, added NOT VALID (a brief lock), then validated",
        (Batch((lock_timeout(), add)), Batch((lock_timeout(), validate))),
        undo=Batch((lock_timeout(), drop)),
    )


def _plan_index(
    conn: psycopg.Connection[Any], subject: Subject, step: str, name: str, shape: sql.Composed
) -> StepPlan:
    row = conn.execute(
        "SELECT c.relkind, i.indrelid, i.indisvalid FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_index i ON i.indexrelid = c.oid WHERE n.nspname = %s AND c.relname = %s",
        (subject.schema, name),
    ).fetchone()
    label = Target(table=name, schema=subject.schema).label
    if row is not None and (row[0] != "i" or row[1] != subject.table_oid):
        raise ConfigError(
            f"{step}: {label} already exists and is not this table's index; rename it"
        )
    if row is not None and row[2]:
        return StepPlan(step, "already present", label)
    statements: list[Statement] = [lock_timeout(CONCURRENT_LOCK_TIMEOUT, is_local=False)]
    if row is not None:  # INVALID: left by an interrupted CONCURRENTLY build
        statements.append(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(subject.in_schema(name))
        )
    statements.append(
        sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}").format(
            sql.Identifier(name), subject.table, shape
        )
    )
    detail = f"{label}, built CONCURRENTLY" + (" (the invalid one rebuilt)" if row else "")
    return StepPlan(step, "created", detail, (Batch(tuple(statements), is_atomic=False),))


def plan_score_index(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    score = sql.Identifier(subject.target.score_column)
    name = object_name("idx", subject.target.table, subject.target.score_column)
    shape = sql.SQL("({} DESC) WHERE {} IS NOT NULL").format(score, score)
    return _plan_index(conn, subject, "score-index", name, shape)


def plan_unscored_index(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    t = subject.target
    name = object_name("idx", t.table, t.score_column, "null")
    shape = sql.SQL("({}) WHERE {} IS NULL").format(
        sql.Identifier(t.id_column), sql.Identifier(t.score_column)
    )
    return _plan_index(conn, subject, "unscored-index", name, shape)


_CATEGORY_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}(score INTEGER)
RETURNS VARCHAR(10)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN score IS NULL THEN NULL
        WHEN score >= 80 THEN 'high'
        WHEN score >= 60 THEN 'medium'
        ELSE 'low'
    END
$$"""


def plan_category_function(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    function = subject.in_schema("get_quality_category")
    label = f"{Target(table='get_quality_category', schema=subject.schema).label}(integer)"
    signature = sql.SQL("{}(integer)").format(function).as_string(conn)
    if _one(conn, "SELECT to_regprocedure(%s)", (signature,)) is not None:
        return StepPlan("category-function", "already present", label)
    create = sql.SQL(_CATEGORY_FUNCTION.strip()).format(function=function)
    return StepPlan("category-function", "created", label, (Batch((lock_timeout(), create)),))


def plan_shard_plan(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    found = _one(conn, "SELECT to_regclass(%s)::text", (SHARD_PLAN_TABLE,))
    if found is not None:
        return StepPlan("shard-plan", "already present", found)
    create = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL,"
        " shard_count integer NOT NULL CHECK (shard_count > 0), low bigint NOT NULL,"
        " high bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (target, shard_count))"
    ).format(sql.Identifier(SHARD_PLAN_TABLE))
    detail = f"{SHARD_PLAN_TABLE}, the key bounds every `run --shard K/N` worker slices"
    return StepPlan("shard-plan", "created", detail, (Batch((lock_timeout(), create)),))


PlanStep = Callable[[psycopg.Connection[Any], Subject], StepPlan]


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """A named step: its planner reads the catalog and says what it will do."""

    name: str
    plan: PlanStep
