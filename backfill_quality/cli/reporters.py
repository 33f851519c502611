"""Progress reporting: a live rich bar, plain log lines, or JSON events — all on stderr.

With views.py, the only importer of rich. Every text that reaches the user passes through
`redact`, so a password in a URL or an error message never shows.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from backfill_quality.cli.summary import (
    MAX_FAILED_SHOWN,
    RULE,
    Counts,
    closing_notes,
    distribution_lines,
    failed_lines,
    score_distribution,
    shorten,
    summary_line,
    summary_lines,
    utc_now,
)
from backfill_quality.errors import ConfigError
from backfill_quality.fetching.controller import LevelChange
from backfill_quality.models import Outcome, RowId, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.pipeline.progress import Reporter, format_duration
from backfill_quality.redaction import redact

PLAIN_INTERVAL_S = 5.0


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
        self._counts = Counts()
        self._last_line_s: float | None = None

    def _emit(self, level: str, text: str) -> None:
        self._stream.write(f"{utc_now()} {level:<7} {redact(text)}\n")
        self._stream.flush()

    def start(
        self,
        *,
        total: int,
        resumed_from: RowId | None,
        dry_run: bool,
        started_s: float,
        limit: int | None = None,
    ) -> None:
        self._counts.start(total, started_s)
        if self._quiet:
            return
        resumed = f", resuming after id {resumed_from}" if resumed_from is not None else ""
        stops = f", this run stops after {limit} (--limit)" if limit is not None else ""
        mode = " (dry run: nothing is written)" if dry_run else ""
        self._emit("INFO", f"starting: {total} images to score{resumed}{stops}{mode}")

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
            f"{counts.in_flight_level} in flight, elapsed {format_duration(counts.elapsed_s)}, "
            f"ETA {counts.eta.describe(counts.remaining)}",
        )

    def level_changed(self, change: LevelChange) -> None:
        self._counts.in_flight_level = change.new
        if self._verbose:
            self._emit("INFO", level_line(change))

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
        lines = ["📊 Progress Summary", RULE]
        lines += [f"{label + ':':<15}{value}" for label, value in summary_lines(summary)]
        lines += [RULE, *distribution_lines(summary), *closing_notes(summary)]
        lines += failed_lines(summary)
        self._stream.write(redact("\n".join(lines)) + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


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
        self._counts = Counts()

    def _emit(self, event: str, **fields: Any) -> None:
        record = _redact_json({"event": event, "ts": utc_now(), **fields})
        self._stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._stream.flush()

    def start(
        self,
        *,
        total: int,
        resumed_from: RowId | None,
        dry_run: bool,
        started_s: float,
        limit: int | None = None,
    ) -> None:
        self._counts.start(total, started_s)
        if not self._quiet:
            fields = {"resumedFrom": resumed_from, "dryRun": dry_run, "limit": limit}
            self._emit("start", total=total, **fields)

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
            inFlight=counts.in_flight_level,
            elapsedS=round(counts.elapsed_s, 3),
            etaS=None if remaining_s is None else round(remaining_s, 1),
        )

    def level_changed(self, change: LevelChange) -> None:
        self._counts.in_flight_level = change.new
        if not self._quiet:
            self._emit("concurrency", level=change.new, previous=change.old, reason=change.reason)

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
        fields |= {"scoreDistribution": score_distribution(summary)}
        self._emit("summary", **fields)

    def close(self) -> None:
        self._stream.flush()


class RunElapsedColumn(ProgressColumn):
    """The bar's elapsed time, counted from the run's start (as the summary's `Elapsed`), not
    from the bar's appearance; frozen at the summary's value once the run has ended."""

    def __init__(self) -> None:
        super().__init__()
        self.started_s: float | None = None
        self.stopped_at_s: float | None = None

    def render(self, task: Task) -> Text:
        if self.stopped_at_s is not None:
            elapsed_s = self.stopped_at_s
        elif self.started_s is not None:
            elapsed_s = time.monotonic() - self.started_s
        else:
            return Text("")
        return Text(format_duration(elapsed_s), style="progress.elapsed")


class RichReporter:
    """A live bar on a terminal; at the end the 'Progress Summary' block and the failed rows."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self._console = console if console is not None else Console(stderr=True)
        self._verbose = verbose
        self._counts = Counts()
        self._elapsed = RunElapsedColumn()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[green]✓ {task.fields[succeeded]}[/] [red]✗ {task.fields[failed]}[/]"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[level]} in flight"),
            self._elapsed,
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
            level=counts.in_flight_level,
            eta=counts.eta.describe(counts.remaining),
        )

    def start(
        self,
        *,
        total: int,
        resumed_from: RowId | None,
        dry_run: bool,
        started_s: float,
        limit: int | None = None,
    ) -> None:
        self._counts.start(total, started_s)
        self._elapsed.started_s = started_s
        label = ("Dry run" if dry_run else "Scoring") + (
            f" (stops after {limit}: --limit)" if limit is not None else ""
        )
        self._task = self._progress.add_task(
            label,
            total=total or None,
            succeeded=0,
            failed=0,
            rate="",
            level=self._counts.in_flight_level,
            eta="unknown",
        )
        self._progress.start()
        if resumed_from is not None:
            self._say(f"Resuming after id {resumed_from}", "dim")

    def row_done(self, outcome: Outcome) -> None:
        self._counts.row(outcome)
        row = outcome.row
        if not outcome.is_success:
            self._say(f"✗ row {row.id} failed ({shorten(row.url, 80)}): {outcome.error}", "yellow")
        elif self._verbose:
            self._say(f"✓ row {row.id} scored {outcome.score} ({shorten(row.url, 80)})", "dim")
        self._refresh()

    def page_done(self, checkpoint: Checkpoint) -> None:
        self._counts.page(checkpoint)
        self._refresh()

    def level_changed(self, change: LevelChange) -> None:
        self._counts.in_flight_level = change.new
        if self._verbose:
            self._say(level_line(change), "dim")
        self._refresh()

    def info(self, message: str) -> None:
        self._say(message)

    def warning(self, message: str) -> None:
        self._say(f"warning: {message}", "yellow")

    def error(self, message: str) -> None:
        self._say(f"error: {message}", "bold red")

    def finish(self, summary: RunSummary) -> None:
        self._elapsed.stopped_at_s = summary.elapsed_s  # the bar's last frame reads as the summary
        self._progress.stop()
        out = self._console
        out.print()
        out.print("📊 Progress Summary", style="bold", markup=False)
        out.print(RULE, style="dim", markup=False)
        for label, value in summary_lines(summary):
            out.print(f"{label + ':':<15}{value}", markup=False, highlight=False)
        out.print(RULE, style="dim", markup=False)
        for line in distribution_lines(summary):
            out.print(line, markup=False, highlight=False)
        for note in closing_notes(summary):
            out.print(redact(note), markup=False, highlight=False)
        if summary.failed_images:
            out.print(_failed_table(summary))

    def close(self) -> None:
        self._progress.stop()


def level_line(change: LevelChange) -> str:
    """'downloads in flight 8 -> 16: scorers waited for images 40% of the time; …'"""
    if change.old == 0:
        return f"downloads in flight: {change.new} ({change.reason})"
    return f"downloads in flight {change.old} -> {change.new}: {change.reason}"


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
        table.add_row(escape(str(row_id)), escape(shorten(url, 80)), escape(shorten(error, 160)))
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
