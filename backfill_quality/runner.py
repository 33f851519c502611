"""The backfill pipeline: keyset pages -> concurrent fetch -> scoring on all cores -> writes.

It knows nothing of the terminal: progress goes to a `Reporter`, errors are raised as
`BackfillError`s. The low-water mark in the checkpoint only passes a row once it is written (or
recorded as failed), so a crash at any moment loses nothing: `--resume` redoes at most the rows
after the last checkpoint, and the guarded UPDATE makes redoing them harmless.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from backfill_quality import db
from backfill_quality.checkpoint import (
    Checkpoint,
    LowWaterMark,
    checkpoint_path_for,
    describe_target,
    make_fingerprint,
    save_checkpoint,
)
from backfill_quality.config import RunSettings
from backfill_quality.dbsession import DatabaseSession
from backfill_quality.errors import BackfillError, DecodeError, FetchError
from backfill_quality.fetch import ImageFetcher
from backfill_quality.models import ImageRow, Outcome, RowId, RunSummary
from backfill_quality.progress import EtaEstimator, Reporter
from backfill_quality.resume import prepare_checkpoint
from backfill_quality.scoring import score_only

NOTHING_TO_DO = "No images need quality score backfill"
EXIT_SIGNALS = {"SIGINT": 130, "SIGTERM": 143}
WRITE_BATCH_MAX = 50


def _ignore_signals() -> None:
    """Worker processes leave SIGINT/SIGTERM to the parent, which stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


