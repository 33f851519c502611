"""The reporters: plain lines, JSON events and the rich summary, captured and read back."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from backfill_quality import db
from backfill_quality.cli.reporters import (
    JsonReporter,
    PlainReporter,
    RichReporter,
    make_reporter,
)
from backfill_quality.cli.summary import summary_line
from backfill_quality.config import RunSettings, Target
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.synthetic import make_bird_image
from backfill_quality.errors import ConfigError
from backfill_quality.fetching.controller import LevelChange
from backfill_quality.models import ImageRow, Outcome, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.pipeline.progress import EtaEstimator, Reporter, format_duration
from backfill_quality.pipeline.runner import Runner

SECRET = "s3cret-pw"
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR)\s+\S")


def summary(failed_count: int = 2, interrupted: str | None = None) -> RunSummary:
    failed = tuple(
        (f"id-{n}", f"https://user:{SECRET}@cdn.example/{n}.jpg", f"HTTP 404 [bold]{n}")
        for n in range(failed_count)
    )
    return RunSummary(
        total=1234,
        processed=250,
        succeeded=248,
        failed=failed_count,
        skipped=0,
        elapsed_s=512.0,
        rate_per_s=0.5,
        dry_run=False,
        interrupted=interrupted,
        failed_images=failed,
        checkpoint_path=".backfill-progress.json",
    )


def drive(reporter: Reporter) -> None:
    """One small run: start, a success, a failure with secrets, a page, a warning, the end."""
    reporter.start(total=1234, resumed_from="row-0", dry_run=False, started_s=time.monotonic())
    reporter.row_done(Outcome(ImageRow("row-1", "https://cdn.example/1.jpg"), score=91))
    bad_url = f"https://user:{SECRET}@cdn.example/2.jpg"
    error = f"timeout; db postgresql://u:{SECRET}@db/app password={SECRET}"
    reporter.row_done(Outcome(ImageRow("row-2", bad_url), error=error, attempts=3))
    page = Checkpoint(fingerprint="f", dry_run=False, total=1234, processed=2, succeeded=1)
    page.failed, page.last_processed_id = 1, "row-2"
    reporter.page_done(page)
    reporter.warning(f"reconnecting to postgresql://u:{SECRET}@db/app")
    reporter.finish(summary(interrupted="SIGINT"))
    reporter.close()


def test_plain_reporter_writes_parseable_lines_and_the_summary() -> None:
    stream = StringIO()
    drive(PlainReporter(stream))
    text = stream.getvalue()

    log_lines = text.split("📊 Progress Summary")[0].splitlines()
    assert log_lines and all(PLAIN_LINE.match(line) for line in log_lines)
    assert "starting: 1234 images to score, resuming after id row-0" in log_lines[0]
    assert any("WARNING row row-2 failed" in line for line in log_lines)
    assert any("progress: 2/1234 (0.2%), 1 succeeded, 1 failed" in line for line in log_lines)
    assert not any("scored 91" in line for line in log_lines)  # only with --verbose
    for label_value in ("Total:         1234 images", "Processed:     250 (20.3%)"):
        assert label_value in text
    assert "Elapsed:       8m 32s" in text
    assert "Avg per image: 2000ms" in text
    assert "Stopped by SIGINT; continue with --resume." in text
    assert SECRET not in text


def test_plain_reporter_throttles_page_lines_unless_verbose() -> None:
    for verbose, expected_lines in ((False, 1), (True, 3)):
        stream = StringIO()
        reporter = PlainReporter(stream, verbose=verbose, interval_s=3600)
        reporter.start(total=10, resumed_from=None, dry_run=True, started_s=time.monotonic())
        for _ in range(3):
            reporter.page_done(Checkpoint(fingerprint="f", dry_run=True, total=10))
        assert stream.getvalue().count("progress:") == expected_lines


def test_plain_reporter_verbose_logs_each_row() -> None:
    stream = StringIO()
    drive(PlainReporter(stream, verbose=True))
    assert "row row-1 scored 91 (https://cdn.example/1.jpg)" in stream.getvalue()


def test_quiet_plain_reporter_keeps_warnings_and_one_summary_line() -> None:
    stream = StringIO()
    drive(PlainReporter(stream, quiet=True))
    lines = stream.getvalue().splitlines()

    assert len(lines) == 2
    assert "WARNING reconnecting to postgresql://u:***@db/app" in lines[0]
    assert lines[1].endswith(summary_line(summary(interrupted="SIGINT")))
    assert "interrupted by SIGINT: 250/1234 processed, 248 succeeded, 2 failed" in lines[1]


def test_json_reporter_emits_one_parseable_object_per_event() -> None:
    stream = StringIO()
    drive(JsonReporter(stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]

    assert [e["event"] for e in events] == ["start", "failed", "page", "warning", "summary"]
    assert all(re.fullmatch(r"\d{4}-.*T.*Z", e["ts"]) for e in events)
    start, failed, page, _, final = events
    assert start["resumedFrom"] == "row-0" and start["dryRun"] is False
    assert failed["id"] == "row-2" and failed["attempts"] == 3
    assert failed["url"] == "https://user:***@cdn.example/2.jpg"
    assert page["processed"] == 2 and page["lastProcessedId"] == "row-2"
    assert {"ratePerS", "etaS", "elapsedS", "skipped"} <= page.keys()
    assert final["interrupted"] == "SIGINT" and final["checkpointPath"] == ".backfill-progress.json"
    assert final["failedImages"][0]["id"] == "id-0"
    assert SECRET not in stream.getvalue()


def test_json_reporter_verbose_adds_row_events_and_caps_failed_list() -> None:
    stream = StringIO()
    reporter = JsonReporter(stream, verbose=True)
    reporter.row_done(Outcome(ImageRow(7, "http://x/7"), score=42))
    reporter.error("database unreachable")
    reporter.finish(summary(failed_count=25))
    row, error, final = (json.loads(line) for line in stream.getvalue().splitlines())

    assert (row["event"], row["id"], row["score"]) == ("row", 7, 42)
    assert (error["event"], error["message"]) == ("error", "database unreachable")
    assert len(final["failedImages"]) == 20 and final["failedImagesOmitted"] == 5


def test_a_finished_run_ends_its_summary_with_eta_0s() -> None:
    buffer = StringIO()
    reporter = RichReporter(Console(file=buffer, force_terminal=True, width=140))
    reporter.start(total=1234, resumed_from=None, dry_run=False, started_s=time.monotonic())
    finished = replace(summary(), processed=1234, succeeded=1232)
    reporter.finish(finished)
    reporter.close()

    assert "ETA:           0s" in buffer.getvalue()


def test_rich_reporter_renders_the_summary_block_and_failed_table() -> None:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=140, color_system=None)
    reporter = RichReporter(console)
    reporter.start(total=1234, resumed_from=None, dry_run=False, started_s=time.monotonic())
    reporter.warning(f"slow host https://u:{SECRET}@cdn.example/")
    reporter.finish(summary(failed_count=25))
    reporter.close()
    text = buffer.getvalue()

    assert "📊 Progress Summary" in text
    assert "Processed:     250 (20.3%)" in text
    assert "Rate:          0.5 img/s" in text
    assert "ETA:           32m 48s" in text
    assert "Failed images (25)" in text
    assert "HTTP 404 [bold]19" in text  # error text is shown literally, not as markup
    assert "id-20" not in text
    assert "… and 5 more, see the checkpoint" in text
    assert SECRET not in text


def test_make_reporter_picks_the_implementation() -> None:
    def kind(**options: object) -> type:
        settings: dict[str, object] = {"log_format": "text", "verbose": False, "quiet": False}
        return type(make_reporter(**(settings | options)))  # type: ignore[arg-type]

    assert kind(log_format="json", is_terminal=True) is JsonReporter
    assert kind(is_terminal=True) is RichReporter
    assert kind(is_terminal=False) is PlainReporter
    assert kind(is_terminal=True, quiet=True) is PlainReporter
    with pytest.raises(ConfigError, match="--log-format must be 'text' or 'json'"):
        kind(log_format="xml")
    with pytest.raises(ConfigError, match="cannot be used together"):
        kind(verbose=True, quiet=True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.4, "0s"), (45, "45s"), (512, "8m 32s"), (2034, "33m 54s"), (7510, "2h 05m 10s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_eta_follows_the_recent_rate() -> None:
    now = [0.0]
    eta = EtaEstimator(window_s=10.0, clock=lambda: now[0])
    assert eta.describe(100) == "unknown"

    for second in range(1, 21):  # 1 row/s for 20 s, then 10 rows/s for 10 s
        now[0] = float(second)
        eta.record(second)
    assert eta.rate_per_s == pytest.approx(1.0)
    for second in range(21, 31):
        now[0] = float(second)
        eta.record(20 + 10 * (second - 20))

    assert eta.rate_per_s == pytest.approx(10.0)  # the slow start has left the window
    assert eta.describe(600) == "1m 00s"
    assert eta.remaining_s(0) == 0.0


@pytest.mark.parametrize("make", [PlainReporter, None], ids=["plain", "rich"])
def test_a_limited_dry_runs_summary_shows_the_rows_left_the_limit_and_its_scores(
    make: Callable[[StringIO], Reporter] | None,
) -> None:
    buffer = StringIO()
    reporter = (
        make(buffer)
        if make is not None
        else RichReporter(Console(file=buffer, force_terminal=True, width=140, color_system=None))
    )
    histogram = (1, 0, 0, 0, 0, 2, 3, 0, 4, 5)  # low 3, medium 3, high 9
    limited = replace(summary(failed_count=0), dry_run=True, limit=250, score_histogram=histogram)
    reporter.start(
        total=1234, resumed_from=None, dry_run=True, started_s=time.monotonic(), limit=250
    )
    reporter.finish(limited)
    reporter.close()
    text = buffer.getvalue()

    assert "Total:         1234 images" in text
    assert "Limit:         250 rows (--limit)" in text
    assert "Processed:     250 (20.3%)" in text
    assert "the 15 rows scored would get" in text
    for category, count, share in (
        ("high", 9, "60.0%"),
        ("medium", 3, "20.0%"),
        ("low", 3, "20.0%"),
    ):
        assert re.search(rf"^  {category}\s+{count}\s+{share}\s+█+$", text, re.MULTILINE), text
    assert re.search(r"^  90-100\s+5\s+█{40}$", text, re.MULTILINE), text
    assert re.search(r"^  10-19\s+0$", text, re.MULTILINE), text


def test_the_level_in_flight_is_on_the_progress_line_and_verbose_says_why_it_moved() -> None:
    for verbose in (False, True):
        stream = StringIO()
        reporter = PlainReporter(stream, verbose=verbose)
        reporter.start(total=10, resumed_from=None, dry_run=False, started_s=time.monotonic())
        reporter.level_changed(LevelChange(0, 4, "--concurrency auto starts here"))
        reporter.level_changed(LevelChange(4, 8, "scorers waited for images 40% of the time"))
        reporter.page_done(Checkpoint(fingerprint="f", dry_run=False, total=10, processed=5))
        text = stream.getvalue()
        assert ", 8 in flight," in text
        reason = "downloads in flight 4 -> 8: scorers waited for images 40% of the time"
        assert (reason in text) is verbose


def test_json_reporter_says_why_the_level_moved() -> None:
    stream = StringIO()
    reporter = JsonReporter(stream)
    reporter.start(total=10, resumed_from=None, dry_run=False, started_s=time.monotonic())
    reporter.level_changed(LevelChange(16, 8, "HTTP 429 from cdn.example:443"))
    reporter.page_done(Checkpoint(fingerprint="f", dry_run=False, total=10, processed=5))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    change = next(event for event in events if event["event"] == "concurrency")
    assert (change["level"], change["previous"]) == (8, 16)
    assert change["reason"] == "HTTP 429 from cdn.example:443"
    assert next(event for event in events if event["event"] == "page")["inFlight"] == 8


# --- one clock for the bar and the summary ------------------------------------------------------

BAR_ELAPSED = re.compile(r"(?:img/s)?\s+(\d+:\d\d:\d\d|(?:\d+h )?(?:\d+m )?\d+s)\s+ETA ")
SUMMARY_ELAPSED = re.compile(r"Elapsed:\s+((?:\d+h )?(?:\d+m )?\d+s)")
SLOW_START_S = 3.0


def seconds_of(text: str) -> int:
    """'0:00:06' (rich's clock) or '1m 05s' (ours) in seconds."""
    if ":" in text:
        hours, minutes, seconds = (int(part) for part in text.split(":"))
        return 3600 * hours + 60 * minutes + seconds
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(part[:-1]) * units[part[-1]] for part in text.split())


