"""Process faults: SIGINT, SIGTERM and SIGKILL at random moments of a real run.

Each trial runs the real command in a subprocess against a real PostgreSQL table with an audit
trigger, over an image server with added latency so that a run lasts a few seconds. After the
signal: the exit code, the checkpoint (whole, low-water mark honest: every row at or below it is
scored or listed as failed), then `--resume` finishes with every valid row scored exactly once.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.pipeline.scoringpool import RESTARTED
from tests.support.cli import CHECKPOINT_NAME, json_lines, read_checkpoint, run_cli
from tests.support.faults import (
    BackgroundRun,
    assert_low_water_mark_honest,
    assert_written_at_most_once,
    kill_scoring_workers,
    reset_scores,
    start_run,
    wait_until,
)
from tests.support.table import Row, UserTable, serve_valid_images

LATENCY_MS = 100
VALID_ROWS = 14
RUN_ARGS = ("--batch-size", "3", "--concurrency", "4", "--retries", "0", "--timeout", "5")
JSON_LOGS = ("--log-format", "json")
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
STARTED = '"event": "start"'
SECOND_SIGNAL_LIMIT_S = 3.0  # "at once": the first signal alone waits for the lock for ever
SLOW_TRIAL_TIMEOUT_S = 1200  # the trials of 12 and 24 runs, each with its resume


@dataclass
class Scene:
    """A table of valid and broken rows behind a slow image server, and where the run works."""

    table: UserTable
    server: ImageServer
    expected: dict[str, int]  # url -> score
    valid: list[Row]
    broken: list[Row]
    workdir: Path

    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / CHECKPOINT_NAME

    def start(self, *extra: str, label: str = "run") -> BackgroundRun:
        return start_run(
            *RUN_ARGS,
            *JSON_LOGS,
            *extra,
            cwd=self.workdir,
            database_url=self.table.database_url,
            label=label,
        )

    def reset(self) -> None:
        reset_scores(self.table)
        self.checkpoint_path.unlink(missing_ok=True)


@pytest.fixture
def scene(database_url: str, tmp_path: Path) -> Iterator[Scene]:
    with ImageServer(latency_ms=LATENCY_MS) as server:
        table = UserTable(database_url, id_type="integer").create().install_audit()
        expected = serve_valid_images(server, VALID_ROWS)
        urls = list(expected)
        broken_urls = [server.url("/status/404"), server.url("/status/403")]
        valid = table.insert(urls[: VALID_ROWS // 2])
        broken = table.insert(broken_urls[:1])
        valid += table.insert(urls[VALID_ROWS // 2 :])
        broken += table.insert(broken_urls[1:])
        yield Scene(table, server, expected, valid, broken, tmp_path)


def has_started(run: BackgroundRun) -> bool:
    return STARTED in run.stderr_text() or not run.is_running()


def resume_and_check_finished(scene: Scene, context: str) -> dict[str, Any]:
    """`--resume` completes the job: every valid row scored once, broken rows NULL and listed."""
    result = run_cli(
        "run",
        "--resume",
        *RUN_ARGS,
        cwd=scene.workdir,
        database_url=scene.table.database_url,
    )
    assert result.exit_code == 3, f"{context}: resume exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, f"{context}: resume printed\n{result.output}"
    return assert_job_done(scene, context)


def assert_job_done(scene: Scene, context: str) -> dict[str, Any]:
    """Every valid row scored right and written once, broken rows NULL and listed, finished."""
    scores = scene.table.scores()
    wrong = {
        row.id: (scores[row.id], scene.expected[row.url])
        for row in scene.valid
        if scores[row.id] != scene.expected[row.url]
    }
    assert not wrong, f"{context}: (actual, expected) scores after resume: {wrong}"
    assert all(scores[row.id] is None for row in scene.broken), context
    writes = scene.table.audit_writes()
    assert writes == Counter(str(row.id) for row in scene.valid), (
        f"{context}: each valid row written exactly once, got {writes}"
    )
    checkpoint = read_checkpoint(scene.checkpoint_path)
    assert checkpoint["finished"] is True, context
    assert {str(entry["id"]) for entry in checkpoint["failedImages"]} == {
        str(row.id) for row in scene.broken
    }, context
    return checkpoint


def interrupt_trial(scene: Scene, signum: signal.Signals, delay_s: float) -> str:
    """Signal a run `delay_s` after it started its pipeline; check the stop, then resume."""
    context = f"{signum.name} {delay_s:.2f}s after start"
    run = scene.start()
    wait_until(lambda: has_started(run), timeout_s=30, what="the run to start")
    time.sleep(delay_s)
    run.send(signum)
    result = run.wait(timeout_s=30)
    assert "Traceback" not in result.output, context
    if result.exit_code != EXIT_CODES[signum]:
        # only a run that had finished before the signal arrived may exit otherwise
        summaries = [e for e in json_lines(result.stderr) if e["event"] == "summary"]
        assert summaries and summaries[-1]["interrupted"] is None, f"{context}\n{result.output}"
    checkpoint = read_checkpoint(scene.checkpoint_path)  # whole: parses as one JSON object
    assert checkpoint["processed"] == (
        checkpoint["succeeded"] + checkpoint["failed"] + checkpoint["skipped"]
    ), context
    assert_low_water_mark_honest(scene.table, checkpoint)
    assert_written_at_most_once(scene.table)
    if result.exit_code in EXIT_CODES.values():
        assert checkpoint["finished"] is False, context
        resume_and_check_finished(scene, context)
    return context


def run_trials(scene: Scene, signals: list[signal.Signals], seed: int) -> None:
    rng = random.Random(seed)
    for signum in signals:
        scene.reset()
        interrupt_trial(scene, signum, rng.uniform(0.0, 1.5))


# --- SIGINT / SIGTERM ------------------------------------------------------------------------


def test_sigint_and_sigterm_mid_run_save_an_honest_checkpoint_and_resume_finishes(
    scene: Scene,
) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")  # shown with a failure, to replay the moments
    run_trials(scene, [signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM], seed)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TRIAL_TIMEOUT_S)
def test_twenty_four_random_interrupts_each_resume_to_exactly_once(scene: Scene) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    run_trials(scene, [signal.SIGINT, signal.SIGTERM] * 12, seed)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_start_up_waits_for_the_database_exits_cleanly(
    scene: Scene, signum: signal.Signals
) -> None:
    with psycopg.connect(scene.table.database_url) as locker:
        # counting the rows needs the table: the start-up waits behind this lock
        locker.execute(f"LOCK TABLE {scene.table.name} IN ACCESS EXCLUSIVE MODE")
        run = scene.start("--log-format", "text")
        wait_until(
            lambda: bool(tool_backends_waiting(scene.table.database_url)) or not run.is_running(),
            timeout_s=30,
            what="the tool to wait for the lock",
        )
        run.send(signum)
        try:
            result = run.wait(timeout_s=5)
        finally:
            locker.rollback()

    assert result.exit_code == EXIT_CODES[signum], result.output
    assert "Traceback" not in result.output
    assert not scene.table.audit_writes()
    assert not scene.checkpoint_path.exists() or read_checkpoint(scene.checkpoint_path)


@pytest.mark.parametrize(
    ("signum", "says", "never_says"),
    [
        (signal.SIGINT, "press Ctrl+C again to exit at once", "SIGTERM"),
        (signal.SIGTERM, "a second SIGTERM exits at once", "Ctrl+C"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_the_stop_message_names_the_signal_received(
    database_url: str, tmp_path: Path, signum: signal.Signals, says: str, never_says: str
) -> None:
    with ImageServer() as server:
        table = UserTable(database_url, id_type="integer").create()
        urls = list(serve_valid_images(server, 4))
        table.insert([server.url(f"/slow/3000?img={urlsplit(url).path}") for url in urls])
        run = start_run(*RUN_ARGS, *JSON_LOGS, cwd=tmp_path, database_url=database_url)
        wait_until(lambda: has_started(run), timeout_s=30, what="the run to start")
        run.send(signum)
        result = run.wait(timeout_s=30)

    assert result.exit_code == EXIT_CODES[signum], result.output
    warnings = [e["message"] for e in json_lines(result.stderr) if e["event"] == "warning"]
    stops = [message for message in warnings if "received" in message]
    assert len(stops) == 1, warnings
    assert stops[0].startswith(f"{signum.name} received: stopping after saving the checkpoint")
    assert says in stops[0]
    assert never_says not in stops[0]


def tool_backends_waiting(database_url: str) -> list[int]:
    """The tool's connections waiting for a lock (a fresh snapshot of pg_stat_activity)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'backfill-quality%'"
            " AND wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def test_a_second_sigint_exits_at_once_with_a_whole_checkpoint(scene: Scene) -> None:
    run = scene.start()
    wait_until(lambda: scene.checkpoint_path.exists(), timeout_s=30, what="a first checkpoint")
    with psycopg.connect(scene.table.database_url) as locker:
        # row locks: the tool's next write waits behind them (its page reads do not), and the
        # orderly stop waits for a write in flight, so only a second SIGINT ends it at once
        locker.execute(f"SELECT 1 FROM {scene.table.name} FOR UPDATE")
        wait_until(
            lambda: bool(tool_backends_waiting(scene.table.database_url)),
            timeout_s=30,
            what="the tool to wait for the lock",
        )
        run.send(signal.SIGINT)
        time.sleep(0.3)
        assert run.is_running(), "the first SIGINT waits for the write in flight"
        sent_s = run.send(signal.SIGINT)
        try:
            result = run.wait(timeout_s=5)
        finally:
            exit_after_s = time.monotonic() - sent_s
            locker.rollback()

    assert result.exit_code == 130, result.output
    assert exit_after_s < SECOND_SIGNAL_LIMIT_S, f"second SIGINT took {exit_after_s:.2f}s"
    checkpoint = read_checkpoint(scene.checkpoint_path)
    assert checkpoint["finished"] is False
    assert_low_water_mark_honest(scene.table, checkpoint)
    resume_and_check_finished(scene, "after a second SIGINT")