class Runner:
    """Runs one backfill with the given settings, reporting to `reporter`."""

    def __init__(
        self, settings: RunSettings, reporter: Reporter, *, handle_signals: bool = True
    ) -> None:
        self.settings = settings
        self.reporter = reporter
        self._handle_signals = handle_signals
        self._interrupted: str | None = None
        self._fatal: BaseException | None = None
        self._issuer: asyncio.Task[None] | None = None
        self._state: _State | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._started = time.monotonic()
        self._resumed_processed = 0
        self._eta = EtaEstimator()

    def run(self) -> RunSummary:
        """Run to the end of the table, to --limit, or to a signal; returns the summary."""
        return asyncio.run(self._run())

    async def _run(self) -> RunSummary:
        s = self.settings
        session = DatabaseSession(s.database_url, on_reconnect=self.reporter.warning)
        try:
            session.open()
            conn = session.connection
            id_type = db.check_target(conn, s.target)
            database = db.describe_database(conn)
            fingerprint = make_fingerprint(database=database, target=s.target, shard=s.shard)
            path = checkpoint_path_for(s.checkpoint_path, dry_run=s.dry_run, shard=s.shard)
            checkpoint = prepare_checkpoint(s, path, fingerprint)
            self._resumed_processed = checkpoint.processed
            checkpoint.target = describe_target(database=database, target=s.target, shard=s.shard)
            id_range = db.key_range_for_shard(conn, s.target, id_type, s.shard) if s.shard else None
            left = db.count_unscored(
                conn, s.target, after_id=checkpoint.last_processed_id, id_range=id_range
            )
            if s.limit is not None:
                left = min(left, s.limit)
            checkpoint.total = checkpoint.processed + left
            checkpoint.finished = False
            if left == 0:
                return self._finish_empty(checkpoint, path)
            self.reporter.start(
                total=checkpoint.total,
                resumed_from=checkpoint.last_processed_id,
                dry_run=s.dry_run,
            )
            await self._pipeline(session, checkpoint, path, id_range)
            return self._summary(checkpoint, path)
        finally:
            session.close()

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
        id_range: tuple[RowId | None, RowId | None] | None,
    ) -> None:
        s = self.settings
        state = _State(checkpoint=checkpoint, mark=LowWaterMark(checkpoint.last_processed_id))
        self._state = state
        results: asyncio.Queue[tuple[Outcome, _Page]] = asyncio.Queue()
        self._install_signal_handlers()
        self._pool = self._new_pool()
        writer = asyncio.create_task(self._write_loop(session, results, state, path))
        try:
            async with ImageFetcher(s.fetch) as fetcher:
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
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._remove_signal_handlers()
        state.checkpoint.last_processed_id = state.mark.mark
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
        id_range: tuple[RowId | None, RowId | None] | None,
    ) -> None:
        s = self.settings
        in_flight = asyncio.Semaphore(s.fetch.concurrency)
        left = s.limit
        cursor = state.checkpoint.last_processed_id
        next_read: asyncio.Task[list[ImageRow]] | None = asyncio.create_task(
            self._read_page(session, cursor, id_range)
        )
        while next_read is not None:
            rows = await next_read
            next_read = None
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            if len(rows) == s.batch_size and (left is None or left > 0):
                next_read = asyncio.create_task(self._read_page(session, rows[-1].id, id_range))
            page = _Page()
            state.pages.append(page)
            for row in rows:
                await in_flight.acquire()
                state.mark.issue(row.id)
                page.remaining += 1
                task = asyncio.create_task(self._process(row, fetcher, in_flight, results, page))
                state.tasks.add(task)
                task.add_done_callback(state.tasks.discard)
            page.is_closed = True
            if s.delay_ms and next_read is not None:
                while not page.is_done:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(s.delay_ms / 1000)
        state.is_exhausted = left is None or left > 0

    async def _read_page(
        self,
        session: DatabaseSession,
        after_id: RowId | None,
        id_range: tuple[RowId | None, RowId | None] | None,
    ) -> list[ImageRow]:
        return await session.call(
            db.fetch_page,
            self.settings.target,
            after_id=after_id,
            limit=self.settings.batch_size,
            id_range=id_range,
        )

    async def _process(
        self,
        row: ImageRow,
        fetcher: ImageFetcher,
        in_flight: asyncio.Semaphore,
        results: asyncio.Queue[tuple[Outcome, _Page]],
        page: _Page,
    ) -> None:
        try:
            outcome = await self._score_row(row, fetcher)
        finally:
            in_flight.release()
        if outcome is not None:
            results.put_nowait((outcome, page))

    async def _score_row(self, row: ImageRow, fetcher: ImageFetcher) -> Outcome | None:
        s = self.settings
        attempts = 1
        try:
            fetched = await fetcher.fetch(row.url)
            attempts = fetched.attempts
            loop = asyncio.get_running_loop()
            assert self._pool is not None
            score = await loop.run_in_executor(
                self._pool, score_only, fetched.data, s.thresholds, s.max_pixels
            )
            return Outcome(row, score=score, attempts=attempts)
        except FetchError as exc:
            return Outcome(row, error=str(exc), attempts=exc.attempts)
        except DecodeError as exc:
            return Outcome(row, error=str(exc), attempts=attempts)
        except BrokenProcessPool:
            if self._interrupted is not None:
                return None
            self._replace_pool()
            return Outcome(
                row, error="the scoring process crashed on this image", attempts=attempts
            )
        except Exception as exc:
            return Outcome(row, error=f"internal error while scoring: {exc!r}", attempts=attempts)

    def _new_pool(self) -> ProcessPoolExecutor:
        """Scoring processes, one per core; forkserver, since this process runs threads."""
        return ProcessPoolExecutor(
            max_workers=self.settings.workers or os.cpu_count() or 1,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_ignore_signals,
        )

    def _replace_pool(self) -> None:
        old = self._pool
        self._pool = self._new_pool()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    async def _write_loop(
        self,
        session: DatabaseSession,
        results: asyncio.Queue[tuple[Outcome, _Page]],
        state: _State,
        path: Path,
    ) -> None:
        while True:
            batch = [await results.get()]
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
        scores = [(o.row.id, o.score) for o, _ in batch if o.score is not None]
        written: dict[RowId, db.WriteResult] = {}
        if scores and not self.settings.dry_run:
            results = await session.call(db.write_score_results, self.settings.target, scores)
            written = {result.row_id: result for result in results}
        for outcome, page in batch:
            result = written.get(outcome.row.id)
            is_skipped = result is not None and not result.is_written and result.error is None
            if result is not None and result.error is not None:
                outcome = Outcome(outcome.row, error=result.error, attempts=outcome.attempts)
            state.checkpoint.record(outcome, is_skipped=is_skipped)
            state.mark.complete(outcome.row.id)
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
        checkpoint.last_processed_id = state.mark.mark
        self._eta.record(checkpoint.processed - self._resumed_processed)
        checkpoint.estimated_time_remaining = self._eta.describe(
            checkpoint.total - checkpoint.processed
        )
        save_checkpoint(path, checkpoint)
        self.reporter.page_done(checkpoint)

    def _fail(self, exc: BaseException) -> None:
        """A fatal error (database gone past its reconnect budget, checkpoint unwritable): stop."""
        if self._fatal is None:
            self._fatal = exc
        self._stop()

    def _stop(self) -> None:
        if self._issuer is not None:
            self._issuer.cancel()
        if self._state is not None:
            for task in list(self._state.tasks):
                task.cancel()

    def _on_signal(self, name: str) -> None:
        if self._interrupted is not None:
            os._exit(EXIT_SIGNALS[name])  # second signal: the last checkpoint on disk is whole
        self._interrupted = name
        self.reporter.warning(
            f"{name} received: stopping after saving the checkpoint "
            "(press Ctrl+C again to exit at once)"
        )
        self._stop()

    def _install_signal_handlers(self) -> None:
        if not self._handle_signals:
            return
        loop = asyncio.get_running_loop()
        for name in EXIT_SIGNALS:
            loop.add_signal_handler(getattr(signal, name), self._on_signal, name)

    def _remove_signal_handlers(self) -> None:
        if not self._handle_signals:
            return
        loop = asyncio.get_running_loop()
        for name in EXIT_SIGNALS:
            loop.remove_signal_handler(getattr(signal, name))

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
            interrupted=self._interrupted,
            failed_images=tuple((f.id, f.url, f.error) for f in checkpoint.failed_images),
            checkpoint_path=str(path),
        )
