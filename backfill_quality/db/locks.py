"""Session advisory locks on a target, and who holds them (pg_locks and pg_stat_activity).

The policy (which keys, shared or exclusive, what the user is told) is `pipeline/runlock.py`'s;
these are its statements. A session lock ends with its session, so a killed run leaves none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from backfill_quality.config import Target
from backfill_quality.db.connection import _translated
from backfill_quality.db.schema import _table

_LOW_32_BITS = 0xFFFF_FFFF
_ACTION = "taking the target's run lock"


@dataclass(frozen=True, slots=True)
class LockHolder:
    """A session holding an advisory lock: its backend, name, mode and start (None when this
    role may not see it: PostgreSQL hides other roles' backend_start, not application_name)."""

    backend_pid: int
    application_name: str
    is_shared: bool
    backend_start: datetime | None


def table_identity(conn: psycopg.Connection[Any], target: Target) -> str | None:
    """`schema.table` as the server resolves --table (search_path included), None if absent."""
    with _translated(_ACTION):
        row = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            (_table(target).as_string(conn),),
        ).fetchone()
    return None if row is None else f"{row[0]}.{row[1]}"


def try_advisory_lock(conn: psycopg.Connection[Any], key: int, *, is_shared: bool) -> bool:
    """Take the session lock `key` (shared or exclusive) if free now; never waits."""
    function = "pg_try_advisory_lock_shared" if is_shared else "pg_try_advisory_lock"
    with _translated(_ACTION):
        row = conn.execute(f"SELECT {function}(%s)", (key,)).fetchone()
    return bool(row and row[0])


def advisory_unlock(conn: psycopg.Connection[Any], key: int, *, is_shared: bool) -> None:
    """Release one hold of the session lock `key`."""
    function = "pg_advisory_unlock_shared" if is_shared else "pg_advisory_unlock"
    with _translated(_ACTION):
        conn.execute(f"SELECT {function}(%s)", (key,))


def advisory_lock_holders(conn: psycopg.Connection[Any], key: int) -> list[LockHolder]:
    """The sessions holding the lock `key` in this database, longest-connected first.

    pg_locks shows a bigint key as its high half in classid and its low half in objid, with
    objsubid 1.
    """
    with _translated(_ACTION):
        rows = conn.execute(
            "SELECT l.pid, coalesce(a.application_name, ''), l.mode = 'ShareLock',"
            " a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid"
            " ORDER BY a.backend_start NULLS LAST, l.pid",
            ((key >> 32) & _LOW_32_BITS, key & _LOW_32_BITS),
        ).fetchall()
    return [
        LockHolder(int(pid), str(name), bool(shared), start) for pid, name, shared, start in rows
    ]
