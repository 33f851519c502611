"""The newcomer's first command: `backfill-quality demo` on its own embedded database."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.faults import all_processes, start_command, wait_until

DEMO_FOLDER_PREFIX = "backfill-quality-demo-"


def test_demo_scores_every_good_row_and_lists_the_broken_ones(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = run_cli(
        "demo", "--rows", "120", "--workdir", str(workdir), cwd=tmp_path, timeout_s=180
    )

    assert result.exit_code == 0, result.output  # broken URLs are part of the show
    checkpoint = json.loads((workdir / ".backfill-progress.json").read_text())
    # rows 59 and 119 point at broken URLs on purpose; everything else is a generated photo
    assert (checkpoint["processed"], checkpoint["succeeded"], checkpoint["failed"]) == (120, 118, 2)
    assert checkpoint["finished"] is True
    assert "Score distribution" in result.output
    assert "Progress Summary" in result.output
    # it ends by writing the review report and naming it
    report = workdir / "quality-report.html"
    assert result.stderr.rstrip().endswith(f"Open the review report in a browser: {report}")
    assert result.output.count(str(report)) == 1, result.output  # one line names it, not two
    assert "Report written" not in result.output
    page = report.read_text(encoding="utf-8")
    assert '<span class="num" id="n-scored">118</span>' in page
    assert '<span class="num" id="n-failed">2</span>' in page


# --- the temporary folder (no --workdir) --------------------------------------------------------


@pytest.fixture
def private_tmpdir() -> Iterator[Path]:
    """A TMPDIR of the test's own, where the demo makes its temporary folder; short, since
    the sockets of PostgreSQL and of multiprocessing live there (108 bytes at most)."""
    folder = Path(tempfile.mkdtemp(prefix="bq-demo-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def assert_nothing_left(tmpdir: Path) -> None:
    """No demo folder in `tmpdir`, and no process (the embedded PostgreSQL) running from it."""
    left = [p.name for p in tmpdir.iterdir() if p.name.startswith(DEMO_FOLDER_PREFIX)]
    assert not left, f"left behind in {tmpdir}: {left}"
    running = [p.cmdline for p in all_processes() if str(tmpdir) in p.cmdline and p.state != "Z"]
    assert not running, running


def test_the_demo_deletes_its_temporary_folder_and_stops_its_database(
    tmp_path: Path, private_tmpdir: Path
) -> None:
    tmpdir = private_tmpdir
    result = run_cli(
        "demo", "--rows", "20", cwd=tmp_path, env={"TMPDIR": str(tmpdir)}, timeout_s=180
    )

    assert result.exit_code == 0, result.output
    assert "Progress Summary" in result.output
    assert_nothing_left(tmpdir)
    assert (tmp_path / "backfill-quality-demo-report.html").stat().st_size > 10_000


def test_a_demo_stopped_by_ctrl_c_deletes_its_temporary_folder(
    tmp_path: Path, private_tmpdir: Path
) -> None:
    tmpdir = private_tmpdir
    run = start_command(
        "demo",
        *("--rows", "200", "--latency-ms", "300", "--log-format", "json"),
        cwd=tmp_path,
        database_url=None,
        env={"TMPDIR": str(tmpdir)},
        label="demo",
    )
    try:
        wait_until(
            lambda: '"event": "start"' in run.stderr_text() or not run.is_running(),
            timeout_s=120,
            what="the demo's run to start",
        )
        assert [p for p in tmpdir.iterdir() if p.name.startswith(DEMO_FOLDER_PREFIX)]
        run.send(signal.SIGINT)
        result = run.wait(timeout_s=60)
    finally:
        run.kill_session()

    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert_nothing_left(tmpdir)


def test_a_demo_that_fails_deletes_its_temporary_folder(
    tmp_path: Path, private_tmpdir: Path
) -> None:
    tmpdir = private_tmpdir
    # every session of the embedded database read-only: creating the demo table fails
    read_only = {"TMPDIR": str(tmpdir), "PGOPTIONS": "-c default_transaction_read_only=on"}
    result = run_cli("demo", "--rows", "20", cwd=tmp_path, env=read_only, timeout_s=180)

    assert result.exit_code == 1, result.output
    assert "read-only transaction" in result.output
    assert "Traceback" not in result.output
    assert_nothing_left(tmpdir)
