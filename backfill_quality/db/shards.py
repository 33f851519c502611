"""Shard key ranges: the contiguous [lo, hi) slice of the key space of worker K of N.

Integer slices are cut from bounds recorded once per (table and key column, N) in the shard
plan table (`migrate` step `shard-plan`), so workers started at different times, and every
resume, use the same slices: PostgreSQL is the coordinator, and no row falls between two slices.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Shard, Target
from backfill_quality.db.connection import _raw, _translated
from backfill_quality.db.pages import IdRange
from backfill_quality.db.schema import INTEGER_ID_TYPES, _table, _table_label
from backfill_quality.errors import ConfigError

UUID_SPACE = 1 << 128
SHARD_PLAN_TABLE = "backfill_quality_shard_plan"


def _slice_bounds(lowest: int, span: int, shard: Shard) -> tuple[int | None, int | None]:
    """Bounds of slice K of N over [lowest, lowest + span): open at both outer ends."""
    lo = None if shard.index == 0 else lowest + shard.index * span // shard.count
    last = shard.index == shard.count - 1
    hi = None if last else lowest + (shard.index + 1) * span // shard.count
    return lo, hi


def plan_target(conn: psycopg.Connection[Any], target: Target) -> str:
    """The plan's name for the key column: 'schema.table.column', each part quoted as needed.

    The schema is resolved by the database, so workers that name the same table with or
    without its schema (or with another search_path) share one plan.
    """
    query = sql.SQL(
        "SELECT format('%I.%I.%I', n.nspname, c.relname, $2::text) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)"
    )
    with _translated(f"naming the shard plan of {_table_label(target)!r}"):
        row = _raw(conn, query, [_table(target).as_string(conn), target.id_column]).fetchone()
    if row is None or row[0] is None:
        raise ConfigError(f"--table: table {_table_label(target)!r} does not exist")
    return str(row[0])


def _require_plan_table(conn: psycopg.Connection[Any]) -> None:
    with _translated("looking for the shard plan table"):
        row = conn.execute("SELECT to_regclass(%s)", (SHARD_PLAN_TABLE,)).fetchone()
    if row is None or row[0] is None:
        raise ConfigError(
            f"--shard: table {SHARD_PLAN_TABLE!r} does not exist in this database (it was"
            " migrated by an older version); integer keys need it so that every worker uses"
            " the same slices. Run `backfill-quality migrate` once, then start the workers again"
        )


def shard_plan_bounds(
    conn: psycopg.Connection[Any], target: Target, shard_count: int
) -> tuple[int, int]:
    """(low, high) of the integer key for N = shard_count: recorded by the first worker that
    asks (min and max of the key then), read back by every other worker and every resume."""
    _require_plan_table(conn)
    name = plan_target(conn, target)
    key = sql.Identifier(target.id_column)
    record = sql.SQL(
        "INSERT INTO {plan} (target, shard_count, low, high)"
        " SELECT $1, $2, coalesce(min({key}), 0), coalesce(max({key}), 0) FROM {table}"
        " ON CONFLICT (target, shard_count) DO NOTHING"
    ).format(plan=sql.Identifier(SHARD_PLAN_TABLE), key=key, table=_table(target))
    read = sql.SQL("SELECT low, high FROM {} WHERE target = $1 AND shard_count = $2").format(
        sql.Identifier(SHARD_PLAN_TABLE)
    )
    with _translated(f"recording the shard plan of {_table_label(target)!r}"), conn.transaction():
        # Two statements: after waiting on a concurrent first worker's INSERT, the SELECT takes a
        # new snapshot (READ COMMITTED) and sees that worker's row.
        _raw(conn, record, [name, shard_count])
        row = _raw(conn, read, [name, shard_count]).fetchone()
    if row is None:  # only if someone deleted the row between the two statements
        raise ConfigError(
            f"--shard: the shard plan of {name} for {shard_count} shards vanished while it was"
            " read (was it being reset?); start the worker again"
        )
    return int(row[0]), int(row[1])


def key_range_for_shard(
    conn: psycopg.Connection[Any], target: Target, id_type: str, shard: Shard
) -> IdRange:
    """Contiguous [lo, hi) slice of the key space for worker K of N (None: open end).

    uuid keys: equal slices of the 128-bit space (stable, needs no query). Integer keys: equal
    slices of the min..max recorded in the shard plan by the first worker of this N (the same
    bounds for every worker and every resume); the first and last slices are open, so rows
    outside that range (inserted later) are still covered. Text keys cannot be split evenly:
    ConfigError.
    """
    if id_type == "uuid":
        lo, hi = _slice_bounds(0, UUID_SPACE, shard)
        return (
            None if lo is None else str(uuid.UUID(int=lo)),
            None if hi is None else str(uuid.UUID(int=hi)),
        )
    if id_type in INTEGER_ID_TYPES:
        lowest, highest = shard_plan_bounds(conn, target, shard.count)
        return _slice_bounds(lowest, highest - lowest + 1, shard)
    raise ConfigError(
        f"--shard: the id column {target.id_column!r} has type {id_type}; only uuid and integer"
        " keys can be split into contiguous shards. Run without --shard (one worker), or shard"
        " on a uuid or integer key column with --id-column"
    )
