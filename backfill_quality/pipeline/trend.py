"""What `status --trend` reports: quality per period, and the check whose pass rate moved most.

The figures come from `db.quality_trend` (one query over the results table). This module adds
what a reader needs to see *why* quality changed: the check whose pass rate moved the most
between the first and the last period shown, with the measurement that explains it where one
does (resolution: the images' size; contrast: their brightness).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backfill_quality import db
from backfill_quality.config import (
    DEFAULT_TREND_EVERY,
    DEFAULT_TREND_PERIODS,
    TREND_BY_SCORED_AT,
    Target,
)
from backfill_quality.errors import ConfigError
from backfill_quality.results import CHECK_NAMES

MIN_BRIGHTNESS_MOVE = 5.0
"""A mean brightness change (0-255) smaller than this explains nothing."""


@dataclass(frozen=True, slots=True)
class TrendRequest:
    """`status --trend [--by COLUMN] [--every day|week|month] [--periods N]`."""

    by: str = TREND_BY_SCORED_AT
    every: str = DEFAULT_TREND_EVERY
    periods: int = DEFAULT_TREND_PERIODS

    def check(self) -> None:
        """ConfigError for an --every or --periods that cannot be used (before connecting)."""
        db.check_every(self.every)
        if self.periods < 1:
            raise ConfigError(
                f"--periods: {self.periods} is not a number of periods; use 1 or more"
            )


@dataclass(frozen=True, slots=True)
class CheckMove:
    """How one check's pass rate moved from the first period shown to the last."""

    check: str
    first: float
    last: float
    first_start: datetime
    last_start: datetime
    explanation: str | None
    tied: tuple[str, ...] = ()
    """Other checks whose pass rate moved by as much (to 0.01 %)."""

    @property
    def change(self) -> float:
        return self.last - self.first


@dataclass(frozen=True, slots=True)
class TrendReport:
    request: TrendRequest
    periods: list[db.TrendPeriod]

    @property
    def biggest_move(self) -> CheckMove | None:
        return biggest_move(self.periods)


def biggest_move(periods: list[db.TrendPeriod]) -> CheckMove | None:
    """The check whose pass rate changed most between the first and last period (the first of
    `CHECK_NAMES` on a tie); None with fewer than two periods or when no rate changed."""
    if len(periods) < 2:
        return None
    first, last = periods[0], periods[-1]
    moved = {c: round(abs(last.pass_rates[c] - first.pass_rates[c]), 4) for c in CHECK_NAMES}
    check = max(CHECK_NAMES, key=lambda c: moved[c])
    change = last.pass_rates[check] - first.pass_rates[check]
    if moved[check] == 0:
        return None
    return CheckMove(
        check=check,
        first=first.pass_rates[check],
        last=last.pass_rates[check],
        first_start=first.start,
        last_start=last.start,
        explanation=explain_move(check, change, first, last),
        tied=tuple(c for c in CHECK_NAMES if c != check and moved[c] == moved[check]),
    )


def explain_move(
    check: str, change: float, first: db.TrendPeriod, last: db.TrendPeriod
) -> str | None:
    """The measurement that moved with the check, when it accounts for the change."""
    if check == "resolution":
        before = first.mean_width * first.mean_height
        after = last.mean_width * last.mean_height
        sizes = (
            f"mean {first.mean_width:.0f}x{first.mean_height:.0f} →"
            f" {last.mean_width:.0f}x{last.mean_height:.0f} px"
        )
        if change < 0 and after < before:
            return f"images got smaller ({sizes})"
        if change > 0 and after > before:
            return f"images got larger ({sizes})"
    if check == "contrast":
        moved = last.mean_brightness - first.mean_brightness
        if abs(moved) >= MIN_BRIGHTNESS_MOVE:
            word = "darker" if moved < 0 else "brighter"
            return (
                f"images got {word} (mean brightness {first.mean_brightness:.0f} →"
                f" {last.mean_brightness:.0f})"
            )
    return None


def trend_report(database_url: str, target: Target, request: TrendRequest) -> TrendReport:
    """The last `request.periods` periods from the results table (ConfigError without one)."""
    request.check()
    with db.connect(database_url) as conn:
        db.check_target(conn, target)
        if not db.has_results_table(conn, target):
            raise ConfigError(
                f"--trend: the results table {db.results_label(target)} does not exist, so no"
                " score has a stored time or checks to trend: run `backfill-quality migrate"
                f" --table {target.label} --id-column {target.id_column}` once to create it;"
                " every row scored from then on is trended"
            )
        periods = db.quality_trend(
            conn, target, by=request.by, every=request.every, periods=request.periods
        )
    return TrendReport(request, periods)


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def trend_to_dict(report: TrendReport) -> dict[str, Any]:
    """The `trend` object of `status --json`."""
    move = report.biggest_move
    return {
        "by": report.request.by,
        "every": report.request.every,
        "limit": report.request.periods,
        "periods": [
            {
                "start": _instant(p.start),
                "end": _instant(p.end),
                "rows": p.rows,
                "meanScore": round(p.mean_score, 2),
                "categories": p.categories,
                "shares": {c: round(s, 4) for c, s in p.shares.items()},
                "passRates": {c: round(r, 4) for c, r in p.pass_rates.items()},
                "checkScores": {c: round(s, 2) for c, s in p.check_scores.items()},
                "meanWidth": round(p.mean_width, 1),
                "meanHeight": round(p.mean_height, 1),
                "meanBytes": round(p.mean_bytes),
                "meanBrightness": round(p.mean_brightness, 2),
            }
            for p in report.periods
        ],
        "biggestMove": None
        if move is None
        else {
            "check": move.check,
            "from": round(move.first, 4),
            "to": round(move.last, 4),
            "change": round(move.change, 4),
            "firstPeriod": _instant(move.first_start),
            "lastPeriod": _instant(move.last_start),
            "explanation": move.explanation,
            "tiedWith": list(move.tied),
        },
    }
