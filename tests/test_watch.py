"""`backfill-quality watch`: new rows are scored within seconds; signals stop it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import cli_env, read_checkpoint, run_cli
from tests.support.table import Row, UserTable, apply_migrations, serve_valid_images
from tests.test_notify import HookRecorder

FAST = ("--retries", "0", "--timeout", "5", "--workers", "1", "--log-format", "json")
SCORE_BOUND_S = 8.0  # insert -> scored; generous: the test machine is shared
WATCH_CHECKPOINT = ".backfill-progress.watch.json"


class Watch:
    """A running `backfill-quality watch` subprocess, its JSON log in a file."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_event(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(predicate(e) for e in self.events()):
                return
            assert self.process.poll() is None, self.log.read_text(encoding="utf-8")
            time.sleep(0.05)
        raise AssertionError(f"no such event in {timeout_s}s: {self.log.read_text()}")

    def stop(self, signum: int, timeout_s: float = 60.0) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout_s)


@contextmanager
def watching(tmp_path: Path, database_url: str, *args: str) -> Iterator[Watch]:
    log = tmp_path / "watch.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "backfill_quality", "watch", *FAST, *args],
            cwd=tmp_path,
            env=cli_env(database_url),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            watch = Watch(process, log)
            watch.wait_for_event(lambda e: "poll every" in e.get("message", ""), timeout_s=30)
            yield watch
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_until_scored(table: UserTable, rows: list[Row], timeout_s: float) -> float:
    """Seconds until every row has a score (fails after timeout_s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        scores = table.scores()
        if all(scores[row.id] is not None for row in rows):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not scored within {timeout_s}s: {table.scores()}")


def test_new_rows_are_scored_within_seconds_and_sigterm_stops_cleanly(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    table.install_audit()
    expected = serve_valid_images(image_server, 4)
    urls = list(expected)
    before = table.insert(urls[:1])  # there before watch starts: the first cycle finds it

    with watching(tmp_path, database_url, "--poll-interval", "60") as watch:
        wait_until_scored(table, before, SCORE_BOUND_S)
        delays = []
        for url in urls[1:]:
            delays.append(wait_until_scored(table, table.insert([url]), SCORE_BOUND_S))
        summaries = lambda e: e["event"] == "summary" and e["processed"] == 1  # noqa: E731
        watch.wait_for_event(lambda _: sum(map(summaries, watch.events())) == 4, timeout_s=10)
        code = watch.stop(signal.SIGTERM)  # idle now: waiting for a notification
        events = watch.events()

    assert code == 143, events
    assert max(delays) < SCORE_BOUND_S  # with a 60 s poll: the notifications did it
    assert {str(r.id): s for r, s in zip(table.rows, [expected[u] for u in urls], strict=True)} == {
        str(k): v for k, v in table.scores().items()
    }
    assert set(table.audit_writes().values()) == {1}
    checkpoint = read_checkpoint(tmp_path / WATCH_CHECKPOINT)
    assert checkpoint["finished"] is True and checkpoint["failed"] == 0, (checkpoint, events)
    assert any("SIGTERM" in e.get("message", "") for e in events)


def test_without_the_trigger_the_poll_finds_rows_and_failed_rows_wait(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table = UserTable(database_url, name="photos", id_type="integer").create()
    expected = serve_valid_images(image_server, 2)
    with (
        HookRecorder() as hooks,
        watching(
            tmp_path,
            database_url,
            *table.cli_options(),
            "--poll-interval",
            "0.5",
            "--notify-url",
            hooks.url("/cycle"),
            "--notify-each-cycle",
        ) as watch,
    ):
        broken = table.insert([image_server.url("/status/404")])
        rows = table.insert(list(expected))
        wait_until_scored(table, rows, SCORE_BOUND_S)
        time.sleep(2.0)  # several more poll cycles
        code = watch.stop(signal.SIGINT)
        events = watch.events()
        bodies = hooks.payloads("/cycle")

    assert code == 130, events
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("no backfill_quality_notify trigger" in w for w in warnings), warnings
    assert any("`backfill-quality migrate --watch --table photos`" in w for w in warnings), warnings
    assert table.scores()[broken[0].id] is None
    assert image_server.hits("/status/404") == 1, "a failed row is held back, not refetched"
    assert sum(b["succeeded"] for b in bodies) == 2 and sum(b["failed"] for b in bodies) == 1
    assert all(b["event"] == "watch.cycle" and b["processed"] > 0 for b in bodies), bodies
    cycles = [e for e in events if e["event"] == "start"]
    assert len(cycles) == len(bodies) <= 3, "a poll with only held-back rows runs no cycle"


def test_the_trigger_notifies_and_a_new_url_resets_a_stale_score(database_url: str) -> None:
    UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    apply_migrations(database_url)  # idempotent
    with (
        psycopg.connect(database_url, autocommit=True) as listener,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        listener.execute('LISTEN "backfill_quality:public.images"')
        new_id = conn.execute("INSERT INTO images (url) VALUES ('http://h/1') RETURNING id")
        row_id = str(new_id.fetchone()[0])  # type: ignore[index]
        conn.execute("INSERT INTO images (url, quality_score) VALUES ('http://h/2', 90)")
        conn.execute("UPDATE images SET quality_score = 70 WHERE id = %s", (row_id,))
        conn.execute("UPDATE images SET url = 'http://h/1b' WHERE id = %s", (row_id,))
        reset = conn.execute("SELECT quality_score FROM images WHERE id = %s", (row_id,))
        assert reset.fetchone() == (None,)
        conn.execute(
            "UPDATE images SET url = 'http://h/1c', quality_score = 55 WHERE id = %s", (row_id,)
        )
        kept = conn.execute("SELECT quality_score FROM images WHERE id = %s", (row_id,))
        assert kept.fetchone() == (55,)
        conn.execute("UPDATE images SET url = url WHERE id = %s", (row_id,))  # no change
        payloads = [n.payload for n in listener.notifies(timeout=1.0, stop_after=5)]
    assert payloads == [row_id, row_id]  # the insert, the reset; not scored rows or no-ops


def test_a_table_in_another_schema_is_watched_through_its_own_channel(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Media"')
    table = UserTable(database_url, schema="Media", name="photos", id_type="integer").create()
    other = UserTable(database_url).create()  # a second watched table must not wake this watch
    options = table.cli_options()
    for target in (options, other.cli_options()):
        migrated = run_cli("migrate", "--watch", *target, cwd=tmp_path, database_url=database_url)
        assert migrated.exit_code == 0, migrated.output
    url = next(iter(serve_valid_images(image_server, 1)))

    def cycles(watch: Watch) -> int:
        return sum(e["event"] == "start" for e in watch.events())

    with watching(tmp_path, database_url, "--poll-interval", "60", *options) as watch:
        time.sleep(1.0)  # the first cycle, if any, is over
        idle = cycles(watch)
        other.insert(["http://127.0.0.1:9/elsewhere.jpg"])
        time.sleep(1.5)
        woken_by_other = cycles(watch) - idle
        delay = wait_until_scored(table, table.insert([url]), SCORE_BOUND_S)
        code = watch.stop(signal.SIGINT)
        events = watch.events()

    assert code == 130, events
    assert delay < SCORE_BOUND_S  # with a 60 s poll: the notification did it
    assert woken_by_other == 0, "another table's inserts notify another channel"
    assert any('watching "Media".photos: LISTEN' in e.get("message", "") for e in events), events


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--notify-url", "http://127.0.0.1:9/x"), "--notify-each-cycle"),
        (("--poll-interval", "0"), "--poll-interval"),
        (("--shard", "5/2"), "--shard"),
    ],
)
def test_bad_watch_options_are_usage_errors(
    tmp_path: Path, database_url: str, args: tuple[str, ...], message: str
) -> None:
    result = run_cli("watch", *args, cwd=tmp_path, database_url=database_url, timeout_s=30)
    assert result.exit_code == 2, result.output
    assert message in result.output
