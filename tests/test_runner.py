"""The pipeline in-process (Runner): counts, limits, dry runs, retries of failed rows."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import FetchSettings, RunSettings, Target, parse_detector
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.synthetic import make_bird_image
from backfill_quality.errors import ConfigError
from backfill_quality.fetching.controller import LevelChange
from backfill_quality.models import Outcome, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint, load_checkpoint
from backfill_quality.pipeline.runner import Runner


class RecordingReporter:
    """A Reporter that keeps what it is told (the real reporters are tested in test_progress)."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.messages: list[str] = []
        self.pages = 0
        self.checkpoints: list[int] = []  # rows processed, as told at each page_done
        self.total: int | None = None
        self.levels: list[LevelChange] = []  # the downloads in flight, first one and moves
        self.write_rounds: list[int] = []  # per row: the turn of the event loop that reported it
        self._turn = 0

    def start(
        self,
        *,
        total: int,
        resumed_from: object,
        dry_run: bool,
        started_s: float,
        limit: int | None = None,
    ) -> None:
        self.total = total

    def row_done(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        # rows written together are reported in one go, with no turn of the event loop between
        self.write_rounds.append(self._turn)
        asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn += 1

    def page_done(self, checkpoint: Checkpoint) -> None:
        self.pages += 1
        self.checkpoints.append(checkpoint.processed)

    def level_changed(self, change: LevelChange) -> None:
        self.levels.append(change)

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warning(self, message: str) -> None:
        self.messages.append(message)

    def error(self, message: str) -> None:
        self.messages.append(message)

    def finish(self, summary: RunSummary) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def bird_url(image_server: ImageServer) -> str:
    return image_server.add("/img/bird.jpg", make_bird_image(seed=1, width=640, height=480))


def fill(database_url: str, urls: list[str]) -> None:
    with db.connect(database_url) as conn:
        db.migrate(conn, Target(), may_create_table=True)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO images (url) VALUES (%s)", [(u,) for u in urls])


def scores(database_url: str) -> list[int | None]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT quality_score FROM images ORDER BY id")]


def run(
    database_url: str, tmp_path: Path, **options: object
) -> tuple[RunSummary, RecordingReporter]:
    reporter = RecordingReporter()
    options.setdefault("fetch", FetchSettings(retries=0, timeout_s=5, concurrency=8))
    settings = RunSettings(
        database_url=database_url,
        checkpoint_path=tmp_path / "progress.json",
        workers=1,
        **options,  # type: ignore[arg-type]
    )
    return Runner(settings, reporter, handle_signals=False).run(), reporter


def test_scores_every_row_and_counts_pages(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    fill(database_url, [bird_url] * 23)
    # --delay makes each page wait for the last one to be written, so no write batch can complete
    # two pages at once however the machine schedules us: the checkpoint is saved after each of
    # the 5 pages. (Without it, rows of the next page may be written in the same batch.)
    summary, reporter = run(
        database_url,
        tmp_path,
        batch_size=5,
        delay_ms=1,
        fetch=FetchSettings(retries=0, concurrency=1),
    )
    assert (summary.processed, summary.succeeded, summary.failed) == (23, 23, 0)
    assert all(s is not None and 0 <= s <= 100 for s in scores(database_url))
    assert reporter.pages == 5  # 5 + 5 + 5 + 5 + 3
    checkpoint = load_checkpoint(tmp_path / "progress.json")
    assert checkpoint is not None and checkpoint.finished


def test_rows_that_come_one_by_one_are_written_a_few_at_a_time(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    """One round trip to the database thread per row cost the main process more CPU than the
    write (issue 15): the writer gathers the rows of the next moment into one batch (each row
    still its own transaction). Downloads one at a time, 20 ms each, make the rows arrive one
    by one, each long after the previous one was written."""
    slow_url = bird_url.replace("/img/bird.jpg", "/slow/20?img=/img/bird.jpg")
    fill(database_url, [slow_url] * 40)
    summary, reporter = run(
        database_url,
        tmp_path,
        batch_size=10,
        detector=parse_detector("heuristic"),
        fetch=FetchSettings(retries=0, concurrency=1),
    )
    assert (summary.processed, summary.succeeded) == (40, 40)
    assert all(s is not None for s in scores(database_url))
    rounds = len(set(reporter.write_rounds))
    assert rounds <= 20, f"40 rows written in {rounds} rounds"


def test_a_stop_asked_before_the_run_starts_ends_it_before_any_row(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    """`watch` passes a signal that comes while it makes a cycle's runner on to it: the run must
    then stop at its start, not score a whole cycle first."""
    fill(database_url, [bird_url] * 5)
    settings = RunSettings(
        database_url=database_url, checkpoint_path=tmp_path / "progress.json", workers=1
    )
    runner = Runner(settings, RecordingReporter(), handle_signals=False)
    runner.request_stop("SIGTERM")
    summary = runner.run()
    assert (summary.processed, summary.interrupted) == (0, "SIGTERM")
    assert runner.signal_received == "SIGTERM"
    assert scores(database_url) == [None] * 5


def test_a_stop_asked_from_outside_mid_run_ends_it_with_every_written_row_counted(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    """`watch`'s signal handler asks through the runner's event loop (it must never raise inside
    asyncio's machinery: an exception there was swallowed and left asyncio.run waiting)."""
    slow_url = bird_url.replace("/img/bird.jpg", "/slow/100?img=/img/bird.jpg")
    fill(database_url, [slow_url] * 60)  # one at a time: 6 s or more without the stop
    settings = RunSettings(
        database_url=database_url,
        checkpoint_path=tmp_path / "progress.json",
        workers=1,
        batch_size=10,
        detector=parse_detector("heuristic"),
        fetch=FetchSettings(retries=0, concurrency=1),
    )
    runner = Runner(settings, RecordingReporter(), handle_signals=False)
    timer = threading.Timer(1.5, runner.request_stop, ["SIGTERM"])
    timer.start()
    try:
        summary = runner.run()
    finally:
        timer.cancel()
    assert summary.interrupted == "SIGTERM"
    assert 0 < summary.processed < 60
    written = sum(s is not None for s in scores(database_url))
    assert written == summary.succeeded  # nothing written that the summary does not count


def test_limit_stops_early_and_resume_finishes(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    fill(database_url, [bird_url] * 12)
    first, _ = run(database_url, tmp_path, batch_size=5, limit=7)
    assert first.processed == 7
    assert sum(s is not None for s in scores(database_url)) == 7
    checkpoint = load_checkpoint(tmp_path / "progress.json")
    assert checkpoint is not None and not checkpoint.finished
    with pytest.raises(ConfigError, match="--resume"):
        run(database_url, tmp_path, batch_size=5)
    second, _ = run(database_url, tmp_path, batch_size=5, resume=True)
    assert (second.processed, second.total) == (12, 12)
    assert all(s is not None for s in scores(database_url))


def test_a_limit_that_reaches_the_end_of_the_table_finishes_the_run(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    fill(database_url, [bird_url] * 7)
    first, _ = run(database_url, tmp_path, batch_size=5, limit=7)  # pages of 5 and 2
    assert first.processed == 7
    checkpoint = load_checkpoint(tmp_path / "progress.json")
    assert checkpoint is not None and checkpoint.finished
    second, _ = run(database_url, tmp_path, batch_size=5)  # not refused: nothing was left
    assert second.processed == 0


def test_dry_run_writes_nothing_and_keeps_its_own_checkpoint(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    fill(database_url, [bird_url] * 6)
    summary, _ = run(database_url, tmp_path, dry_run=True)
    assert summary.succeeded == 6
    assert scores(database_url) == [None] * 6
    assert (tmp_path / "progress.dry-run.json").exists()
    assert not (tmp_path / "progress.json").exists()


def test_retry_failed_tries_only_what_failed_and_forgets_recovered_rows(
    database_url: str, tmp_path: Path, bird_url: str, image_server: ImageServer
) -> None:
    flaky = image_server.url("/flaky/1/a?img=/img/bird.jpg")
    fill(database_url, [bird_url] * 4 + [flaky])
    first, _ = run(database_url, tmp_path)
    assert (first.succeeded, first.failed) == (4, 1)
    hits_before = image_server.hits("/img/bird.jpg")
    second, reporter = run(database_url, tmp_path, retry_failed=True)
    assert (second.processed, second.succeeded, second.failed) == (5, 5, 0)
    assert second.failed_images == ()
    assert [o.row.url for o in reporter.outcomes] == [flaky]  # scored rows were not fetched again
    assert image_server.hits("/img/bird.jpg") == hits_before
    assert all(s is not None for s in scores(database_url))


def test_nothing_to_do_is_said_and_is_success(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    fill(database_url, [bird_url] * 2)
    run(database_url, tmp_path)
    summary, reporter = run(database_url, tmp_path)
    assert (summary.total, summary.processed, summary.failed) == (0, 0, 0)
    assert "No images need quality score backfill" in reporter.messages


def test_row_scored_by_someone_else_is_skipped_not_overwritten(
    database_url: str, tmp_path: Path, image_server: ImageServer, bird_url: str
) -> None:
    slow = image_server.url("/slow/1500?img=/img/bird.jpg")
    fill(database_url, [slow])
    import threading

    def score_it_meanwhile() -> None:
        # once the run is downloading the image (it answers after 1.5 s), never on a clock: a
        # busy machine may take longer than any fixed pause to load the models and read the page
        deadline = time.monotonic() + 60
        while image_server.hits("/slow/1500") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE images SET quality_score = 7")

    thread = threading.Thread(target=score_it_meanwhile)
    thread.start()
    summary, _ = run(database_url, tmp_path)
    thread.join()
    assert (summary.processed, summary.succeeded, summary.skipped) == (1, 0, 1)
    assert scores(database_url) == [7]


def test_the_originals_polite_pace_is_sequential_with_a_pause_after_each_page(
    database_url: str, tmp_path: Path, image_server: ImageServer, bird_url: str
) -> None:
    slow = image_server.url("/slow/150?img=/img/bird.jpg")
    fill(database_url, [slow] * 6)
    start = time.monotonic()
    summary, _ = run(
        database_url,
        tmp_path,
        batch_size=3,
        delay_ms=400,
        fetch=FetchSettings(retries=0, concurrency=1),
    )
    elapsed_s = time.monotonic() - start
    assert summary.succeeded == 6
    # one image at a time (6 x 150 ms) and one pause between the two pages (not after the last)
    assert elapsed_s >= 6 * 0.15 + 0.4
    assert elapsed_s < 6 * 0.15 + 0.4 + 6.0  # and not a pause per row


def test_max_rps_paces_the_whole_run(
    database_url: str, tmp_path: Path, bird_url: str, image_server: ImageServer
) -> None:
    fill(database_url, [bird_url] * 9)
    start = time.monotonic()
    summary, _ = run(
        database_url, tmp_path, fetch=FetchSettings(retries=0, concurrency=16, max_rps=6.0)
    )
    elapsed_s = time.monotonic() - start
    assert summary.succeeded == 9
    assert image_server.hits("/img/bird.jpg") == 9
    assert elapsed_s >= 8 / 6.0  # 9 requests at 6 per second: the last one starts after 1.33 s


def test_a_resumed_run_reports_the_rows_done_before_it(
    database_url: str, tmp_path: Path, bird_url: str
) -> None:
    fill(database_url, [bird_url] * 8)
    run(database_url, tmp_path, batch_size=4, limit=4)
    _, reporter = run(database_url, tmp_path, batch_size=4, resume=True)
    assert reporter.checkpoints[0] == 4  # told before the first new row, not only at a page end
    assert len(reporter.outcomes) == 4
