"""One process per target at a time: PostgreSQL advisory locks held for a run's or watch's life.

The keys (`target.lock_keys`) come from the table as the server resolves it and the score
column. A run over the whole table holds the table's key exclusively; a `--shard K/N` run holds
it shared, plus its shard's key exclusively. So shards of one table run side by side, never
beside a whole-table run (which would do their work again), and no shard runs twice. Dry runs
take no lock: they write nothing (see `Runner`).

Who holds a lock comes from pg_locks joined to pg_stat_activity. Every session of a run or a
watch is named `backfill-quality <command> <pid>@<host>` (its application_name), which
PostgreSQL shows to every role, so a refusal names the process and the machine without a table
of our own to write and clean up; "since" is the holder's backend_start (shown to the same role
and to pg_read_all_stats), the moment it connected, which is when it took the lock.

A session lock ends with its session: a killed run leaves nothing stale, and after a reconnect
`ensure` takes the lock again on the new session. If another process took it in between, the
run stops (TargetLockedError) rather than score the same rows as the other one.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import UTC, datetime
from typing import Any

from backfill_quality import db
from backfill_quality.config import Shard, Target
from backfill_quality.errors import TargetLockedError
from backfill_quality.pipeline.progress import format_duration
from backfill_quality.pipeline.target import lock_keys

MAX_APPLICATION_NAME_BYTES = 63
"""PostgreSQL keeps the first 63 bytes of an application_name (NAMEDATALEN - 1)."""
HOLDER_ATTEMPTS = 3
"""Tries when the holder ends between our attempt and our look at who held it."""
_HOLDER_NAME = re.compile(r"^backfill-quality (?P<command>\S+) (?P<pid>\d+)@(?P<host>.*)$")


def holder_name(command: str) -> str:
    """The application_name of this process's sessions: `backfill-quality run 1234@web-1`."""
    text = f"backfill-quality {command} {os.getpid()}@{socket.gethostname()}"
    return text.encode()[:MAX_APPLICATION_NAME_BYTES].decode(errors="ignore")


class TargetLock:
    """The lock of one target (table, score column, shard), taken by `ensure` on a session."""

    def __init__(self, target: Target, shard: Shard | None, *, command: str) -> None:
        self.target = target
        self.shard = shard
        self.command = command
        self.application_name = holder_name(command)
        self._table = ""
        self._keys: tuple[int, int | None] | None = None

    def ensure(self, conn: Any) -> None:
        """Make sure this process holds the lock: take it on `conn` (a new session), or find
        it held by another session of ours (watch's listener, or the session a reconnect left
        behind). Else TargetLockedError, naming who holds it. Nothing happens while the table
        does not exist: the table check that follows says so."""
        is_first = self._keys is None
        if self._keys is None:
            table = db.table_identity(conn, self.target)
            if table is None:
                return
            self._table = table
            self._keys = lock_keys(table, self.target.score_column, self.shard)
        table_key, shard_key = self._keys
        holders: list[db.LockHolder] = []
        for _ in range(HOLDER_ATTEMPTS):
            blocked_on = self._try(conn, table_key, shard_key)
            if blocked_on is None:
                return
            holders = db.advisory_lock_holders(conn, blocked_on)
            if holders and all(h.application_name == self.application_name for h in holders):
                return
            if holders:
                break
        raise TargetLockedError(
            self._refusal(holders, is_blocked_on_table=blocked_on == table_key)
            if is_first
            else self._taken_over(holders)
        )

    @staticmethod
    def _try(conn: Any, table_key: int, shard_key: int | None) -> int | None:
        """Take the keys; None when held, else the key someone else holds."""
        is_shard = shard_key is not None
        if not db.try_advisory_lock(conn, table_key, is_shared=is_shard):
            return table_key
        if shard_key is None or db.try_advisory_lock(conn, shard_key, is_shared=False):
            return None
        db.advisory_unlock(conn, table_key, is_shared=True)
        return shard_key

    def _refusal(self, holders: list[db.LockHolder], *, is_blocked_on_table: bool) -> str:
        who = _describe_all(holders)
        table = self._table
        if self.shard is not None and not is_blocked_on_table:
            lead = (
                f"shard {self.shard} of {table} is already being scored by {who} (other "
                "shards may run beside it)"
            )
        elif self.shard is not None:
            lead = (
                f"the whole of {table} is already being scored by {who}; shard runs start "
                "once it has ended"
            )
        elif holders and all(h.is_shared for h in holders):
            lead = (
                f"{len(holders)} shard run(s) are already scoring {table}: {who}. A run over "
                "the whole table would redo their work; to add a worker, run a missing shard "
                "(--shard K/N)"
            )
        else:
            lead = f"another process is already scoring the whole of {table}: {who}"
        return (
            f"{lead}. This run did nothing: wait for the other one to end, or stop it (Ctrl+C "
            "in its terminal, or kill PID on its host). A dry run (--dry-run) takes no lock."
        )

    def _taken_over(self, holders: list[db.LockHolder]) -> str:
        again = (
            "start it again"
            if self.command == "watch"
            else "its checkpoint is saved: continue with --resume"
        )
        return (
            f"while this {self.command} reconnected to the database, another process took the "
            f"lock of {self._table}: {_describe_all(holders)}. This {self.command} stopped so "
            f"that the two do not score the same rows; {again} once the other one has ended."
        )


def _describe_all(holders: list[db.LockHolder]) -> str:
    if not holders:
        return "a session that has just ended (try again)"
    return "; ".join(describe_holder(h) for h in holders)


def describe_holder(holder: db.LockHolder, now: datetime | None = None) -> str:
    """'`backfill-quality run`, pid 1234 on web-1, since 2026-11-24 10:00:03 UTC (5m 02s ago)'."""
    match = _HOLDER_NAME.match(holder.application_name)
    if match:
        who = f"`backfill-quality {match['command']}`, pid {match['pid']} on {match['host']}"
    else:
        name = holder.application_name or "(no application_name)"
        who = f"a session named {name!r} (PostgreSQL backend pid {holder.backend_pid})"
    start = holder.backend_start
    if start is None:
        return f"{who}, since a time this database role may not see"
    age_s = ((now or datetime.now(UTC)) - start).total_seconds()
    moment = start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{who}, since {moment} ({format_duration(age_s)} ago)"