def test_a_ctrl_c_while_the_process_exits_prints_no_traceback(tmp_path: Path) -> None:
    script = tmp_path / "late_sigint.py"
    script.write_text(
        "import atexit, os, signal, sys\n"
        "import multiprocessing.util  # its exit handler, as a run leaves it\n"
        "from backfill_quality.cli.app import main\n"
        "atexit.register(os.kill, os.getpid(), signal.SIGINT)  # in the exit handlers\n"
        "sys.argv = ['backfill-quality', 'migrate', '--help']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "KeyboardInterrupt" not in result.stderr


# --- scoring processes killed (the kernel's OOM killer) -----------------------------------------


def test_scoring_processes_killed_mid_run_every_row_is_still_scored_once(scene: Scene) -> None:
    run = scene.start()
    wait_until(lambda: has_started(run), timeout_s=30, what="the run to start")
    time.sleep(0.15)  # the first images (100 ms away) are being scored
    killed = kill_scoring_workers(run.pid)
    result = run.wait(timeout_s=60)

    assert killed >= 1
    assert result.exit_code == 3, result.output  # the two broken rows
    assert "Traceback" not in result.output
    warnings = [e["message"] for e in json_lines(result.stderr) if e["event"] == "warning"]
    assert RESTARTED in warnings
    assert_job_done(scene, "scoring processes killed")


# --- SIGKILL -----------------------------------------------------------------------------------


def kill_trial(scene: Scene, delay_s: float) -> None:
    """SIGKILL a run after its first checkpoint plus `delay_s`; `--resume` must finish the job."""
    context = f"SIGKILL {delay_s:.2f}s after the first checkpoint"
    run = scene.start()
    wait_until(
        lambda: scene.checkpoint_path.exists() or not run.is_running(),
        timeout_s=30,
        what="a first checkpoint",
    )
    time.sleep(delay_s)
    run.send(signal.SIGKILL)
    run.wait(timeout_s=10)
    checkpoint = read_checkpoint(scene.checkpoint_path)
    assert_low_water_mark_honest(scene.table, checkpoint)
    assert_written_at_most_once(scene.table)
    if checkpoint["finished"]:
        return
    resume_and_check_finished(scene, context)


def test_sigkill_at_random_moments_then_resume_writes_each_row_once(scene: Scene) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(2):
        scene.reset()
        kill_trial(scene, rng.uniform(0.0, 1.5))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TRIAL_TIMEOUT_S)
