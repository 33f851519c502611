"""LISTEN/NOTIFY for watch mode: listening, waiting for notifications, finding the channel."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _translated
from backfill_quality.db.migration_steps import LEGACY_CHANNEL, NOTIFY_TRIGGER
from backfill_quality.db.schema import _table, _table_label


def listen(conn: psycopg.Connection[Any], channel: str) -> None:
    """LISTEN on `channel` (the connection must be in autocommit, as `connect` makes it)."""
    with _translated(f"listening on channel {channel!r}"):
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def wait_for_notifications(conn: psycopg.Connection[Any], timeout_s: float) -> list[str]:
    """Payloads of the notifications that arrive within `timeout_s` (plus any queued behind the
    first); [] on timeout. A lost connection raises a retryable DatabaseError."""
    with _translated("waiting for notifications"):
        payloads = [n.payload for n in conn.notifies(timeout=timeout_s, stop_after=1)]
        if payloads:
            payloads += [n.payload for n in conn.notifies(timeout=0.0)]
    return payloads


def notify_channel(conn: psycopg.Connection[Any], target: Target) -> str | None:
    """The channel the table's enabled NOTIFY trigger (`migrate --watch`) sends on, read from
    the trigger's arguments (none: a trigger of an older version, on the shared channel);
    None when the table has no such trigger."""
    qualified = _table(target).as_string(conn)
    with _translated(f"looking for the notify trigger on {_table_label(target)!r}"):
        row = conn.execute(
            "SELECT tgnargs, tgargs FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
            " AND tgname = %s AND tgenabled <> 'D'",
            (qualified, NOTIFY_TRIGGER),
        ).fetchone()
    if row is None:
        return None
    arguments = bytes(row[1]).split(b"\x00")[: int(row[0])]
    return arguments[3].decode() if len(arguments) > 3 else LEGACY_CHANNEL
