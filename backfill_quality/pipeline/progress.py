"""What the runner tells the user, and how fast it goes: the Reporter protocol, an ETA estimator.

The views that draw these events (a live bar, plain lines, JSON) live in `backfill_quality.cli`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from backfill_quality.fetching.controller import LevelChange
from backfill_quality.models import Outcome, RowId, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint


def format_duration(seconds: float) -> str:
    """'45s', '8m 32s', '2h 05m 10s' (rounded to whole seconds)."""
    total_s = max(0, round(seconds))
    hours, rest = divmod(total_s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class EtaEstimator:
    """Rows per second over a sliding window (default 60 s), and the time left at that rate."""

    def __init__(
        self, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])

    def record(self, processed: int) -> None:
        """Note how many rows this run has processed so far (counted from 0 at construction)."""
        now = self._clock()
        self._samples.append((now, processed))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window_s:
            self._samples.popleft()

    @property
    def rate_per_s(self) -> float | None:
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None

    def remaining_s(self, remaining_rows: int) -> float | None:
        """Seconds to finish `remaining_rows`, None while the rate is unknown."""
        if remaining_rows <= 0:
            return 0.0
        rate = self.rate_per_s
        return remaining_rows / rate if rate else None

    def describe(self, remaining_rows: int) -> str:
        """For the checkpoint's `estimatedTimeRemaining`: '33m 54s', or 'unknown'."""
        seconds = self.remaining_s(remaining_rows)
        return "unknown" if seconds is None else format_duration(seconds)


class Reporter(Protocol):
    """What the runner tells the user about; implementations decide how it looks.

    `start` gets `started_s`, the `time.monotonic()` at which the run started: every elapsed time
    shown (the live bar, progress lines, the summary's) is counted from it, so they agree.
    """

    def start(
        self,
        *,
        total: int,
        resumed_from: RowId | None,
        dry_run: bool,
        started_s: float,
        limit: int | None = None,
    ) -> None:
        """`total`: every row left (with those done before a resume); `limit`: --limit."""

    def row_done(self, outcome: Outcome) -> None: ...
    def page_done(self, checkpoint: Checkpoint) -> None: ...
    def level_changed(self, change: LevelChange) -> None:
        """Downloads in flight: the first level (`old` 0), then every move and why."""

    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def error(self, message: str) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...
    def close(self) -> None: ...
