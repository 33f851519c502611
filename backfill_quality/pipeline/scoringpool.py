"""The scoring processes of a run: start, warm up, score one image, survive crashes, shut down.

Kept apart from the runner because it is a different kind of thing: the runner schedules rows on
one event loop, while this owns operating-system processes and their failure modes (a worker
killed by the kernel breaks the whole pool, which must be replaced, and a crash repeated with no
success in between must end the run instead of looping). The workers import NumPy and Pillow;
this module does not, it only sends them `worker.score_in_worker` by reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from backfill_quality.config import DetectorChoice, Thresholds, available_cpus
from backfill_quality.errors import BackfillError
from backfill_quality.models import ScoredImage
from backfill_quality.pipeline.lifeline import FORKSERVER_PRELOAD_MODULE, Lifeline, start_forkserver
from backfill_quality.pipeline.worker import (
    SCORING_MODULE,
    prepare_worker,
    score_in_worker,
    warm_up,
)

MAX_POOL_CRASHES = 5
"""Scoring-process crashes in a row, with no image scored in between, before the run gives up."""
KEEP_CRASHING = (
    "the scoring processes keep crashing; try `backfill-quality score --verbose` on one of the "
    "images to see why"
)
RESTARTED = (
    "a scoring process died (killed by the system: out of memory?); new ones were started and "
    "the images it held are scored again"
)


class ScoringPool:
    """`workers` scoring processes; a pool broken by a crash is replaced, once per breakage.

    `on_give_up` receives a `BackfillError` when more than MAX_POOL_CRASHES crashes come in a row
    with no image scored in between (the caller stops the run); `on_restart` receives a message
    for the user each time the pool is replaced.
    """

    def __init__(
        self,
        *,
        workers: int,
        thresholds: Thresholds,
        max_pixels: int,
        detector: DetectorChoice,
        on_give_up: Callable[[BackfillError], None],
        on_restart: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.workers = workers
        self._thresholds = thresholds
        self._max_pixels = max_pixels
        self._detector = detector
        # processes x threads = the CPUs we may use: each model session gets its share
        self._threads = max(1, available_cpus() // workers)
        self._on_give_up = on_give_up
        self._on_restart = on_restart
        self._executor: ProcessPoolExecutor | None = None
        self._lifeline: Lifeline | None = None
        self._crashes = 0
        self._is_replacing = True
        self._outstanding = 0  # images handed to the processes and not yet scored
        self._waited_s = 0.0
        self._counted_until_s = time.monotonic()

    def waited_s(self) -> float:
        """Seconds the scoring processes have waited for images so far, averaged over them
        (2 processes, one idle for 1 s: 0.5). What `--concurrency auto` grows on."""
        self._count_idle()
        return self._waited_s

    def _count_idle(self) -> None:
        now_s = time.monotonic()
        idle = max(0, self.workers - self._outstanding)
        self._waited_s += (now_s - self._counted_until_s) * idle / self.workers
        self._counted_until_s = now_s

    def start(self) -> None:
        """Create the pool (its processes start with the first tasks, e.g. `warm_up`).

        Every process it starts dies with this one, however this one ends (`lifeline.py`)."""
        self._lifeline = Lifeline()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([FORKSERVER_PRELOAD_MODULE, SCORING_MODULE])
        start_forkserver()
        self._executor = self._new_executor()

    def warm_up(self) -> None:
        """Start every scoring process now (each loads the scoring code once), so the first
        images do not wait for them. Blocking: run it on a helper thread."""
        executor = self._executor
        assert executor is not None, "start() the pool first"
        with contextlib.suppress(RuntimeError):  # the run stopped while starting: pool shut
            futures = [
                executor.submit(warm_up, self._detector, self._threads) for _ in range(self.workers)
            ]
            for future in futures:
                future.result()

    async def score(self, data: bytes) -> ScoredImage:
        """The analysis of one encoded image, computed in a worker process.

        Raises DecodeError for unusable bytes, and BrokenProcessPool when the pool broke twice
        under this image (the first time it is retried: a crash elsewhere may have taken it along).
        """
        try:
            score = await self._score_once(data)
        except BrokenProcessPool:
            score = await self._score_once(data)
        self._crashes = 0
        return score

    def stop_replacing(self) -> None:
        """The run is being interrupted: a pool that breaks from now on stays broken."""
        self._is_replacing = False

    def shutdown(self) -> None:
        """Stop the processes, dropping images not yet started; waits for the ones running."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._lifeline is not None:
            self._lifeline.close()  # a scoring process of a replaced pool still exiting goes too
            self._lifeline = None

    async def _score_once(self, data: bytes) -> ScoredImage:
        """Score in a worker process; a broken pool is replaced (once per breakage) and the
        error re-raised. Crash after crash with no success in between is fatal."""
        executor = self._executor
        assert executor is not None, "start() the pool first"
        self._count_idle()
        self._outstanding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor,
                score_in_worker,
                data,
                self._thresholds,
                self._max_pixels,
                self._detector,
                self._threads,
            )
        except BrokenProcessPool:
            if executor is self._executor and self._is_replacing:
                self._crashes += 1
                if self._crashes > MAX_POOL_CRASHES:
                    self._on_give_up(BackfillError(KEEP_CRASHING))
                else:
                    self._replace()
                    self._on_restart(RESTARTED)
            raise
        finally:
            self._count_idle()
            self._outstanding -= 1

    def _replace(self) -> None:
        old = self._executor
        self._executor = self._new_executor()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self) -> ProcessPoolExecutor:
        """Scoring processes, one per worker; forkserver, since the main process runs threads."""
        assert self._lifeline is not None, "start() the pool first"
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=prepare_worker,
            initargs=(self._lifeline.reader,),
        )
