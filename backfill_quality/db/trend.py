"""Quality per period: the results table grouped by day, week or month, in one SQL query.

`quality_trend` groups `<table>_quality_results` by `date_trunc(every, at, 'UTC')`, where `at`
is the result's `scored_at` (the default) or a date/timestamp column of the user's table (`by`),
joined on the key. Everything is aggregated in that one statement: rows, mean score, rows per
category, each check's pass rate and mean score, mean width, height, bytes and brightness.

Periods are calendar periods in UTC: a day from midnight, a week from Monday (ISO weeks), a month
from its first day. A `timestamp` or `date` column (no time zone) is read as UTC. A period with no
rows is left out (there is no mean to report); every period carries its start and end, so a gap
shows as a jump in dates. Rows whose `by` column is NULL belong to no period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args

import psycopg
from psycopg import sql

from backfill_quality.config import TREND_BY_SCORED_AT, Target
from backfill_quality.db.connection import _raw, _translated
from backfill_quality.db.results import KEY_COLUMN, _results, check_column, results_label
from backfill_quality.db.schema import _columns, _find_table, _table
from backfill_quality.errors import ConfigError
from backfill_quality.results import CHECK_NAMES

Every = Literal["day", "week", "month"]
EVERY_CHOICES: tuple[str, ...] = get_args(Every)
SCORED_AT = TREND_BY_SCORED_AT
"""`by` naming the results table's own time (the default), not a column of the user's table."""
DATE_TYPES = frozenset({"date", "timestamp without time zone", "timestamp with time zone"})
CATEGORIES = ("high", "medium", "low")
MEASUREMENTS = ("width", "height", "bytes", "brightness")


@dataclass(frozen=True, slots=True)
class TrendPeriod:
    """The scored images of one period (by `scored_at`, or by the user's date column)."""

    start: datetime
    """The period's first instant, UTC."""
    end: datetime
    """The next period's start (exclusive), UTC."""
    rows: int
    mean_score: float
    categories: dict[str, int]
    """Rows per category: high, medium, low (every key present)."""
    pass_rates: dict[str, float]
    """Share of rows (0-1) that passed each check, by the names of `results.CHECK_NAMES`."""
    check_scores: dict[str, float]
    """Each check's mean score (0-100), by the names of `results.CHECK_NAMES`."""
    mean_width: float
    mean_height: float
    mean_bytes: float
    mean_brightness: float

    @property
    def shares(self) -> dict[str, float]:
        """Share of rows (0-1) per category."""
        return {c: n / self.rows if self.rows else 0.0 for c, n in self.categories.items()}


def check_every(every: str) -> Every:
    """`every` if it is day, week or month; else a ConfigError naming the choices."""
    if every not in EVERY_CHOICES:
        raise ConfigError(
            f"--every: {every!r} is not a period; use one of {', '.join(EVERY_CHOICES)}"
        )
    return cast(Every, every)


def date_column_type(conn: psycopg.Connection[Any], target: Target, by: str) -> str:
    """The type of the user's column `by`, checked to be a date or timestamp (ConfigError)."""
    with _translated(f"checking the column {by!r} of {target.label!r}"):
        columns = _columns(conn, _find_table(conn, target))
    if by not in columns:
        dated = [name for name, (_, kind) in columns.items() if kind in DATE_TYPES]
        raise ConfigError(
            f"--by: column {by!r} does not exist in table {target.label!r}; use {SCORED_AT}"
            f" (when each image was scored) or one of its date/timestamp columns:"
            f" {', '.join(dated) or 'none'}"
        )
    kind = columns[by][1]
    if kind not in DATE_TYPES:
        raise ConfigError(
            f"--by: column {by!r} of {target.label!r} has type {kind}; it must be a date or"
            f" timestamp column (or {SCORED_AT}, when each image was scored)"
        )
    return kind


def _instant(conn: psycopg.Connection[Any], target: Target, by: str | None) -> sql.Composable:
    """The SQL expression of each result's moment, as timestamptz."""
    if by is None or by == SCORED_AT:
        return sql.SQL("r.{}").format(sql.Identifier(SCORED_AT))
    column = sql.SQL("t.{}").format(sql.Identifier(by))
    if date_column_type(conn, target, by) == "timestamp with time zone":
        return column
    return sql.SQL("({}::timestamp AT TIME ZONE 'UTC')").format(column)


def trend_query(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    by: str | None = None,
    every: str = "week",
    periods: int | None = None,
) -> tuple[sql.Composed, list[Any]]:
    """The one statement of `quality_trend` and its parameters ($1 the period; with `periods`,
    $2 its interval and $3 how many), checked (ConfigError for a bad `by`, `every` or `periods`)."""
    unit = check_every(every)
    if periods is not None and periods < 1:
        raise ConfigError(f"--periods: {periods} is not a number of periods; use 1 or more")
    at = _instant(conn, target, by)
    source = sql.SQL("{} r").format(_results(target))
    if by is not None and by != SCORED_AT:
        source = sql.SQL("{} JOIN {} t ON t.{} = r.{}").format(
            source, _table(target), sql.Identifier(target.id_column), sql.Identifier(KEY_COLUMN)
        )
    figures: list[sql.Composable] = [
        sql.SQL("count(*) FILTER (WHERE r.category = {})").format(sql.Literal(c))
        for c in CATEGORIES
    ]
    for part, expression in (("passed", "avg(r.{}::int)::float8"), ("score", "avg(r.{})::float8")):
        figures += [
            sql.SQL(expression).format(sql.Identifier(check_column(check, part)))  # type: ignore[arg-type]
            for check in CHECK_NAMES
        ]
    figures += [sql.SQL("avg(r.{})::float8").format(sql.Identifier(m)) for m in MEASUREMENTS]
    window: sql.Composable = sql.SQL("")
    if periods is not None:  # the last `periods` calendar periods up to the latest with rows
        window = sql.SQL(
            " AND {at} >= (SELECT date_trunc($1::text, max({at}), 'UTC')"
            " - ($3::int - 1) * $2::interval FROM {source})"
        ).format(at=at, source=source)
    query = sql.SQL(
        "SELECT date_trunc($1::text, {at}, 'UTC') AS start, count(*), avg(r.score)::float8,"
        " {figures} FROM {source} WHERE {at} IS NOT NULL{window} GROUP BY 1 ORDER BY 1"
    ).format(at=at, figures=sql.SQL(", ").join(figures), source=source, window=window)
    params: list[Any] = [unit]
    if periods is not None:
        params += [f"1 {unit}", periods]
    return query, params


def quality_trend(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    by: str | None = None,
    every: str = "week",
    periods: int | None = None,
) -> list[TrendPeriod]:
    """Quality per period, oldest first (periods without rows left out).

    `by`: None or "scored_at" groups by when each image was scored; else a date/timestamp column
    of the user's table. `every`: day, week or month. `periods`: only the last N calendar periods,
    counted back from the latest one that has rows. The results table must exist
    (`require_results_table`).
    """
    query, params = trend_query(conn, target, by=by, every=every, periods=periods)
    unit = check_every(every)
    with _translated(f"reading the quality trend from {results_label(target)}"):
        rows = _raw(conn, query, params).fetchall()
    return [_period(row, unit) for row in rows]


def period_end(start: datetime, every: Every) -> datetime:
    """The start of the period after the one starting at `start` (UTC)."""
    if every == "day":
        return start + timedelta(days=1)
    if every == "week":
        return start + timedelta(weeks=1)
    year, month = divmod(start.month, 12)
    return start.replace(year=start.year + year, month=month + 1)


def _period(row: tuple[Any, ...], every: Every) -> TrendPeriod:
    moment, rows, mean_score, *rest = row
    n = len(CHECK_NAMES)
    categories, rest = rest[: len(CATEGORIES)], rest[len(CATEGORIES) :]
    passed, scores, measured = rest[:n], rest[n : 2 * n], rest[2 * n :]
    width, height, size, brightness = (float(m) for m in measured)
    start = moment.astimezone(UTC)
    return TrendPeriod(
        start=start,
        end=period_end(start, every),
        rows=int(rows),
        mean_score=float(mean_score),
        categories={c: int(k) for c, k in zip(CATEGORIES, categories, strict=True)},
        pass_rates={c: float(p) for c, p in zip(CHECK_NAMES, passed, strict=True)},
        check_scores={c: float(s) for c, s in zip(CHECK_NAMES, scores, strict=True)},
        mean_width=width,
        mean_height=height,
        mean_bytes=size,
        mean_brightness=brightness,
    )
