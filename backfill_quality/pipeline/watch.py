"""Watch mode: score new rows as they arrive, with the same pipeline as `run`.

Each cycle is one `Runner` pass over the unscored rows (cheap however big the table: the page
query reads the partial index of unscored rows), so watch has the run's fetching, scoring,
guarded writes, checkpoint and progress. Cycles start when PostgreSQL notifies us (`migrate
--watch` installs the trigger: NOTIFY on the table's own channel, read back from the trigger, on
insert and url change) and at least every `poll_interval_s`, so a missed notification (watch
restarting, trigger disabled, a table without the trigger) delays a row by one poll interval at
most, never loses it.

A row that failed is held back for `retry_failed_after_s` (in memory) so a broken URL is not
fetched again on every cycle; a restarted watch tries it once more.

SIGINT / SIGTERM stop it cleanly: during a cycle the runner saves its checkpoint and stops, while
idle watch stops within a fraction of a second; `WatchResult.interrupted` names the signal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from backfill_quality import db
from backfill_quality.config import (
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_RETRY_FAILED_AFTER_S,
    RunSettings,
)
from backfill_quality.errors import ConfigError, DatabaseError
from backfill_quality.fetching.controller import LevelChange
from backfill_quality.models import Outcome, RowId, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.pipeline.progress import Reporter
from backfill_quality.pipeline.runlock import TargetLock
from backfill_quality.pipeline.runner import NOTHING_TO_DO, Runner

NOTIFY_TRIGGER = db.NOTIFY_TRIGGER
WAIT_SLICE_S = 0.25  # how often an idle wait looks for a stop request
DEBOUNCE_S = 0.2  # after a notification, gather the rest of a burst before a cycle
RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 30.0
STOP_SIGNALS = ("SIGINT", "SIGTERM")
MAX_HELD_PRECHECK = 1000  # above this many held-back rows, just run the cycle

OnCycle = Callable[[int, RunSummary], None]


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """A watch: the run settings of every cycle, plus when cycles start."""

    run: RunSettings
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    retry_failed_after_s: float = DEFAULT_RETRY_FAILED_AFTER_S
    debounce_s: float = DEBOUNCE_S

    def __post_init__(self) -> None:
        if not self.poll_interval_s > 0:
            raise ConfigError("--poll-interval must be greater than 0 seconds")
        if self.retry_failed_after_s < 0:
            raise ConfigError("--retry-failed-after must be 0 or more seconds")
        if self.run.limit is not None:
            raise ConfigError("watch does not take --limit: it scores every new row")


@dataclass(slots=True)
class WatchResult:
    """What a watch did until it stopped."""

    cycles: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    interrupted: str | None = None


class _CycleReporter:
    """Forwards to the real reporter, but keeps a cycle with nothing to score silent."""

    def __init__(self, inner: Reporter) -> None:
        self._inner = inner
        self._start: dict[str, Any] | None = None
        self.is_active = False

    def start(
        self,
        *,
        total: int,
        resumed_from: RowId | None,
        dry_run: bool,
        started_s: float,
        limit: int | None = None,
    ) -> None:
        self._start = {
            "total": total,
            "resumed_from": resumed_from,
            "dry_run": dry_run,
            "started_s": started_s,
            "limit": limit,
        }

    def _activate(self) -> None:
        if self._start is not None:
            self._inner.start(**self._start)
            self._start = None
            self.is_active = True

    def row_done(self, outcome: Outcome) -> None:
        self._activate()
        self._inner.row_done(outcome)

    def page_done(self, checkpoint: Checkpoint) -> None:
        if self.is_active:
            self._inner.page_done(checkpoint)

    def level_changed(self, change: LevelChange) -> None:
        self._inner.level_changed(change)

    def info(self, message: str) -> None:
        if message != NOTHING_TO_DO:
            self._inner.info(message)

    def warning(self, message: str) -> None:
        self._inner.warning(message)

    def error(self, message: str) -> None:
        self._inner.error(message)

    def finish(self, summary: RunSummary) -> None:
        if self.is_active or summary.interrupted:
            self._inner.finish(summary)

    def close(self) -> None:
        self._inner.close()


class Watcher:
    """Runs cycles until a signal; `make_reporter` gives a fresh reporter for each cycle."""

    def __init__(
        self,
        settings: WatchSettings,
        make_reporter: Callable[[], Reporter],
        *,
        on_cycle: OnCycle | None = None,
    ) -> None:
        self.settings = settings
        self._make_reporter = make_reporter
        self._log = make_reporter()  # watch's own messages (start, reconnects, stop)
        self._on_cycle = on_cycle
        self._held_until: dict[RowId, float] = {}
        self._stop_signal: str | None = None
        self._runner: Runner | None = None
        """The cycle's runner while one runs: a signal is passed on to it."""
        self._listener: Any = None
        self._id_type = ""
        self._lock = TargetLock(settings.run.target, settings.run.shard, command="watch")
        """Held by the listener's session for the watch's life, taken again when it reconnects;
        each cycle's runner finds it held by us."""

    def run(self) -> WatchResult:
        """Watch until SIGINT / SIGTERM; a fatal error (bad table, unwritable checkpoint) raises."""
        result = WatchResult()
        with self._signal_handlers():
            try:
                self._loop(result)
            finally:
                self._close_listener()
        result.interrupted = self._stop_signal
        if result.interrupted:
            self._log.info(
                f"{result.interrupted} received: watch stopped after {result.cycles} cycle(s), "
                f"{result.succeeded} scored, {result.failed} failed"
            )
        self._log.close()
        return result

    def _loop(self, result: WatchResult) -> None:
        s = self.settings
        self._open_listener(announce=True)
        reconnect_attempt = 0
        while self._stop_signal is None:
            try:
                if self._listener is None:
                    self._open_listener(announce=False)
                summary = self._cycle(result.cycles + 1) if self._has_work() else None
                reconnect_attempt = 0
            except DatabaseError as exc:
                if not exc.retryable:
                    raise
                reconnect_attempt += 1
                self._close_listener()
                delay_s = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**reconnect_attempt)
                delay_s *= random.uniform(0.5, 1.0)
                self._log.warning(f"{exc}; watch tries again in {delay_s:.1f}s")
                self._sleep(delay_s)
                continue
            if summary is not None:
                self._record(result, summary)
                if summary.interrupted:
                    self._stop_signal = summary.interrupted
                    break
            self._wait_for_work(s.poll_interval_s)

    def _has_work(self) -> bool:
        """False when every unscored row is a failed one held back (no cycle needed then)."""
        held = self._held_until
        now = time.monotonic()
        if not held or self._listener is None or len(held) > MAX_HELD_PRECHECK:
            return True
        if any(t <= now for t in held.values()):
            return True
        s = self.settings.run
        id_range = (
            db.key_range_for_shard(self._listener, s.target, self._id_type, s.shard)
            if s.shard
            else None
        )
        rows = db.fetch_page(
            self._listener, s.target, after_id=None, limit=len(held) + 1, id_range=id_range
        )
        return any(row.id not in held for row in rows)

    def _cycle(self, number: int) -> RunSummary:
        """One pass of the runner over the unscored rows (failed rows held back are skipped)."""
        now = time.monotonic()
        self._held_until = {k: t for k, t in self._held_until.items() if t > now}
        run_settings = dataclasses.replace(
            self.settings.run, restart=True, resume=False, retry_failed=False
        )
        reporter = _CycleReporter(self._make_reporter())
        try:
            runner = Runner(
                run_settings, reporter, skip_ids=self._held_until.keys(), lock=self._lock
            )
            self._runner = runner
            if self._stop_signal is not None:  # came while the runner was being made
                runner.request_stop(self._stop_signal)
            summary = runner.run()
            reporter.finish(summary)
            if self._stop_signal is None:  # a signal after the cycle's last row still stops us
                self._stop_signal = runner.signal_received
        finally:
            self._runner = None
            self._install_handlers()  # the runner's event loop reset them when it ended
            reporter.close()
        if self._on_cycle is not None and (summary.processed or summary.interrupted):
            self._on_cycle(number, summary)
        return summary

    def _record(self, result: WatchResult, summary: RunSummary) -> None:
        result.cycles += 1
        result.processed += summary.processed
        result.succeeded += summary.succeeded
        result.failed += summary.failed
        retry_at = time.monotonic() + self.settings.retry_failed_after_s
        for row_id, _, _ in summary.failed_images:
            self._held_until[row_id] = retry_at

    # --- waiting ---------------------------------------------------------------------------

    def _wait_for_work(self, timeout_s: float) -> None:
        """Return on a notification (after a short debounce), at the timeout, or on a signal."""
        deadline = time.monotonic() + timeout_s
        while self._stop_signal is None:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return
            if self._listener is None:
                self._sleep(min(WAIT_SLICE_S, remaining_s))
                continue
            slice_s = min(WAIT_SLICE_S, remaining_s)
            if db.wait_for_notifications(self._listener, slice_s):
                self._sleep(self.settings.debounce_s)
                db.wait_for_notifications(self._listener, 0.0)  # drain the burst
                return

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._stop_signal is None and (left_s := deadline - time.monotonic()) > 0:
            time.sleep(min(WAIT_SLICE_S, left_s))

    def _open_listener(self, *, announce: bool) -> None:
        """LISTEN before the first cycle, so no row inserted during it goes unnoticed."""
        s = self.settings
        target = s.run.target
        conn = db.connect(s.run.database_url, application_name=self._lock.application_name)
        try:
            self._id_type = db.check_target(conn, target)
            self._lock.ensure(conn)
            channel = db.notify_channel(conn, target)
            if channel is not None:
                db.listen(conn, channel)
        except BaseException:
            conn.close()
            raise
        self._listener = conn
        if not announce:
            return
        interval = f"{s.poll_interval_s:g} s"
        if channel is not None:
            self._log.info(f"watching {target.label}: LISTEN {channel} and a poll every {interval}")
        else:
            command = " ".join(["backfill-quality migrate --watch", *target.cli_options()])
            self._log.warning(
                f"table {target.label} has no {NOTIFY_TRIGGER} trigger, so new rows are found"
                f" by the poll every {interval} only; `{command}` installs it (and a trigger"
                " that resets the score when a row's url changes)"
            )

    def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to save
                conn.close()

    # --- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop_signal is None:
            self._stop_signal = name
        runner = self._runner
        if runner is not None:
            # The runner's own handlers cover its pipeline; this one runs before they are
            # installed and after they are removed, anywhere in asyncio's machinery: it must not
            # raise there (an exception inside a loop callback is swallowed, and the callback it
            # cut short can leave asyncio.run waiting forever). It asks the runner to stop.
            runner.request_stop(name)

    def _install_handlers(self) -> None:
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), self._on_signal)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        previous = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
        self._install_handlers()
        try:
            yield
        finally:
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler)
