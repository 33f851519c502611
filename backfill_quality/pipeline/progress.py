"""Progress reporting: a live rich bar, plain log lines, or JSON events — all on stderr.

The only importer of rich. Every text that reaches the user passes through `redact`, so a
password in a URL or an error message never shows.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from backfill_quality.errors import ConfigError
from backfill_quality.models import Outcome, RowId, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.redaction import redact

MAX_FAILED_SHOWN = 20
PLAIN_INTERVAL_S = 5.0
_RULE = "═" * 60


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
    """What the runner tells the user about; implementations decide how it looks."""

    def start(self, *, total: int, resumed_from: RowId | None, dry_run: bool) -> None: ...
    def row_done(self, outcome: Outcome) -> None: ...
    def page_done(self, checkpoint: Checkpoint) -> None: ...
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def error(self, message: str) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...
    def close(self) -> None: ...


class _Counts:
    """Live counters shared by the reporters: rows counted one by one, corrected at each page."""

    def __init__(self) -> None:
        self.total = self.processed = self.succeeded = self.failed = self.skipped = 0
        self.run_rows = 0
        self.started_s = time.monotonic()
        self.eta = EtaEstimator()

    def row(self, outcome: Outcome) -> None:
        self.run_rows += 1
        self.processed += 1
        if outcome.is_success:
            self.succeeded += 1
        else:
            self.failed += 1
        self.eta.record(self.run_rows)

    def page(self, checkpoint: Checkpoint) -> None:
        self.total = max(checkpoint.total, self.total)
        self.processed, self.skipped = checkpoint.processed, checkpoint.skipped
        self.succeeded, self.failed = checkpoint.succeeded, checkpoint.failed

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.processed)

    def percent(self, done: int | None = None) -> float:
        done = self.processed if done is None else done
        return min(100.0, 100.0 * done / self.total) if self.total else 0.0


def _summary_lines(summary: RunSummary) -> list[tuple[str, str]]:
    """The original's 'Progress Summary' rows, as (label, value)."""
    pct = min(100.0, 100.0 * summary.processed / summary.total) if summary.total else 0.0
    rate = summary.rate_per_s
    remaining = max(0, summary.total - summary.processed)
    if not remaining:
        eta = format_duration(0.0)  # the original's block ends with ETA 0s, not a blank
    else:
        eta = format_duration(remaining / rate) if rate > 0 else "—"
    return [
        ("Total", f"{summary.total} images"),
        ("Processed", f"{summary.processed} ({pct:.1f}%)"),
        ("Succeeded", str(summary.succeeded)),
        ("Failed", str(summary.failed)),
        ("Skipped", str(summary.skipped)),
        ("Elapsed", format_duration(summary.elapsed_s)),
        ("Avg per image", f"{1000 / rate:.0f}ms" if rate > 0 else "—"),
        ("Rate", f"{rate:.1f} img/s"),
        ("ETA", eta),
    ]


def _closing_notes(summary: RunSummary) -> list[str]:
    notes = []
    if summary.dry_run:
        notes.append("Dry run: nothing was written to the database.")
    if summary.interrupted:
        notes.append(f"Stopped by {summary.interrupted}; continue with --resume.")
    notes.append(f"Checkpoint: {summary.checkpoint_path}")
    return notes


def summary_line(summary: RunSummary) -> str:
    """One line for --quiet and logs: counts, time, rate, checkpoint."""
    state = f"interrupted by {summary.interrupted}" if summary.interrupted else "done"
    dry = " (dry run)" if summary.dry_run else ""
    return (
        f"{state}{dry}: {summary.processed}/{summary.total} processed, "
        f"{summary.succeeded} succeeded, {summary.failed} failed, {summary.skipped} skipped "
        f"in {format_duration(summary.elapsed_s)} ({summary.rate_per_s:.1f} img/s); "
        f"checkpoint {summary.checkpoint_path}"
    )


