"""Two runs at once on one table: a PostgreSQL advisory lock per target, held for a run's life.

Real processes on a real database. The first run is held in the middle of its work by row locks
the test takes (`SELECT … FOR UPDATE`: its writes wait, its advisory lock stays held), so the
second run always meets a live holder, however slow the machine is.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.pipeline import runlock
from tests.support.cli import CHECKPOINT_NAME, CliResult, read_checkpoint, run_cli
from tests.support.faults import (
    BackgroundRun,
    assert_low_water_mark_honest,
    assert_written_at_most_once,
    start_run,
    wait_until,
)
from tests.support.table import Row, UserTable, apply_migrations, serve_valid_images
from tests.test_watch import watching

EXIT_LOCKED = 4
ARGS = ("--retries", "0", "--timeout", "5", "--workers", "1", "--detector", "heuristic")
HOST = socket.gethostname()
INTRUDER = "backfill-quality run 999999@elsewhere"


@dataclass(frozen=True)
class Holder:
    """One advisory lock in the test's database, and the session holding it."""

    backend_pid: int
    application_name: str
    mode: str
    key: int


def holders(database_url: str) -> list[Holder]:
    """Every granted advisory lock of the database (a fresh snapshot)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT l.pid, a.application_name, l.mode, (l.classid::bigint << 32) | l.objid::bigint"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return [Holder(*row) for row in rows]


def held_by(database_url: str, pid: int) -> list[Holder]:
    """The advisory locks held by the tool process `pid` (its application_name names it)."""
    return [h for h in holders(database_url) if f" {pid}@{HOST}" in h.application_name]


@contextmanager
def rows_locked(database_url: str, table: str = "images") -> Iterator[psycopg.Connection[Any]]:
    """Lock every row: a run's writes wait (its page reads do not) until the block ends."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SELECT 1 FROM {table} FOR UPDATE")
        try:
            yield conn
        finally:
            conn.rollback()


def slow_table(database_url: str, server: ImageServer, count: int) -> tuple[UserTable, list[Row]]:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    table.install_audit()
    rows = table.insert(list(serve_valid_images(server, count)))
    return table, rows


def run_elsewhere(tmp_path: Path, database_url: str, name: str, *args: str) -> CliResult:
    """`run` from another folder, as from another terminal or machine (no shared checkpoint)."""
    folder = tmp_path / name
    folder.mkdir()
    return run_cli("run", *ARGS, *args, cwd=folder, database_url=database_url, timeout_s=90)


def start(tmp_path: Path, database_url: str, name: str, *args: str) -> BackgroundRun:
    folder = tmp_path / name
    folder.mkdir()
    return start_run(*ARGS, *args, cwd=folder, database_url=database_url, label=name)


def assert_refused(result: CliResult, *pids: int) -> None:
    assert result.exit_code == EXIT_LOCKED, result.output
    assert "Traceback" not in result.output
    for pid in pids:
        assert f"pid {pid} on {HOST}" in result.stderr, result.stderr
    assert "since" in result.stderr, result.stderr


