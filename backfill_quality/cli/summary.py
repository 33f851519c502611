"""What every progress view shows: live counters, the closing 'Progress Summary', failed rows."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from backfill_quality.models import Outcome, RunSummary
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.pipeline.progress import EtaEstimator, format_duration
from backfill_quality.pipeline.status import CATEGORY_DECILES
from backfill_quality.redaction import redact

MAX_FAILED_SHOWN = 20
RULE = "═" * 60
BAR_WIDTH = 40
DECILE_LABELS = [f"{10 * i}-{10 * i + 9}" for i in range(9)] + ["90-100"]


class Counts:
    """Live counters shared by the reporters: rows counted one by one, corrected at each page."""

    def __init__(self) -> None:
        self.total = self.processed = self.succeeded = self.failed = self.skipped = 0
        self.run_rows = 0
        self.in_flight_level = 0  # downloads allowed in flight (--concurrency), 0: not told yet
        self.started_s = time.monotonic()
        self.eta = EtaEstimator()

    def start(self, total: int, started_s: float) -> None:
        """The run starts: its rows to do, and the moment every elapsed time is counted from."""
        self.total = total
        self.started_s = started_s

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


def summary_lines(summary: RunSummary) -> list[tuple[str, str]]:
    """The original's 'Progress Summary' rows, as (label, value)."""
    pct = min(100.0, 100.0 * summary.processed / summary.total) if summary.total else 0.0
    rate = summary.rate_per_s
    remaining = max(0, summary.total - summary.processed)
    if not remaining:
        eta = format_duration(0.0)  # the original's block ends with ETA 0s, not a blank
    else:
        eta = format_duration(remaining / rate) if rate > 0 else "—"
    limit = [] if summary.limit is None else [("Limit", f"{summary.limit} rows (--limit)")]
    return [
        ("Total", f"{summary.total} images"),
        *limit,
        ("Processed", f"{summary.processed} ({pct:.1f}%)"),
        ("Succeeded", str(summary.succeeded)),
        ("Failed", str(summary.failed)),
        ("Skipped", str(summary.skipped)),
        ("Elapsed", format_duration(summary.elapsed_s)),
        ("Avg per image", f"{1000 / rate:.0f}ms" if rate > 0 else "—"),
        ("Rate", f"{rate:.1f} img/s"),
        ("ETA", eta),
    ]


def bar(count: int, largest: int) -> str:
    """A bar of █ proportional to count/largest, BAR_WIDTH at most."""
    return "█" * (round(BAR_WIDTH * count / largest) if largest else 0)


def score_distribution(summary: RunSummary) -> dict[str, int]:
    """Rows this run scored per category (high, medium, low), from its decile counts."""
    histogram = summary.score_histogram or (0,) * len(DECILE_LABELS)
    return {c: sum(histogram[i] for i in deciles) for c, deciles in CATEGORY_DECILES.items()}


def distribution_lines(summary: RunSummary) -> list[str]:
    """The scores the run found: rows per category and per decile, with bars (none: [])."""
    scored = sum(summary.score_histogram)
    if not scored:
        return []
    what = "would get" if summary.dry_run else "got"
    lines = [f"Scores found: the {scored} rows scored {what}"]
    categories = score_distribution(summary)
    peak = max(categories.values())
    for category, count in categories.items():
        lines.append(
            f"  {category:<8}{count:>7}  {count / scored:>6.1%}  {bar(count, peak)}".rstrip()
        )
    lines.append("By decile:")
    peak = max(summary.score_histogram)
    for label, count in zip(DECILE_LABELS, summary.score_histogram, strict=True):
        lines.append(f"  {label:<8}{count:>7}  {bar(count, peak)}".rstrip())
    return lines


RESCORE_LABELS = {
    "recomputed": "recomputed from the stored measurements (no request)",
    "revalidated": "revalidated (304 Not Modified, result reused)",
    "reusedByHash": "reused by content hash (downloaded, not decoded)",
    "fullyRescored": "fully rescored (downloaded and scored)",
    "skipped": "skipped (changed since read: left as it was)",
    "failed": "failed (score and result kept)",
    "wouldRecompute": "would be recomputed from the stored measurements (no request)",
    "wouldFetch": "would be fetched (conditional GET where a result could be reused)",
}


def rescore_lines(summary: RunSummary) -> list[str]:
    """A rescore's rows by path (nothing for a run)."""
    if summary.rescore is None:
        return []
    lines = ["Rescore, by path:"]
    for path, count in summary.rescore.items():
        lines.append(f"  {count:>7}  {RESCORE_LABELS.get(path, path)}")
    return lines


def closing_notes(summary: RunSummary) -> list[str]:
    notes = rescore_lines(summary)
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
    limit = f" (--limit {summary.limit})" if summary.limit is not None else ""
    paths = ""
    if summary.rescore is not None:
        paths = " (" + ", ".join(f"{n} {p}" for p, n in summary.rescore.items()) + ")"
    return (
        f"{state}{dry}: {summary.processed}/{summary.total} processed{limit}{paths}, "
        f"{summary.succeeded} succeeded, {summary.failed} failed, {summary.skipped} skipped "
        f"in {format_duration(summary.elapsed_s)} ({summary.rate_per_s:.1f} img/s); "
        f"checkpoint {summary.checkpoint_path}"
    )


def shorten(text: str, max_chars: int) -> str:
    text = redact(text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failed_lines(summary: RunSummary) -> list[str]:
    if not summary.failed_images:
        return []
    lines = [f"Failed images ({len(summary.failed_images)}):"]
    for row_id, url, error in summary.failed_images[:MAX_FAILED_SHOWN]:
        lines.append(f"  {row_id}  {shorten(url, 80)}  {shorten(error, 120)}")
    hidden = len(summary.failed_images) - MAX_FAILED_SHOWN
    if hidden > 0:
        lines.append(f"  … and {hidden} more, see the checkpoint {summary.checkpoint_path}")
    return lines