def _shorten(text: str, max_chars: int) -> str:
    text = redact(text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlainReporter:
    """Plain log lines for logs and pipes: a start line, throttled progress, failures, a summary."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        verbose: bool = False,
        quiet: bool = False,
        interval_s: float = PLAIN_INTERVAL_S,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._verbose, self._quiet, self._interval_s = verbose, quiet, interval_s
        self._counts = _Counts()
        self._last_line_s: float | None = None

    def _emit(self, level: str, text: str) -> None:
        self._stream.write(f"{_utc_now()} {level:<7} {redact(text)}\n")
        self._stream.flush()

    def start(self, *, total: int, resumed_from: RowId | None, dry_run: bool) -> None:
        self._counts.total = total
        if self._quiet:
            return
        resumed = f", resuming after id {resumed_from}" if resumed_from is not None else ""
        mode = " (dry run: nothing is written)" if dry_run else ""
        self._emit("INFO", f"starting: {total} images to score{resumed}{mode}")

    def row_done(self, outcome: Outcome) -> None:
        self._counts.row(outcome)
        if self._quiet:
            return
        row = outcome.row
        if not outcome.is_success:
            self._emit("WARNING", f"row {row.id} failed ({row.url}): {outcome.error}")
        elif self._verbose:
            self._emit("INFO", f"row {row.id} scored {outcome.score} ({row.url})")

    def page_done(self, checkpoint: Checkpoint) -> None:
        counts = self._counts
        counts.page(checkpoint)
        now = time.monotonic()
        due = self._last_line_s is None or now - self._last_line_s >= self._interval_s
        if self._quiet or not (due or self._verbose):
            return
        self._last_line_s = now
        rate = counts.eta.rate_per_s or 0.0
        self._emit(
            "INFO",
            f"progress: {counts.processed}/{counts.total} ({counts.percent():.1f}%), "
            f"{counts.succeeded} succeeded, {counts.failed} failed, {rate:.1f} img/s, "
            f"elapsed {format_duration(counts.elapsed_s)}, "
            f"ETA {counts.eta.describe(counts.remaining)}",
        )

    def info(self, message: str) -> None:
        self._emit("INFO", message)

    def warning(self, message: str) -> None:
        self._emit("WARNING", message)

    def error(self, message: str) -> None:
        self._emit("ERROR", message)

    def finish(self, summary: RunSummary) -> None:
        if self._quiet:
            self._emit("INFO", summary_line(summary))
            return
        lines = ["📊 Progress Summary", _RULE]
        lines += [f"{label + ':':<15}{value}" for label, value in _summary_lines(summary)]
        lines += [_RULE, *_closing_notes(summary)]
        lines += _failed_lines(summary)
        self._stream.write(redact("\n".join(lines)) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


def _failed_lines(summary: RunSummary) -> list[str]:
    if not summary.failed_images:
        return []
    lines = [f"Failed images ({len(summary.failed_images)}):"]
    for row_id, url, error in summary.failed_images[:MAX_FAILED_SHOWN]:
        lines.append(f"  {row_id}  {_shorten(url, 80)}  {_shorten(error, 120)}")
    hidden = len(summary.failed_images) - MAX_FAILED_SHOWN
    if hidden > 0:
        lines.append(f"  … and {hidden} more, see the checkpoint {summary.checkpoint_path}")
    return lines


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _redact_json(value: Any) -> Any:
    """Mask passwords in every string of a JSON-ready value, before encoding (JSON stays valid)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(item) for item in value]
    return value


