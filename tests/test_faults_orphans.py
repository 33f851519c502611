"""A run killed by any means leaves no process behind.

`kill -9` of the main process (the OOM killer, a container runtime that kills only the main PID)
must take along everything it started: the multiprocessing forkserver, the resource tracker and
every scoring process. Each test runs the real command in its own session against a slow image
server, so the scoring processes are busy when the main process is killed, records the process
tree, sends SIGKILL to the main process only and looks for survivors.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfill_quality.demo.imageserver import ImageServer
from tests.support.faults import (
    BackgroundRun,
    ProcessInfo,
    descendants,
    session_members,
    start_command,
    wait_until,
)
from tests.support.table import UserTable, serve_valid_images

ROWS = 40
LATENCY_MS = 300  # 40 rows, 4 in flight: the run lasts 3 s or more, the kill lands mid-run
ARGS = (
    *("--batch-size", "4", "--concurrency", "4", "--retries", "0", "--timeout", "10"),
    *("--log-format", "json"),
)
GONE_WITHIN_S = 5.0
FORKSERVER = "multiprocessing.forkserver"
RESOURCE_TRACKER = "multiprocessing.resource_tracker"


@pytest.fixture
def slow_table(database_url: str) -> Iterator[UserTable]:
    with ImageServer(latency_ms=LATENCY_MS) as server:
        table = UserTable(database_url, id_type="integer").create()
        table.insert(list(serve_valid_images(server, ROWS)))
        yield table


def busy_process_tree(run: BackgroundRun) -> list[ProcessInfo]:
    """The run's processes once its scoring processes are at work (a page written, rows left)."""
    wait_until(
        lambda: '"event": "page"' in run.stderr_text() or not run.is_running(),
        timeout_s=60,
        what="the first page to be scored",
    )
    assert run.is_running(), f"the run ended before it could be killed:\n{run.stderr_text()}"
    return descendants(run.pid)


def survivors(tree: list[ProcessInfo], session_id: int) -> list[ProcessInfo]:
    """Processes of the tree still alive, and any other live process of the run's session."""
    alive = {p.pid: p for p in tree if p.is_alive}
    alive |= {p.pid: p for p in session_members(session_id)}
    return list(alive.values())


def assert_nothing_survives_sigkill(run: BackgroundRun) -> None:
    try:
        tree = busy_process_tree(run)
        shown = "\n".join(f"  {p.pid} (parent {p.parent}) {p.cmdline[:100]}" for p in tree)
        children = [p for p in tree if p.parent == run.pid]
        forkservers = [p for p in children if FORKSERVER in p.cmdline]
        assert len(forkservers) == 1, f"one forkserver expected:\n{shown}"
        trackers = [p for p in children if RESOURCE_TRACKER in p.cmdline]
        assert trackers, f"a resource tracker expected:\n{shown}"
        workers = [p for p in tree if p.parent == forkservers[0].pid]
        assert workers, f"scoring processes expected:\n{shown}\n{run.stderr_text()[-3000:]}"

        run.process.send_signal(signal.SIGKILL)
        run.process.wait(timeout=10)  # reaps the main process only, never its children
        killed_s = time.monotonic()
        left = survivors(tree, run.pid)
        while left and time.monotonic() - killed_s < GONE_WITHIN_S:
            time.sleep(0.05)
            left = survivors(tree, run.pid)
        assert not left, (
            f"still running {GONE_WITHIN_S}s after the main process was killed:\n"
            + "\n".join(f"  {p.pid} (parent {p.parent}) {p.cmdline}" for p in left)
        )
    finally:
        run.kill_session()  # a failed test leaves nothing behind either


def test_sigkill_of_a_run_takes_its_forkserver_tracker_and_scoring_processes_along(
    slow_table: UserTable, tmp_path: Path
) -> None:
    run = start_command(
        "run", *ARGS, cwd=tmp_path, database_url=slow_table.database_url, label="run"
    )
    assert_nothing_survives_sigkill(run)


def test_sigkill_of_watch_takes_its_forkserver_tracker_and_scoring_processes_along(
    slow_table: UserTable, tmp_path: Path
) -> None:
    run = start_command(
        "watch",
        *ARGS,
        "--poll-interval",
        "60",
        cwd=tmp_path,
        database_url=slow_table.database_url,
        label="watch",
    )
    assert_nothing_survives_sigkill(run)
