"""Fault injection for the end-to-end tests: a run in the background, signals, database faults.

`start_run` launches `backfill-quality run` as a subprocess (its own session, output to files so
a full pipe never blocks it) and returns a `BackgroundRun` to signal, kill and wait for. The other
helpers act on the database while the run goes on (terminate its connection, lock its table) and
check the promises every fault test makes: the checkpoint's low-water mark is honest and every
row was written at most once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.support.cli import CliResult, cli_env
from tests.support.table import AUDIT_TABLE, UserTable

APPLICATION_NAME_PATTERN = "backfill-quality%"
"""The application_name of the tool's connections in pg_stat_activity (a LIKE pattern: a run's
sessions are named `backfill-quality run <pid>@<host>`)."""


@dataclass
class BackgroundRun:
    """A `backfill-quality run` started with `start_run`; stdout/stderr go to files."""

    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    started_s: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, signum: int) -> float:
        """Send a signal to the tool's own process; returns the monotonic time it was sent."""
        self.process.send_signal(signum)
        return time.monotonic()

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout_s: float = 60.0) -> CliResult:
        """Wait for the exit; on timeout kill the whole session and fail the test."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_session()
            output = self.stderr_text()
            raise AssertionError(f"the run did not exit within {timeout_s}s:\n{output}") from None
        self.reap_children()
        return CliResult(
            code,
            self.stdout_path.read_text(encoding="utf-8", errors="replace"),
            self.stderr_text(),
        )

    def kill_session(self) -> None:
        """SIGKILL the tool and every process it started (its session: forkserver, workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def reap_children(self) -> None:
        """Kill what the tool may have left behind in its session (after a SIGKILL, workers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_run(
    *args: str,
    cwd: Path,
    database_url: str | None,
    env: dict[str, str] | None = None,
    label: str = "run",
) -> BackgroundRun:
    """Start `python -m backfill_quality run ARGS` in `cwd`, in its own session."""
    return start_command("run", *args, cwd=cwd, database_url=database_url, env=env, label=label)


def start_command(
    command: str,
    *args: str,
    cwd: Path,
    database_url: str | None,
    env: dict[str, str] | None = None,
    label: str = "run",
) -> BackgroundRun:
    """Start `python -m backfill_quality COMMAND ARGS` in `cwd`, in its own session."""
    stdout_path = cwd / f".{label}.stdout"
    stderr_path = cwd / f".{label}.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "backfill_quality", command, *args],
            cwd=cwd,
            env=cli_env(database_url, env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    run = BackgroundRun(process, stdout_path, stderr_path)
    _started_runs.append(run)
    return run


_started_runs: list[BackgroundRun] = []


def reap_background_runs() -> int:
    """Kill and wait for every run started by this test that is still going (a failed
    assertion may leave one); returns how many. A Popen dropped while its process runs would
    raise a ResourceWarning later, in whichever test the garbage collector happens to run."""
    left = [run for run in _started_runs if run.is_running()]  # is_running() reaps the others
    for run in left:
        run.kill_session()
    _started_runs.clear()
    return len(left)


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.02, what: str = ""
) -> None:
    """Poll `condition` until it is true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(interval_s)


# --- the scoring processes ---------------------------------------------------------------------


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process on the machine (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        # the command name (field 2) may hold spaces and parentheses: split after its last ")"
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _is_forkserver(pid: int) -> bool:
    try:
        return b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def scoring_workers(owner_pid: int) -> list[int]:
    """The scoring processes of the process `owner_pid`: those its forkserver forked (never,
    say, the backends of an embedded PostgreSQL that `owner_pid` started)."""
    parents = _parent_pids()
    children = [pid for pid, parent in parents.items() if parent == owner_pid]
    servers = {pid for pid in children if _is_forkserver(pid)}
    return [pid for pid, parent in parents.items() if parent in servers]


@dataclass(frozen=True)
class ProcessInfo:
    """One process as /proc shows it; (pid, start time) names it even if the pid is reused."""

    pid: int
    parent: int
    session: int
    state: str
    start_ticks: int
    cmdline: str

    @property
    def is_alive(self) -> bool:
        """Still running: present with the same start time and not a zombie (a dead process
        whose parent has not reaped it yet, as orphans of a busy or absent init stay)."""
        now = read_process(self.pid)
        return now is not None and now.start_ticks == self.start_ticks and now.state != "Z"


def read_process(pid: int) -> ProcessInfo | None:
    """The process `pid` from /proc, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat.rsplit(")", 1)[1].split()
    return ProcessInfo(
        pid=pid,
        parent=int(fields[1]),
        session=int(fields[3]),
        state=fields[0],
        start_ticks=int(fields[19]),
        cmdline=cmdline.replace(b"\0", b" ").decode(errors="replace"),
    )


def all_processes() -> list[ProcessInfo]:
    """Every process on the machine (from /proc)."""
    found = (read_process(int(e.name)) for e in Path("/proc").iterdir() if e.name.isdigit())
    return [info for info in found if info is not None]


def descendants(ancestor_pid: int) -> list[ProcessInfo]:
    """Every live process below `ancestor_pid` in the process tree (children, their children…)."""
    processes = all_processes()
    below: list[ProcessInfo] = []
    parents = {ancestor_pid}
    while True:
        found = [p for p in processes if p.parent in parents and p not in below]
        if not found:
            return below
        below += found
        parents = {p.pid for p in found}


def session_members(session_id: int) -> list[ProcessInfo]:
    """Every live (not zombie) process of the session `session_id`."""
    return [p for p in all_processes() if p.session == session_id and p.state != "Z"]


def kill_scoring_workers(owner_pid: int) -> int:
    """SIGKILL the scoring processes of `owner_pid` (as the kernel's OOM killer would)."""
    killed = 0
    for pid in scoring_workers(owner_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


# --- the database side --------------------------------------------------------------------------


def dbname_of(database_url: str) -> str:
    """The database name in a test's socket URI."""
    return str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"] or "")


def tool_backends(admin_url: str, dbname: str) -> list[int]:
    """Backend pids of the tool's connections to `dbname`."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s AND datname = %s",
            (APPLICATION_NAME_PATTERN, dbname),
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def terminate_tool_backends(admin_url: str, dbname: str) -> int:
    """pg_terminate_backend every connection of the tool to `dbname`; returns how many."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE %s AND datname = %s",
            (APPLICATION_NAME_PATTERN, dbname),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


@contextlib.contextmanager
def in_background(action: Callable[[], None]) -> Iterator[list[BaseException]]:
    """Run `action` in a thread for the duration of the block; its exceptions are collected."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # reported by the test after the join
            errors.append(exc)

    thread = threading.Thread(target=target, name="fault-injector", daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        thread.join(timeout=60)


def reset_scores(table: UserTable) -> None:
    """Every score back to NULL and the audit emptied (to reuse one table for several trials)."""
    with psycopg.connect(table.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET {} = NULL").format(
                sql.Identifier(table.name), sql.Identifier(table.score_column)
            )
        )
        conn.execute(f"TRUNCATE {AUDIT_TABLE}")


def scored_at_or_below(table: UserTable, mark: Any) -> tuple[set[str], set[str]]:
    """(keys of unscored rows with id <= mark, keys of all rows with id <= mark), in SQL order."""
    query = sql.SQL("SELECT {id}::text, {score} FROM {table} WHERE {id} <= %s").format(
        id=sql.Identifier(table.id_column),
        score=sql.Identifier(table.score_column),
        table=sql.Identifier(table.name),
    )
    with psycopg.connect(table.database_url, autocommit=True) as conn:
        rows = conn.execute(query, (mark,)).fetchall()
    return {key for key, score in rows if score is None}, {key for key, _ in rows}


def assert_low_water_mark_honest(table: UserTable, checkpoint: dict[str, Any]) -> None:
    """Every row with id <= lastProcessedId is scored or listed in failedImages."""
    mark = checkpoint["lastProcessedId"]
    if mark is None:
        return
    unscored, _ = scored_at_or_below(table, mark)
    failed = {str(entry["id"]) for entry in checkpoint["failedImages"]}
    dishonest = unscored - failed
    assert not dishonest, (
        f"rows at or below lastProcessedId={mark!r} neither scored nor listed as failed: "
        f"{sorted(dishonest)}"
    )


def assert_written_at_most_once(table: UserTable) -> None:
    """No row's score was written twice (the audit trigger saw each row at most once)."""
    twice = {key: n for key, n in table.audit_writes().items() if n > 1}
    assert not twice, f"rows written more than once: {twice}"