def test_the_bar_and_the_summary_show_the_same_elapsed_time(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    url = image_server.add("/img/bird.jpg", make_bird_image(seed=1, width=640, height=480))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE images (id serial PRIMARY KEY, url text, quality_score int)")
        conn.execute("INSERT INTO images (url) SELECT %s FROM generate_series(1, 4)", (url,))
    with db.connect(database_url) as conn:  # a real run needs the results table
        db.migrate(conn, Target(), only={"results-table"})
    buffer = StringIO()
    reporter = RichReporter(Console(file=buffer, force_terminal=True, width=160, color_system=None))
    settings = RunSettings(
        database_url=database_url, checkpoint_path=tmp_path / "progress.json", workers=1
    )

    locker = psycopg.connect(database_url)
    # the start waits for the table (its rows are counted), as on a busy database
    locker.execute("LOCK TABLE images IN ACCESS EXCLUSIVE MODE")
    unlock = threading.Timer(SLOW_START_S, locker.rollback)
    unlock.start()
    try:
        summary = Runner(settings, reporter, handle_signals=False).run()
        reporter.finish(summary)
        reporter.close()
    finally:
        unlock.join()
        locker.close()

    assert summary.succeeded == 4
    assert summary.elapsed_s >= SLOW_START_S
    bar, block = buffer.getvalue().split("📊 Progress Summary")
    bar_frames = BAR_ELAPSED.findall(bar)
    assert bar_frames, bar
    summary_match = SUMMARY_ELAPSED.search(block)
    assert summary_match, block
    # the bar's last frame and the summary read the same clock at the same moment
    assert seconds_of(bar_frames[-1]) == seconds_of(summary_match.group(1)), (
        bar_frames[-1],
        summary_match.group(1),
    )
