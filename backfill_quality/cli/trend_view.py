"""`status --trend` in the terminal: quality per period as tables, a chart and one sentence.

Every chart is drawn with characters that differ without colour (█ high, ▒ medium, ░ low; a
sparkline of ▁…█ for the mean score), so it reads the same in a log or with NO_COLOR.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from backfill_quality import db
from backfill_quality.pipeline.trend import CheckMove, TrendReport
from backfill_quality.results import CHECK_NAMES

SHARE_BAR_WIDTH = 20
CATEGORY_MARKS = {"high": "█", "medium": "▒", "low": "░"}
CATEGORY_STYLE = {"high": "green", "medium": "yellow", "low": "red"}
SPARKS = "▁▂▃▄▅▆▇█"
PERIOD_HEADER = {"day": "day", "week": "week of", "month": "month"}


def period_label(period: db.TrendPeriod, every: str) -> str:
    """2026-01-05 for a day or a week (its Monday), 2026-01 for a month."""
    return f"{period.start:%Y-%m}" if every == "month" else f"{period.start:%Y-%m-%d}"


def share_widths(categories: dict[str, int], width: int = SHARE_BAR_WIDTH) -> dict[str, int]:
    """Characters per category in a bar of `width`, proportional to its rows, summing to `width`
    (largest remainders get the characters rounding left over)."""
    total = sum(categories.values())
    if not total:
        return dict.fromkeys(categories, 0)
    exact = {c: width * n / total for c, n in categories.items()}
    widths = {c: int(x) for c, x in exact.items()}
    left = width - sum(widths.values())
    for c in sorted(exact, key=lambda c: widths[c] - exact[c])[:left]:
        widths[c] += 1
    return widths


def share_bar(categories: dict[str, int]) -> str:
    """The category shares as one bar of marks, in rich markup."""
    widths = share_widths(categories)
    return "".join(
        f"[{CATEGORY_STYLE[c]}]{CATEGORY_MARKS[c] * widths[c]}[/]"
        for c in CATEGORY_MARKS
        if widths[c]
    )


def sparkline(values: list[float], top: float = 100.0) -> str:
    """One of ▁…█ per value, on the fixed scale 0-`top` (so two runs compare)."""
    last = len(SPARKS) - 1
    return "".join(SPARKS[max(0, min(last, int(v / top * len(SPARKS))))] for v in values)


def _period_table(report: TrendReport) -> Table:
    every = report.request.every
    legend = "  ".join(f"{mark} {c}" for c, mark in CATEGORY_MARKS.items())
    table = Table(
        title=f"Quality per {every}, by {report.request.by} (UTC): at most the last"
        f" {report.request.periods} {every}s up to the latest with scored rows (--periods)",
        title_justify="left",
    )
    table.add_column(PERIOD_HEADER[every])
    table.add_column("rows", justify="right")
    table.add_column("mean score", justify="right")
    for category in CATEGORY_MARKS:
        table.add_column(category, justify="right")
    table.add_column(legend)
    for p in report.periods:
        shares = p.shares
        table.add_row(
            period_label(p, every),
            f"{p.rows:,}",
            f"{p.mean_score:.1f}",
            *(f"{shares[c]:.0%}" for c in CATEGORY_MARKS),
            share_bar(p.categories),
        )
    return table


def _pass_rate_table(report: TrendReport) -> Table:
    every = report.request.every
    table = Table(title=f"Pass rate of each check per {every}", title_justify="left")
    table.add_column(PERIOD_HEADER[every])
    for check in CHECK_NAMES:
        table.add_column(check, justify="right")
    for p in report.periods:
        table.add_row(period_label(p, every), *(f"{p.pass_rates[c]:.0%}" for c in CHECK_NAMES))
    if len(report.periods) >= 2:
        first, last = report.periods[0], report.periods[-1]
        changes = [
            round(100 * last.pass_rates[c]) - round(100 * first.pass_rates[c]) for c in CHECK_NAMES
        ]
        table.add_section()
        table.add_row("change", *(f"{n:+d} pts" if n else "0 pts" for n in changes))
    return table


def move_sentence(move: CheckMove | None, report: TrendReport) -> str:
    """'resolution pass rate fell from 92% to 61% (week of … → week of …): images got smaller'."""
    if len(report.periods) < 2:
        return "One period only: nothing to compare yet (a longer --every or more scored rows)."
    if move is None:
        return "No check's pass rate moved between the first and the last period."
    every = report.request.every
    verb = "fell" if move.change < 0 else "rose"
    first, last = report.periods[0], report.periods[-1]
    span = (
        f"{PERIOD_HEADER[every]} {period_label(first, every)} ({first.rows:,} rows) →"
        f" {period_label(last, every)} ({last.rows:,} rows)"
    )
    most = (
        f"as much as {', '.join(move.tied)} moved" if move.tied else "the most of the five checks"
    )
    why = f": {move.explanation}" if move.explanation else ""
    return (
        f"{move.check} pass rate {verb} from {move.first:.0%} to {move.last:.0%}"
        f" ({span}), {most}{why}"
    )


def print_trend(report: TrendReport, console: Console) -> None:
    """The per-period table with its share chart, the mean score sparkline, the pass rates, and
    the check that moved most."""
    if not report.periods:
        by = report.request.by
        console.print(
            f"[bold]Trend[/bold]: no scored row with a stored result has a {by} yet; nothing to"
            " show"
        )
        return
    console.print(_period_table(report))
    means = [p.mean_score for p in report.periods]
    console.print(
        f"[bold]Mean score[/bold] (0-100, one mark per {report.request.every}): "
        f"{sparkline(means)}  {means[0]:.1f} → {means[-1]:.1f}"
    )
    console.print(_pass_rate_table(report))
    console.print(move_sentence(report.biggest_move, report))
