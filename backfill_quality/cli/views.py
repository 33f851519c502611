"""Static terminal views (rich): one scored image, and the status report.

The live progress display lives in progress.py; this module draws what is printed once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backfill_quality.cli.summary import DECILE_LABELS, bar
from backfill_quality.cli.trend_view import print_trend
from backfill_quality.models import Analysis
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.pipeline.progress import format_duration
from backfill_quality.pipeline.status import (
    RESCORE,
    SHARD_SUFFIX,
    CheckpointInfo,
    ShardGroup,
    StatusReport,
    TableStats,
    checkpoint_kind,
)
from backfill_quality.redaction import redact
from backfill_quality.scoring.checks import CHECKS

CATEGORY_STYLE = {"high": "green", "medium": "yellow", "low": "red"}

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
    presence = "" if m.presence is None else f", bird probability {m.presence:.2f}"
    out.print(f"  detector: {m.detector}{presence}")
    if m.subject is None:
        out.print("  subject: no bird found")
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


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return format_duration(max(0.0, (datetime.now(UTC) - moment).total_seconds())) + " ago"


def print_table_stats(stats: TableStats, console: Console) -> None:
    total = stats.scored + stats.unscored
    done = f"{stats.scored / total:.1%}" if total else "n/a"
    about = "≈ " if stats.is_estimate else ""
    console.print(
        f"[bold]Rows[/bold]: {about}{total:,} in all, {about}{stats.scored:,} scored ({done}), "
        f"{about}{stats.unscored:,} left"
        + (" [dim](planner estimates; --exact counts them)[/dim]" if stats.is_estimate else "")
    )
    if stats.without_result is None:
        console.print(
            "[yellow]No results table[/yellow]: run `backfill-quality migrate` to keep what each"
            " score is made of (a real run needs it)"
        )
    elif stats.without_result:
        console.print(
            f"[bold]Without a stored result[/bold]: {about}{stats.without_result:,} scored rows"
            " (scored before the results table existed)"
        )
    if (versions := stats.by_version) is not None:
        console.print(
            f"[bold]By scorer version[/bold] ({versions.scorer_version}): {versions.current:,}"
            f" current, {versions.stale:,} stale, {versions.unknown:,} unknown"
            + (
                " [dim](`backfill-quality rescore` refreshes them)[/dim]"
                if versions.stale or versions.unknown
                else ""
            ),
            highlight=False,
        )
    table = Table(title="Score distribution", title_justify="left")
    table.add_column("category")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    distribution = stats.distribution
    largest = max((distribution[c] for c in CATEGORY_STYLE), default=0)
    for category, style in CATEGORY_STYLE.items():
        count = distribution[category]
        share = f"{count / stats.scored:.1%}" if stats.scored else "-"
        table.add_row(
            f"[{style}]{category}[/]", f"{count:,}", share, f"[{style}]{bar(count, largest)}[/]"
        )
    console.print(table)
    hist = Table(title="Scores by decile", title_justify="left")
    hist.add_column("score")
    hist.add_column("count", justify="right")
    hist.add_column("")
    peak = max(stats.histogram, default=0)
    for label, count in zip(DECILE_LABELS, stats.histogram, strict=True):
        hist.add_row(label, f"{count:,}", bar(count, peak))
    console.print(hist)


def _print_checkpoint(info: CheckpointInfo, out: Console) -> None:
    cp = info.checkpoint
    name = escape(str(info.path))
    if cp is None:
        out.print(f"[bold]{name}[/bold]: [red]unreadable[/red]: {escape(info.problem or '')}")
        return
    state = "finished" if cp.finished else "unfinished (continue with --resume)"
    pct = f"{info.percent:.1f}%" if info.percent is not None else "-"
    is_rescore = checkpoint_kind(cp) == RESCORE
    kind = (" rescore" if is_rescore else "") + (" dry run" if cp.dry_run else "")
    shard = f" shard {cp.shard}" if cp.shard else ""
    eta = "-" if cp.finished else (cp.estimated_time_remaining or "-")
    target = f" [dim]({escape(redact(SHARD_SUFFIX.sub('', cp.target)))})[/dim]" if cp.target else ""
    if is_rescore:  # a row a rescore could not refresh still has its old score
        kept = " (old scores kept)" if cp.failed else ""
        outcome = f"rescored {cp.succeeded:,}, could not be rescored {cp.failed:,}{kept}"
    else:
        outcome = f"succeeded {cp.succeeded:,}, failed {cp.failed:,}"
    out.print(
        f"[bold]{name}[/bold]{target}{kind}{shard}: {state}; processed "
        f"{cp.processed:,}/{cp.total:,} ({pct}), {outcome}, ETA {eta}, {_place(cp)}, "
        f"updated {_age(info.updated_at)}"
    )


def _place(cp: Checkpoint) -> str:
    """Where the checkpoint's mark is: the last id, or with --order-by the order and its cursor
    ("cursor at created_at = 2024-05-01T00:00:00+00:00, id 42", or in the NULLs phase)."""
    if cp.order_by is None:
        return f"last id {escape(str(cp.last_processed_id))}"
    column = escape(cp.order_by.column)
    cursor = cp.order_cursor
    if cursor is None:
        where = "not started"
    elif cursor.is_null:
        where = f"cursor in the NULLs of {column}, id {escape(str(cursor.id))}"
    else:
        where = f"cursor at {column} = {escape(str(cursor.value))}, id {escape(str(cursor.id))}"
    return f"order by {escape(str(cp.order_by))}, {where}"


def _print_shard_group(group: ShardGroup, out: Console) -> None:
    pct = f"{group.processed / group.total:.1%}" if group.total else "-"
    kind = " (dry run)" if group.dry_run else ""
    missing = (
        f"; [yellow]no checkpoint yet for shard(s) {', '.join(map(str, group.missing))}[/]"
        if group.missing
        else ""
    )
    target = f" of {escape(redact(group.target))}" if group.target else ""
    failed = "could not be rescored" if group.kind == RESCORE else "failed"
    out.print(
        f"[bold]All {group.count} shards{kind}[/bold]{target}: {group.finished}/{group.count} "
        "finished, "
        f"processed {group.processed:,}/{group.total:,} ({pct}), {failed} {group.failed:,}"
        f"{missing}"
    )


def print_status(report: StatusReport, console: Console | None = None) -> None:
    """Every checkpoint's progress, shard totals, then the table's counts and charts."""
    out = console or _stdout
    if not report.checkpoints:
        out.print("No checkpoint found (no run has started here, or see --checkpoint).")
    for info in report.checkpoints:
        _print_checkpoint(info, out)
    for group in report.shard_groups:
        _print_shard_group(group, out)
    if report.table is not None:
        print_table_stats(report.table, out)
    if report.trend is not None:
        print_trend(report.trend, out)
    if report.last_report is not None:
        last = report.last_report
        built = last.built_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        exists = "" if last.path.exists() else " (the file is gone since)"
        out.print(
            f"Last report: {escape(str(last.path))}{exists}, built {built}, {last.rows:,} results",
            soft_wrap=True,
        )
    if report.table_problem is not None:
        _stderr.print(f"[red]database[/red]: {escape(redact(report.table_problem))}")
    elif report.trend_problem is not None:
        _stderr.print(f"[red]trend[/red]: {escape(redact(report.trend_problem))}")