class JsonReporter:
    """One JSON object per event on stderr: start, row, page, failed, summary, warning, error."""

    def __init__(
        self, stream: TextIO | None = None, *, verbose: bool = False, quiet: bool = False
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._verbose, self._quiet = verbose, quiet
        self._counts = _Counts()

    def _emit(self, event: str, **fields: Any) -> None:
        record = _redact_json({"event": event, "ts": _utc_now(), **fields})
        self._stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._stream.flush()

    def start(self, *, total: int, resumed_from: RowId | None, dry_run: bool) -> None:
        self._counts.total = total
        if not self._quiet:
            self._emit("start", total=total, resumedFrom=resumed_from, dryRun=dry_run)

    def row_done(self, outcome: Outcome) -> None:
        self._counts.row(outcome)
        row = outcome.row
        if not outcome.is_success and not self._quiet:
            fields = {"url": row.url, "error": outcome.error, "attempts": outcome.attempts}
            self._emit("failed", id=row.id, **fields)
        elif outcome.is_success and self._verbose:
            self._emit("row", id=row.id, score=outcome.score, attempts=outcome.attempts)

    def page_done(self, checkpoint: Checkpoint) -> None:
        counts = self._counts
        counts.page(checkpoint)
        if self._quiet:
            return
        remaining_s = counts.eta.remaining_s(counts.remaining)
        self._emit(
            "page",
            total=counts.total,
            processed=counts.processed,
            succeeded=counts.succeeded,
            failed=counts.failed,
            skipped=counts.skipped,
            lastProcessedId=checkpoint.last_processed_id,
            ratePerS=round(counts.eta.rate_per_s or 0.0, 2),
            elapsedS=round(counts.elapsed_s, 3),
            etaS=None if remaining_s is None else round(remaining_s, 1),
        )

    def info(self, message: str) -> None:
        self._emit("info", message=message)

    def warning(self, message: str) -> None:
        self._emit("warning", message=message)

    def error(self, message: str) -> None:
        self._emit("error", message=message)

    def finish(self, summary: RunSummary) -> None:
        fields = {_camel(k): v for k, v in asdict(summary).items() if k != "failed_images"}
        failed = [{"id": i, "url": u, "error": e} for i, u, e in summary.failed_images]
        hidden = max(0, len(failed) - MAX_FAILED_SHOWN)
        fields |= {"failedImages": failed[:MAX_FAILED_SHOWN], "failedImagesOmitted": hidden}
        self._emit("summary", **fields)

    def close(self) -> None:
        self._stream.flush()


class RichReporter:
    """A live bar on a terminal; at the end the 'Progress Summary' block and the failed rows."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self._console = console if console is not None else Console(stderr=True)
        self._verbose = verbose
        self._counts = _Counts()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[green]✓ {task.fields[succeeded]}[/] [red]✗ {task.fields[failed]}[/]"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=self._console,
        )
        self._task: TaskID | None = None

    def _say(self, text: str, style: str = "") -> None:
        self._progress.console.print(redact(text), style=style, markup=False, highlight=False)

    def _refresh(self) -> None:
        counts = self._counts
        if self._task is None:
            return
        rate = counts.eta.rate_per_s
        self._progress.update(
            self._task,
            total=counts.total or None,
            completed=counts.processed,
            succeeded=counts.succeeded,
            failed=counts.failed,
            rate=f"{rate:.1f} img/s" if rate else "",
            eta=counts.eta.describe(counts.remaining),
        )

    def start(self, *, total: int, resumed_from: RowId | None, dry_run: bool) -> None:
        self._counts.total = total
        label = "Dry run" if dry_run else "Scoring"
        self._task = self._progress.add_task(
            label, total=total or None, succeeded=0, failed=0, rate="", eta="unknown"
        )
        self._progress.start()
        if resumed_from is not None:
            self._say(f"Resuming after id {resumed_from}", "dim")

    def row_done(self, outcome: Outcome) -> None:
        self._counts.row(outcome)
        row = outcome.row
        if not outcome.is_success:
            self._say(f"✗ row {row.id} failed ({_shorten(row.url, 80)}): {outcome.error}", "yellow")
        elif self._verbose:
            self._say(f"✓ row {row.id} scored {outcome.score} ({_shorten(row.url, 80)})", "dim")
        self._refresh()

    def page_done(self, checkpoint: Checkpoint) -> None:
        self._counts.page(checkpoint)
        self._refresh()

    def info(self, message: str) -> None:
        self._say(message)

    def warning(self, message: str) -> None:
        self._say(f"warning: {message}", "yellow")

    def error(self, message: str) -> None:
        self._say(f"error: {message}", "bold red")

    def finish(self, summary: RunSummary) -> None:
        self._progress.stop()
        out = self._console
        out.print()
        out.print("📊 Progress Summary", style="bold", markup=False)
        out.print(_RULE, style="dim", markup=False)
        for label, value in _summary_lines(summary):
            out.print(f"{label + ':':<15}{value}", markup=False, highlight=False)
        out.print(_RULE, style="dim", markup=False)
        for note in _closing_notes(summary):
            out.print(redact(note), markup=False, highlight=False)
        if summary.failed_images:
            out.print(_failed_table(summary))

    def close(self) -> None:
        self._progress.stop()


def _failed_table(summary: RunSummary) -> Table:
    shown = summary.failed_images[:MAX_FAILED_SHOWN]
    hidden = len(summary.failed_images) - len(shown)
    caption = (
        f"… and {hidden} more, see the checkpoint {summary.checkpoint_path}" if hidden else None
    )
    table = Table(title=f"Failed images ({len(summary.failed_images)})", caption=caption)
    table.add_column("id", no_wrap=True)
    table.add_column("url", overflow="fold")
    table.add_column("error", overflow="fold")
    for row_id, url, error in shown:
        table.add_row(escape(str(row_id)), escape(_shorten(url, 80)), escape(_shorten(error, 160)))
    return table


def make_reporter(
    *, log_format: str, verbose: bool, quiet: bool, is_terminal: bool | None = None
) -> Reporter:
    """JSON events, a live bar on a terminal, or plain lines (also for --quiet); all on stderr."""
    if log_format not in ("text", "json"):
        raise ConfigError(f"--log-format must be 'text' or 'json', not {log_format!r}")
    if verbose and quiet:
        raise ConfigError("--verbose and --quiet cannot be used together")
    if log_format == "json":
        return JsonReporter(verbose=verbose, quiet=quiet)
    if is_terminal is None:
        is_terminal = sys.stderr.isatty()
    if is_terminal and not quiet:
        return RichReporter(verbose=verbose)
    return PlainReporter(verbose=verbose, quiet=quiet)
