"""Static terminal views (rich): one scored image, and the status report.

The live progress display lives in progress.py; this module draws what is printed once.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from backfill_quality.checks import CHECKS
from backfill_quality.models import Analysis
from backfill_quality.redaction import redact
from backfill_quality.status import StatusReport, TableStats

CATEGORY_STYLE = {"high": "green", "medium": "yellow", "low": "red"}
BAR_WIDTH = 40
DECILE_LABELS = [f"{10 * i}-{10 * i + 9}" for i in range(9)] + ["90-100"]

_stdout = Console(highlight=False)
_stderr = Console(stderr=True, highlight=False)


def print_analysis(source: str, analysis: Analysis, console: Console | None = None) -> None:
    """A table of the five checks with their reasons, under the overall score."""
    out = console or _stdout
    m = analysis.measurements
    style = CATEGORY_STYLE[analysis.category]
    out.print(
        f"[bold]{source}[/bold]  {m.width}x{m.height}  brightness {m.brightness:.0f}  "
        f"score [bold {style}]{analysis.score}[/] ([{style}]{analysis.category}[/])"
    )
    if m.subject is None:
        out.print("  subject: none detected")
    else:
        b = m.subject.bbox
        out.print(
            f"  subject: box x={b.x:.2f} y={b.y:.2f} w={b.width:.2f} h={b.height:.2f}, "
            f"{m.subject.count} bird(s), visible {m.subject.visible_ratio:.0%}, "
            f"confidence {m.subject.confidence:.2f}"
        )
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("weight", justify="right")
    table.add_column("score", justify="right")
    table.add_column("", justify="center")
    table.add_column("reason")
    for check, result in zip(CHECKS, analysis.checks, strict=True):
        mark = "[green]✓[/]" if result.passed else "[red]✗[/]"
        table.add_row(result.name, f"{check.weight:.0%}", str(result.score), mark, result.reason)
    out.print(table)


def print_error(source: str, message: str) -> None:
    _stderr.print(f"[bold]{source}[/bold]: [red]failed[/red]: {redact(message)}")


def _bar(count: int, largest: int) -> str:
    width = round(BAR_WIDTH * count / largest) if largest else 0
    return "█" * width


def print_table_stats(stats: TableStats, console: Console) -> None:
    total = stats.scored + stats.unscored
    done = f"{stats.scored / total:.1%}" if total else "n/a"
    console.print(
        f"[bold]Rows[/bold]: {total:,} in all, {stats.scored:,} scored ({done}), "
        f"{stats.unscored:,} left"
    )
    table = Table(title="Score distribution", title_justify="left")
    table.add_column("category")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    largest = max((stats.distribution.get(c, 0) for c in CATEGORY_STYLE), default=0)
    for category, style in CATEGORY_STYLE.items():
        count = stats.distribution.get(category, 0)
        share = f"{count / stats.scored:.1%}" if stats.scored else "-"
        table.add_row(
            f"[{style}]{category}[/]", f"{count:,}", share, f"[{style}]{_bar(count, largest)}[/]"
        )
    console.print(table)
    hist = Table(title="Scores by decile", title_justify="left")
    hist.add_column("score")
    hist.add_column("count", justify="right")
    hist.add_column("")
    peak = max(stats.histogram, default=0)
    for label, count in zip(DECILE_LABELS, stats.histogram, strict=True):
        hist.add_row(label, f"{count:,}", _bar(count, peak))
    console.print(hist)


def print_status(report: StatusReport, console: Console | None = None) -> None:
    """Every checkpoint's progress, then the table's counts and charts."""
    out = console or _stdout
    if not report.checkpoints:
        out.print("No checkpoint found.")
    for info in report.checkpoints:
        cp = info.checkpoint
        if cp is None:
            out.print(f"[bold]{info.path}[/bold]: [red]unreadable[/red]: {info.problem}")
            continue
        state = "finished" if cp.finished else "unfinished (resume with --resume)"
        pct = f"{cp.processed / cp.total:.1%}" if cp.total else "-"
        kind = " dry run" if cp.dry_run else ""
        shard = f" shard {cp.shard}" if cp.shard else ""
        out.print(
            f"[bold]{info.path}[/bold]{kind}{shard}: {state}; processed {cp.processed:,}/"
            f"{cp.total:,} ({pct}), succeeded {cp.succeeded:,}, failed {cp.failed:,}, "
            f"last id {cp.last_processed_id}, ETA {cp.estimated_time_remaining or '-'}"
        )
    if report.table is not None:
        print_table_stats(report.table, out)