def test_a_second_run_on_the_same_table_says_who_holds_it_and_does_nothing(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table, rows = slow_table(database_url, image_server, 6)
    with rows_locked(database_url):
        first = start(tmp_path, database_url, "first")
        wait_until(lambda: bool(held_by(database_url, first.pid)), timeout_s=60, what="a lock")

        second = run_elsewhere(tmp_path, database_url, "second")
        qualified = run_elsewhere(tmp_path, database_url, "third", "--table", "public.images")

        assert first.is_running()
    result = first.wait(timeout_s=90)

    assert_refused(second, first.pid)
    assert_refused(qualified, first.pid)  # one table however it is spelt
    assert "whole" in second.stderr and "images" in second.stderr
    assert not (tmp_path / "second" / CHECKPOINT_NAME).exists()
    assert result.exit_code == 0, result.output
    assert table.audit_writes() == Counter(str(row.id) for row in rows)
    fetched = sum(image_server.hits(path) for path in image_server_paths(rows))
    assert fetched == len(rows), "the refused run downloaded images"
    assert not holders(database_url), "the lock ends with the run"


def image_server_paths(rows: list[Row]) -> list[str]:
    return ["/" + row.url.split("/", 3)[3] for row in rows]


def test_shards_run_side_by_side_but_never_beside_a_whole_table_run(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table, rows = slow_table(database_url, image_server, 12)
    while len({uuid.UUID(str(row.id)).int >> 127 for row in rows}) < 2:  # work for each shard
        rows += table.insert([rows[0].url])
    with rows_locked(database_url):
        shards = [start(tmp_path, database_url, f"s{k}", "--shard", f"{k}/2") for k in (0, 1)]
        wait_until(
            lambda: all(len(held_by(database_url, s.pid)) == 2 for s in shards),
            timeout_s=60,
            what="both shards holding their locks at once",
        )
        modes = sorted(h.mode for s in shards for h in held_by(database_url, s.pid))
        assert modes == ["ExclusiveLock", "ExclusiveLock", "ShareLock", "ShareLock"]

        whole = run_elsewhere(tmp_path, database_url, "whole")
        same_shard = run_elsewhere(tmp_path, database_url, "again", "--shard", "1/2")

        assert all(s.is_running() for s in shards)
    results = [s.wait(timeout_s=90) for s in shards]

    assert_refused(whole, shards[0].pid, shards[1].pid)
    assert_refused(same_shard, shards[1].pid)
    assert f"pid {shards[0].pid}" not in same_shard.stderr, "shard 0/2 is not in its way"
    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    assert table.audit_writes() == Counter(str(row.id) for row in rows)

    late = table.insert([image_server.url(image_server_paths(rows)[0])])
    with rows_locked(database_url):
        whole_run = start(tmp_path, database_url, "whole-run")
        wait_until(lambda: bool(held_by(database_url, whole_run.pid)), timeout_s=60, what="lock")
        (held,) = held_by(database_url, whole_run.pid)
        assert held.mode == "ExclusiveLock"

        shard = run_elsewhere(tmp_path, database_url, "shard", "--shard", "0/2")

    assert_refused(shard, whole_run.pid)
    assert "whole" in shard.stderr
    assert whole_run.wait(timeout_s=90).exit_code == 0
    assert table.scores()[late[0].id] is not None


def test_watch_holds_the_lock_for_its_life_and_a_dry_run_needs_none(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table, rows = slow_table(database_url, image_server, 3)
    with watching(tmp_path, database_url, "--poll-interval", "60") as watch:
        wait_until(
            lambda: all(v is not None for v in table.scores().values()),
            timeout_s=60,
            what="watch scoring the rows",
        )
        table.insert([rows[0].url])  # work for the runs below, which watch will also score
        refused = run_elsewhere(tmp_path, database_url, "run")
        dry = run_elsewhere(tmp_path, database_url, "dry", "--dry-run")
        code = watch.stop(signal.SIGTERM)

    assert refused.exit_code == EXIT_LOCKED, refused.output
    assert f"pid {watch.process.pid} on {HOST}" in refused.stderr
    assert "watch" in refused.stderr
    assert dry.exit_code == 0, dry.output
    assert code == 143
    after = run_elsewhere(tmp_path, database_url, "after")
    assert after.exit_code == 0, after.output
    assert_written_at_most_once(table)


def test_a_run_takes_its_lock_again_after_a_reconnect(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table, rows = slow_table(database_url, image_server, 6)
    with rows_locked(database_url) as locker:
        first = start(tmp_path, database_url, "first")
        wait_until(lambda: bool(held_by(database_url, first.pid)), timeout_s=60, what="a lock")
        (before,) = held_by(database_url, first.pid)
        wait_until(
            lambda: is_waiting(database_url, before.backend_pid),
            timeout_s=60,
            what="the run's first writes, held by the row locks",
        )
        locker.execute("SELECT pg_terminate_backend(%s)", (before.backend_pid,))
        wait_until(
            lambda: [h.backend_pid for h in held_by(database_url, first.pid)] not in ([], [before]),
            timeout_s=60,
            what="the lock taken again on a new connection",
        )
        (after,) = held_by(database_url, first.pid)
        assert after.backend_pid != before.backend_pid and after.key == before.key

        second = run_elsewhere(tmp_path, database_url, "second")

    result = first.wait(timeout_s=90)
    assert_refused(second, first.pid)
    assert result.exit_code == 0, result.output
    assert "reconnecting" in result.stderr
    assert table.audit_writes() == Counter(str(row.id) for row in rows)


def test_a_run_whose_lock_was_taken_while_it_reconnected_stops_cleanly(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table, rows = slow_table(database_url, image_server, 6)
    intruder = psycopg.connect(database_url, autocommit=True, application_name=INTRUDER)
    try:
        with rows_locked(database_url) as locker:
            first = start(tmp_path, database_url, "first")
            wait_until(lambda: bool(held_by(database_url, first.pid)), timeout_s=60, what="lock")
            (held,) = held_by(database_url, first.pid)
            wait_until(
                lambda: is_waiting(database_url, held.backend_pid),
                timeout_s=60,
                what="the run's first writes, held by the row locks",
            )
            queued = threading.Thread(
                target=intruder.execute, args=("SELECT pg_advisory_lock(%s)", (held.key,))
            )
            queued.start()  # waits behind the run: granted the moment the run's session ends
            wait_until(
                lambda: is_waiting(database_url, intruder.info.backend_pid),
                timeout_s=30,
                what="the intruder to queue for the lock",
            )
            locker.execute("SELECT pg_terminate_backend(%s)", (held.backend_pid,))
            queued.join(timeout=30)
            result = first.wait(timeout_s=90)

        assert result.exit_code == EXIT_LOCKED, result.output
        assert "999999" in result.stderr and "elsewhere" in result.stderr, result.stderr
        assert "Traceback" not in result.output
        checkpoint_path = tmp_path / "first" / CHECKPOINT_NAME
        checkpoint = read_checkpoint(checkpoint_path)
        assert checkpoint["finished"] is False
        assert_low_water_mark_honest(table, checkpoint)
        assert_written_at_most_once(table)
        assert not table.audit_writes(), "nothing written once the lock was lost"
    finally:
        intruder.close()

    resumed = run_cli(
        "run", *ARGS, "--resume", cwd=tmp_path / "first", database_url=database_url, timeout_s=90
    )
    assert resumed.exit_code == 0, resumed.output
    assert table.audit_writes() == Counter(str(row.id) for row in rows)


def is_waiting(database_url: str, backend_pid: int) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (backend_pid,)
        ).fetchone()
    return row == ("Lock",)


def test_the_holder_name_fits_postgresqls_63_bytes_and_names_pid_and_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 200)
    name = runlock.holder_name("watch")
    assert len(name.encode()) == 63
    assert name.startswith(f"backfill-quality watch {os.getpid()}@hhh")
    monkeypatch.setattr(socket, "gethostname", lambda: "ré" * 40)  # never cut inside a character
    assert len(runlock.holder_name("run").encode()) <= 63


def test_a_holder_is_described_by_process_and_host_or_by_its_backend() -> None:
    now = datetime(2026, 11, 24, 10, 5, 3, tzinfo=UTC)
    ours = db.LockHolder(77, "backfill-quality run 1234@web-1", False, now - timedelta(minutes=5))
    assert runlock.describe_holder(ours, now) == (
        "`backfill-quality run`, pid 1234 on web-1, since 2026-11-24 10:00:03 UTC (5m 00s ago)"
    )
    other_role = db.LockHolder(78, "psql", True, None)
    assert runlock.describe_holder(other_role, now) == (
        "a session named 'psql' (PostgreSQL backend pid 78), since a time this database role "
        "may not see"
    )