def test_many_sigkills_then_resume_writes_each_row_once(scene: Scene) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(12):
        scene.reset()
        kill_trial(scene, rng.uniform(0.0, 1.5))


def test_sigkill_before_the_first_checkpoint_then_resume_finishes(
    database_url: str, tmp_path: Path
) -> None:
    with ImageServer() as server:
        table = UserTable(database_url, id_type="integer").create().install_audit()
        expected = serve_valid_images(server, 4)
        slow_urls = {
            server.url(f"/slow/2000?img={urlsplit(url).path}"): s for url, s in expected.items()
        }
        rows = table.insert(list(slow_urls))
        run = start_run(*RUN_ARGS, *JSON_LOGS, cwd=tmp_path, database_url=database_url)
        wait_until(lambda: has_started(run), timeout_s=30, what="the run to start")
        run.send(signal.SIGKILL)
        run.wait(timeout_s=10)
        assert not table.audit_writes()

        result = run_cli("run", "--resume", *RUN_ARGS, cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    scores = table.scores()
    assert {row.id: scores[row.id] for row in rows} == {row.id: slow_urls[row.url] for row in rows}
    assert table.audit_writes() == Counter(str(row.id) for row in rows)


@pytest.mark.slow  # an interrupt trial (about 7 s)
def test_a_row_failed_beyond_the_mark_is_counted_once_after_resume(
    database_url: str, tmp_path: Path
) -> None:
    with ImageServer() as server:
        table = UserTable(database_url, id_type="integer").create().install_audit()
        expected = serve_valid_images(server, 3)
        urls = list(expected)
        slow = server.url(f"/slow/4000?img={urlsplit(urls[0]).path}")
        rows = table.insert([slow, server.url("/status/404"), *urls[1:]])
        run = start_run(*RUN_ARGS, *JSON_LOGS, cwd=tmp_path, database_url=database_url)
        wait_until(lambda: '"event": "failed"' in run.stderr_text(), timeout_s=30, what="404")
        time.sleep(0.2)
        run.send(signal.SIGINT)
        assert run.wait(timeout_s=30).exit_code == 130
        interrupted = read_checkpoint(tmp_path / CHECKPOINT_NAME)
        assert interrupted["lastProcessedId"] is None  # the slow first row was still in flight
        assert [entry["id"] for entry in interrupted["failedImages"]] == [rows[1].id]

        result = run_cli("run", "--resume", *RUN_ARGS, cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 3, result.output
    assert table.audit_writes() == Counter(str(row.id) for row in rows if row is not rows[1])
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert [entry["id"] for entry in checkpoint["failedImages"]] == [rows[1].id]
    counts = (checkpoint["total"], checkpoint["processed"], checkpoint["failed"])
    assert counts == (len(rows), len(rows), 1)
