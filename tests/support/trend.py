"""Scored rows with known scores, check outcomes and times, written straight into a user's table
and its results table, and the trend those rows should give, computed here in Python."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import fmean
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.results import CHECK_NAMES

FIRST_SCORED_AT = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # a Monday
STEP = timedelta(hours=41)
"""41 hours apart: the rows land at every hour of the day, so day, week and month borders (in
UTC, and differently in the session's time zone) fall between them."""


@dataclass(frozen=True, slots=True)
class KnownRow:
    """One scored image as the tests wrote it."""

    key: int
    scored_at: datetime
    created_at: datetime
    taken_on: date
    score: int
    passed: dict[str, bool]
    check_scores: dict[str, int]
    width: int
    height: int
    size_bytes: int
    brightness: float

    @property
    def category(self) -> str:
        return "high" if self.score >= 80 else "medium" if self.score >= 60 else "low"


def known_rows(count: int = 48) -> list[KnownRow]:
    """Rows over about three months whose resolution pass rate falls (uploads get smaller) and
    whose other checks fail now and then; plus one row on a Sunday 23:30 UTC (Monday in
    New Zealand) and one at 00:00 UTC on the first of a month."""
    rows = [_row(i, FIRST_SCORED_AT + i * STEP) for i in range(count)]
    rows.append(_row(count, datetime(2026, 2, 1, 23, 30, tzinfo=UTC)))
    rows.append(_row(count + 1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC)))
    return rows


def _row(i: int, scored_at: datetime) -> KnownRow:
    small = i >= 16 and i % 3 != 0  # later uploads: mostly small
    passed = {
        "birdSize": i % 7 != 3,
        "positioning": i % 5 != 1,
        "resolution": not small,
        "contrast": i % 4 != 2,
        "primarySubject": i % 9 != 4,
    }
    scores = {check: 100 if ok else 20 + (i * 13) % 50 for check, ok in passed.items()}
    created_at = scored_at - timedelta(days=30 + i % 3, hours=i % 11)
    return KnownRow(
        key=i + 1,
        scored_at=scored_at,
        created_at=created_at,
        taken_on=(created_at - timedelta(days=1)).date(),
        score=(i * 37 + 11) % 101,
        passed=passed,
        check_scores=scores,
        width=480 if small else 1600,
        height=320 if small else 1067,
        size_bytes=40_000 + 1_000 * i,
        brightness=60.0 + i,
    )


def create_known_table(
    database_url: str, name: str, rows: Sequence[KnownRow], *, schema: str | None = None
) -> Target:
    """A user's table (integer key, created_at timestamptz, taken_on date, title text) with its
    results table (created by `migrate`'s step), holding `rows`."""
    target = Target(table=name, schema=schema, id_column="id", url_column="url")
    table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        if schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, url text NOT NULL, title text,"
                " created_at timestamptz, taken_on date, quality_score integer)"
            ).format(table)
        )
    with db.connect(database_url) as conn:
        db.migrate(conn, target, only={"results-table"})
    insert_known_rows(database_url, target, rows)
    return target


def insert_known_rows(database_url: str, target: Target, rows: Sequence[KnownRow]) -> None:
    table = (
        sql.Identifier(target.schema, target.table)
        if target.schema
        else sql.Identifier(target.table)
    )
    results_name = db.results_table_name(target)
    results = (
        sql.Identifier(target.schema, results_name)
        if target.schema
        else sql.Identifier(results_name)
    )
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        for row in rows:
            url = f"http://h/{row.key}.jpg"
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, url, title, created_at, taken_on, quality_score)"
                    " VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(table),
                (row.key, url, f"photo {row.key}", row.created_at, row.taken_on, row.score),
            )
            checks = {
                c: {"score": row.check_scores[c], "passed": row.passed[c], "reason": "test"}
                for c in CHECK_NAMES
            }
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (image_id, source, width, height, score, category, brightness,"
                    " detector, checks, bytes, content_sha256, scorer_version, scored_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, 'learned', %s, %s, %s, 'test-1', %s)"
                ).format(results),
                (
                    row.key,
                    url,
                    row.width,
                    row.height,
                    row.score,
                    row.category,
                    row.brightness,
                    Jsonb(checks),
                    row.size_bytes,
                    hashlib.sha256(url.encode()).hexdigest(),
                    row.scored_at,
                ),
            )


def period_start(moment: datetime, every: str) -> datetime:
    """The UTC calendar period (day, ISO week from Monday, month) that `moment` falls in."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if every == "day":
        return day
    if every == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def moment_of(row: KnownRow, by: str | None) -> datetime:
    if by == "created_at":
        return row.created_at
    if by == "taken_on":
        return datetime(row.taken_on.year, row.taken_on.month, row.taken_on.day, tzinfo=UTC)
    return row.scored_at


@dataclass(frozen=True, slots=True)
class ExpectedPeriod:
    start: datetime
    rows: int
    mean_score: float
    categories: dict[str, int]
    pass_rates: dict[str, float]
    check_scores: dict[str, float]
    mean_width: float
    mean_height: float
    mean_bytes: float
    mean_brightness: float


def expected_trend(rows: Sequence[KnownRow], every: str, by: str | None) -> list[ExpectedPeriod]:
    """What the trend of `rows` is, computed row by row in Python."""
    groups: dict[datetime, list[KnownRow]] = {}
    for row in rows:
        groups.setdefault(period_start(moment_of(row, by), every), []).append(row)
    return [_expected(start, members) for start, members in sorted(groups.items())]


def _expected(start: datetime, members: list[KnownRow]) -> ExpectedPeriod:
    return ExpectedPeriod(
        start=start,
        rows=len(members),
        mean_score=fmean(r.score for r in members),
        categories={c: sum(r.category == c for r in members) for c in ("high", "medium", "low")},
        pass_rates={c: fmean(r.passed[c] for r in members) for c in CHECK_NAMES},
        check_scores={c: fmean(r.check_scores[c] for r in members) for c in CHECK_NAMES},
        mean_width=fmean(r.width for r in members),
        mean_height=fmean(r.height for r in members),
        mean_bytes=fmean(r.size_bytes for r in members),
        mean_brightness=fmean(r.brightness for r in members),
    )


def pairs(found: Sequence[Any], expected: Sequence[ExpectedPeriod]) -> Iterator[tuple[Any, Any]]:
    assert [p.start for p in found] == [e.start for e in expected]
    yield from zip(found, expected, strict=True)
