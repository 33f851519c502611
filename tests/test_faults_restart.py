"""The database server restarts in the middle of a run (issue 4): the tool reconnects and
finishes, every row scored exactly once.

The session's shared server must stay up for the other tests, so this test starts a private
embedded PostgreSQL in its tmp_path, and stops and starts it (same data directory, so the same
socket and the same URL) while `backfill-quality run` is working against it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import CHECKPOINT_NAME, read_checkpoint
from tests.support.faults import assert_low_water_mark_honest, start_run, wait_until
from tests.support.private_pg import PrivateServer, private_server
from tests.support.table import UserTable, apply_migrations, serve_valid_images

ROW_COUNT = 60
LATENCY_MS = 100
DOWN_S = 1.5
RUN_ARGS = ("--concurrency", "4", "--batch-size", "10", "--retries", "0", "--timeout", "5")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateServer]:
    with private_server(tmp_path / "pg") as private:
        yield private


def processed_so_far(checkpoint_path: Path) -> int:
    """`processed` in the checkpoint on disk, 0 while there is none (or it is being replaced)."""
    try:
        return int(json.loads(checkpoint_path.read_text(encoding="utf-8"))["processed"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_server_restart_mid_run_reconnects_and_scores_every_row_once(
    server: PrivateServer, tmp_path: Path
) -> None:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "restart"')
    database_url = server.database_url("restart")
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    checkpoint_path = work_dir / CHECKPOINT_NAME

    with ImageServer(latency_ms=LATENCY_MS) as images:
        table = UserTable(database_url, id_type="integer").create().install_audit()
        apply_migrations(database_url)
        expected = serve_valid_images(images, ROW_COUNT)
        rows = table.insert(list(expected))

        run = start_run(*RUN_ARGS, cwd=work_dir, database_url=database_url)
        wait_until(
            lambda: processed_so_far(checkpoint_path) > 0 or not run.is_running(),
            timeout_s=30,
            what="a first checkpoint with processed > 0",
        )
        try:
            assert run.is_running(), f"the run ended before the restart:\n{run.stderr_text()}"
            processed_before = processed_so_far(checkpoint_path)
            pid_before = server.handle.get_pid()
            down_s = server.restart(down_s=DOWN_S)
            assert server.handle.get_pid() != pid_before, "the server was really restarted"
        except BaseException:
            run.kill_session()  # leave no run behind against a server about to be stopped
            raise
        result = run.wait(timeout_s=90)

    context = f"processed {processed_before} before a {down_s:.1f}s outage\n{result.output}"
    assert processed_before < ROW_COUNT, context
    assert result.exit_code == 0, context
    assert "reconnecting" in result.stderr, context
    assert "Traceback" not in result.stderr, context
    scores = table.scores()
    wrong = {r.id: (scores[r.id], expected[r.url]) for r in rows if scores[r.id] != expected[r.url]}
    assert not wrong, f"(actual, expected) scores: {wrong}\n{context}"
    assert table.audit_writes() == Counter(str(r.id) for r in rows), context
    checkpoint = read_checkpoint(checkpoint_path)
    assert checkpoint["finished"] is True, checkpoint
    counts = {key: checkpoint[key] for key in ("total", "processed", "succeeded", "failed")}
    assert counts == {
        "total": ROW_COUNT,
        "processed": ROW_COUNT,
        "succeeded": ROW_COUNT,
        "failed": 0,
    }, checkpoint
    assert checkpoint["skipped"] == 0 and checkpoint["failedImages"] == [], checkpoint
    assert_low_water_mark_honest(table, checkpoint)
    assert checkpoint["lastProcessedId"] == max(int(r.id) for r in rows), checkpoint
