"""The backfill pipeline: keyset pages -> concurrent fetch -> scoring on all cores -> writes.

It knows nothing of the terminal: progress goes to a `Reporter`, errors are raised as
`BackfillError`s. The low-water mark in the checkpoint only passes a row once it is written (or
recorded as failed), so a crash at any moment loses nothing: `--resume` redoes at most the rows
after the last checkpoint, and the guarded UPDATE makes redoing them harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Collection
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backfill_quality import db
from backfill_quality.config import RunSettings, available_cpus
from backfill_quality.errors import BackfillError, DecodeError, FetchError, ModelError
from backfill_quality.fetching.controller import LevelChange
from backfill_quality.fetching.fetcher import ImageFetcher
from backfill_quality.fetching.gate import Slots
from backfill_quality.models import ImageRow, Outcome, PageKey, RowId, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint, run_checkpoint_path, save_checkpoint
from backfill_quality.pipeline.dbsession import DatabaseSession
from backfill_quality.pipeline.lowwater import LowWaterMark
from backfill_quality.pipeline.progress import EtaEstimator, Reporter
from backfill_quality.pipeline.resume import RunStart, prepare_run
from backfill_quality.pipeline.runlock import TargetLock, holder_name
from backfill_quality.pipeline.scoringpool import ScoringPool
from backfill_quality.pipeline.signals import StopSignals, stopping_message
from backfill_quality.results import result_to_dict
from backfill_quality.scoring.version import Versions, versions

NOTHING_TO_DO = "No images need quality score backfill"
WRITE_BATCH_MAX = 50
WRITE_GATHER_S = 0.1
"""After the first result of a batch, how long the writer lets others gather before it writes
them all: rows then cross to the database thread a few at a time instead of one by one (each
still its own guarded transaction), which cut the CPU the main process spends per row by about
0.3 ms at 100 rows/s (issue 15). The checkpoint lags by as much. Not with --delay (the
original's pace), nor once the run is stopping."""
SCORING_BACKLOG_PER_WORKER = 4
"""Downloaded images that may wait for a scoring process, per process, beyond the downloads in
flight (the level of --concurrency)."""


@dataclass(slots=True)
class _Page:
    """Rows of one page still in flight; the checkpoint is saved as pages complete in order."""

    remaining: int = 0
    is_closed: bool = False

    @property
    def is_done(self) -> bool:
        return self.is_closed and self.remaining == 0


@dataclass(slots=True)
class _State:
    checkpoint: Checkpoint
    mark: LowWaterMark
    pages: deque[_Page] = field(default_factory=deque)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    is_exhausted: bool = False
    row_slots: Slots = field(default_factory=lambda: Slots(1))


class Runner:
    """Runs one backfill with the given settings, reporting to `reporter`."""

    def __init__(
        self,
        settings: RunSettings,
        reporter: Reporter,
        *,
        handle_signals: bool = True,
        skip_ids: Collection[RowId] = (),
        lock: TargetLock | None = None,
    ) -> None:
        """`lock`: the target's lock, when the caller holds it already (watch); by default a
        run takes its own, and a dry run none (it writes nothing)."""
        self.settings = settings
        self.reporter = reporter
        if lock is None and not settings.dry_run:
            lock = TargetLock(settings.target, settings.shard, command="run")
        self._lock = lock
        self._skip_ids = frozenset(skip_ids)  # watch mode: failed rows held back for a while
        self._interrupted: str | None = None
        self._fatal: BaseException | None = None
        self._issuer: asyncio.Task[None] | None = None
        self._state: _State | None = None
        self._pool = ScoringPool(
            workers=settings.workers or available_cpus(),
            thresholds=settings.thresholds,
            max_pixels=settings.max_pixels,
            detector=settings.detector,
            on_give_up=self._fail,
            on_restart=reporter.warning,
        )
        self._started = time.monotonic()  # reset when run() starts: the clock of every elapsed
        self._resumed_processed = 0
        self._signals = StopSignals(self._on_signal) if handle_signals else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_stop: str | None = None  # request_stop before the loop ran
        self._main: asyncio.Task[RunSummary] | None = None
        self._session: DatabaseSession | None = None
        self._eta = EtaEstimator()
        self._versions = Versions("", "")  # known once the scoring processes are warm
        self._order: db.PageOrder | None = None  # --order-by, checked at the start

    def run(self) -> RunSummary:
        """Run to the end of the table, to --limit, or to a signal; returns the summary."""
        return asyncio.run(self._run())

    @property
    def signal_received(self) -> str | None:
        """'SIGINT' or 'SIGTERM' if one came during the run, also after its last row was saved
        (the summary then calls the run finished, not interrupted)."""
        return self._interrupted

    async def _run(self) -> RunSummary:
        self._started = time.monotonic()
        lock = self._lock
        session = DatabaseSession(
            self.settings.database_url,
            on_reconnect=self.reporter.warning,
            application_name=lock.application_name if lock else holder_name("run"),
            on_connect=lock.ensure if lock else None,  # on the first connection, and each new one
        )
        self._session = session
        self._main = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        if self._signals is not None:
            self._signals.install()
        if self._pending_stop is not None:  # asked before the loop ran
            self._stop_once(self._pending_stop)
        try:
            try:
                await session.open()
                # the scoring processes start while the database is checked and counted
                self._pool.start()
                s = self.settings  # the version hashes the model files: beside the warm-up
                versioning = asyncio.ensure_future(
                    asyncio.to_thread(versions, s.detector, s.thresholds)
                )
                versioning.add_done_callback(lambda done: done.cancelled() or done.exception())
                start, _ = await asyncio.gather(
                    session.call(self._prepare), asyncio.to_thread(self._pool.warm_up)
                )
                self._versions = await versioning
            except asyncio.CancelledError:
                if self._interrupted is None:
                    raise
                return self._summary_before_start()
            checkpoint, path = start.checkpoint, start.path
            for note in start.notes:
                self.reporter.info(note)
            for warning in start.warnings:
                self.reporter.warning(warning)
            save_checkpoint(path, checkpoint)  # from now on, --resume has something to resume
            if start.left == 0:
                return self._finish_empty(checkpoint, path)
            self.reporter.start(
                total=checkpoint.total,
                resumed_from=checkpoint.last_processed_id,
                dry_run=self.settings.dry_run,
                limit=self.settings.limit,
                started_s=self._started,
            )
            if checkpoint.processed:  # resumed: the bar starts where the last run stopped
                self.reporter.page_done(checkpoint)
            await self._pipeline(session, checkpoint, path, start.id_range)
            return self._summary(checkpoint, path)
        finally:
            if self._interrupted is not None:
                session.cancel()  # do not wait for a statement stuck on a lock
            try:
                self._pool.detach()  # on the loop: it reads the scoring processes' sockets
                # closing joins the session's thread and waits for the scoring processes: off the
                # loop, so a signal meanwhile is still seen (watch stops; a second one exits)
                await asyncio.to_thread(self._close, session)
            finally:
                if self._signals is not None:
                    self._signals.remove()

    def _close(self, session: DatabaseSession) -> None:
        session.close()
        self._pool.shutdown()

    def _prepare(self, conn: Any) -> RunStart:
        """On the database thread: check the target, choose the checkpoint, count the rows."""
        start = prepare_run(conn, self.settings)
        self._resumed_processed, self._order = start.checkpoint.processed, start.order
        return start

    def _finish_empty(self, checkpoint: Checkpoint, path: Path) -> RunSummary:
        self.reporter.info(NOTHING_TO_DO)
        checkpoint.finished = True
        save_checkpoint(path, checkpoint)
        return self._summary(checkpoint, path)

    async def _pipeline(
        self,
        session: DatabaseSession,
        checkpoint: Checkpoint,
        path: Path,
        id_range: db.IdRange | None,
    ) -> None:
        s = self.settings
        state = _State(checkpoint=checkpoint, mark=LowWaterMark(checkpoint.cursor))
        self._state = state
        results: asyncio.Queue[tuple[Outcome, _Page]] = asyncio.Queue()
        writer = asyncio.create_task(self._write_loop(session, results, state, path))
        try:
            fetcher = ImageFetcher(
                s.fetch, demand=self._pool.waited_s, on_level_change=self._on_level_change
            )
            self._on_level_change(LevelChange(0, fetcher.gate.level, self._level_origin()))
            async with fetcher:
                self._issuer = asyncio.create_task(
                    self._issue_rows(session, fetcher, results, state, id_range)
                )
                try:
                    await self._issuer
                except asyncio.CancelledError:
                    if self._interrupted is None and self._fatal is None:
                        raise
                await asyncio.gather(*state.tasks, return_exceptions=True)
                await results.join()
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        state.checkpoint.cursor = state.mark.mark
        state.checkpoint.finished = (
            state.is_exhausted and self._interrupted is None and self._fatal is None
        )
        state.checkpoint.estimated_time_remaining = "0s" if state.checkpoint.finished else ""
        save_checkpoint(path, state.checkpoint)
        if self._fatal is not None:
            raise self._fatal

    async def _issue_rows(
        self,
        session: DatabaseSession,
        fetcher: ImageFetcher,
        results: asyncio.Queue[tuple[Outcome, _Page]],
        state: _State,
        id_range: db.IdRange | None,
    ) -> None:
        s = self.settings
        rows_in_flight = state.row_slots
        left = s.limit
        cursor = state.checkpoint.cursor
        next_read: asyncio.Task[list[ImageRow]] | None = asyncio.create_task(
            self._read_page(session, cursor, id_range)
        )
        is_short_page = False  # a page shorter than --batch-size: the table has no more rows
        while next_read is not None:
            try:
                page_rows = await next_read
            except BackfillError as exc:  # stop as after a failed write: the checkpoint is saved
                self._fail(exc)
                return
            next_read = None
            is_short_page = len(page_rows) < s.batch_size
            rows = [row for row in page_rows if row.id not in self._skip_ids]
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            if not is_short_page and (left is None or left > 0):
                next_read = asyncio.create_task(
                    self._read_page(session, page_rows[-1].key, id_range)
                )
            page = _Page()
            state.pages.append(page)
            for row in rows:
                await rows_in_flight.acquire()
                state.mark.issue(row.key)
                page.remaining += 1
                task = asyncio.create_task(
                    self._process(row, fetcher, rows_in_flight, results, page)
                )
                state.tasks.add(task)
                task.add_done_callback(state.tasks.discard)
            page.is_closed = True
            if s.delay_ms and next_read is not None:
                while not page.is_done:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(s.delay_ms / 1000)
        state.is_exhausted = is_short_page or left is None or left > 0

    async def _read_page(
        self, session: DatabaseSession, after: PageKey | None, id_range: db.IdRange | None
    ) -> list[ImageRow]:
        return await session.call(
            db.fetch_page,
            self.settings.target,
            after_id=after,
            limit=self.settings.batch_size,
            id_range=id_range,
            order=self._order,
        )

    async def _process(
        self,
        row: ImageRow,
        fetcher: ImageFetcher,
        rows_in_flight: Slots,
        results: asyncio.Queue[tuple[Outcome, _Page]],
        page: _Page,
    ) -> None:
        """One row from URL to outcome; gives back its slot of the rows in flight."""
        try:
            outcome = await self._score_row(row, fetcher)
        finally:
            rows_in_flight.release()
        if outcome is not None:
            results.put_nowait((outcome, page))

    async def _score_row(self, row: ImageRow, fetcher: ImageFetcher) -> Outcome | None:
        attempts = 1
        try:
            fetched = await fetcher.fetch(row.url)
            attempts = fetched.attempts
            scored = await self._pool.score(fetched.data)  # retried once if the pool broke
            result = result_to_dict(
                row.url,
                scored,
                scorer_version=self._versions.scorer,
                measurement_version=self._versions.measurement,
                scored_at=datetime.now(UTC),
                etag=fetched.etag,
                last_modified=fetched.last_modified,
                fetch_ms=None if fetched.download_s is None else fetched.download_s * 1000,
            )
            return Outcome(row, score=scored.score, attempts=attempts, result=result)
        except FetchError as exc:
            return Outcome(row, error=str(exc), attempts=exc.attempts)
        except DecodeError as exc:
            return Outcome(row, error=str(exc), attempts=attempts)
        except ModelError as exc:  # the model, not this image: every row would fail the same way
            self._fail(exc)
            return None
        except BrokenProcessPool:
            if self._interrupted is not None or self._fatal is not None:
                return None
            error = "the scoring process crashed twice on this image (out of memory?)"
            return Outcome(row, error=error, attempts=attempts)
        except Exception as exc:
            return Outcome(row, error=f"internal error while scoring: {exc!r}", attempts=attempts)

    async def _write_loop(
        self,
        session: DatabaseSession,
        results: asyncio.Queue[tuple[Outcome, _Page]],
        state: _State,
        path: Path,
    ) -> None:
        while True:
            batch = [await results.get()]
            if not self.settings.delay_ms and self._fatal is None and self._interrupted is None:
                await asyncio.sleep(WRITE_GATHER_S)
            while not results.empty() and len(batch) < WRITE_BATCH_MAX:
                batch.append(results.get_nowait())
            try:
                if self._fatal is None:
                    await self._write_batch(session, batch, state)
                    self._save_completed_pages(state, path)
            except BackfillError as exc:
                self._fail(exc)
            except Exception as exc:  # a bug must stop the run, never hang it
                self._fail(exc)
            finally:
                for _ in batch:
                    results.task_done()

    async def _write_batch(
        self, session: DatabaseSession, batch: list[tuple[Outcome, _Page]], state: _State
    ) -> None:
        rows = [(o.row.id, o.result) for o, _ in batch if o.result is not None]
        written: dict[RowId, db.WriteResult] = {}
        if rows and not self.settings.dry_run:
            results = await session.write_scores(self.settings.target, rows)
            written = {result.row_id: result for result in results}
        for outcome, page in batch:
            result = written.get(outcome.row.id)
            is_skipped = result is not None and not result.is_written and result.error is None
            if result is not None and result.error is not None:
                outcome = Outcome(outcome.row, error=result.error, attempts=outcome.attempts)
            state.checkpoint.record(outcome, is_skipped=is_skipped)
            state.mark.complete(outcome.row.key)
            page.remaining -= 1
            self.reporter.row_done(outcome)

    def _save_completed_pages(self, state: _State, path: Path) -> None:
        has_advanced = False
        while state.pages and state.pages[0].is_done:
            state.pages.popleft()
            has_advanced = True
        if not has_advanced:
            return
        checkpoint = state.checkpoint
        checkpoint.cursor = state.mark.mark
        self._eta.record(checkpoint.processed - self._resumed_processed)
        checkpoint.estimated_time_remaining = self._eta.describe(
            checkpoint.total - checkpoint.processed
        )
        save_checkpoint(path, checkpoint)
        self.reporter.page_done(checkpoint)

    def _level_origin(self) -> str:
        fetch = self.settings.fetch
        if fetch.is_adaptive:
            return f"--concurrency auto starts here (at most {fetch.max_concurrency})"
        return "fixed by --concurrency"

    def _on_level_change(self, change: LevelChange) -> None:
        """The downloads in flight moved: so do the rows in flight, and the user is told."""
        if self._state is not None:
            backlog = SCORING_BACKLOG_PER_WORKER * self._pool.workers
            self._state.row_slots.set_limit(change.new + backlog)
        self.reporter.level_changed(change)

    def _fail(self, exc: BaseException) -> None:
        """A fatal error (database gone past its reconnect budget, checkpoint unwritable): stop."""
        if self._fatal is None:
            self._fatal = exc
        self._stop()

    def _stop(self) -> None:
        if self._state is None:  # still starting: abandon the start-up and its statement
            if self._main is not None:
                self._main.cancel()
            if self._session is not None:
                self._session.cancel()
            return
        if self._issuer is not None:
            self._issuer.cancel()
        for task in list(self._state.tasks):
            task.cancel()

    def request_stop(self, name: str) -> None:
        """Stop as after the signal `name`, from a signal handler of the caller (watch): through
        the event loop when it runs, else when it starts."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._pending_stop = self._pending_stop or name
            if self._interrupted is None and loop is not None:  # over: only remember it
                self._interrupted = name
            return
        loop.call_soon_threadsafe(self._stop_once, name)

    def _stop_once(self, name: str) -> None:
        if self._interrupted is None:
            self._on_signal(name)

    def _on_signal(self, name: str) -> None:
        self._interrupted = name
        self._pool.stop_replacing()
        self.reporter.warning(stopping_message(name))
        self._stop()

    def _summary_before_start(self) -> RunSummary:
        """Interrupted while starting: nothing was processed and no checkpoint was written."""
        s = self.settings
        path = run_checkpoint_path(s)
        return RunSummary(
            total=0,
            processed=0,
            succeeded=0,
            failed=0,
            skipped=0,
            elapsed_s=time.monotonic() - self._started,
            rate_per_s=0.0,
            dry_run=s.dry_run,
            interrupted=self._interrupted,
            failed_images=(),
            checkpoint_path=str(path),
            limit=s.limit,
        )

    def _summary(self, checkpoint: Checkpoint, path: Path) -> RunSummary:
        elapsed_s = time.monotonic() - self._started
        done_now = checkpoint.processed - self._resumed_processed
        return RunSummary(
            total=checkpoint.total,
            processed=checkpoint.processed,
            succeeded=checkpoint.succeeded,
            failed=checkpoint.failed,
            skipped=checkpoint.skipped,
            elapsed_s=elapsed_s,
            rate_per_s=done_now / elapsed_s if elapsed_s > 0 else 0.0,
            dry_run=checkpoint.dry_run,
            # a signal after the last row was saved finds the work done: not an interruption
            interrupted=None if checkpoint.finished else self._interrupted,
            failed_images=tuple((f.id, f.url, f.error) for f in checkpoint.failed_images),
            checkpoint_path=str(path),
            limit=self.settings.limit,
            score_histogram=tuple(checkpoint.score_histogram),
        )
