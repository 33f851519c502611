"""The quality trend (db/trend.py): per day, week and month, by when each image was scored or by a
date column of the user's table, equal to what the rows written here say. Real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.errors import ConfigError
from backfill_quality.results import CHECK_NAMES
from tests.support.pg import with_database
from tests.support.trend import (
    KnownRow,
    create_known_table,
    expected_trend,
    known_rows,
    pairs,
    period_start,
)


@dataclass(frozen=True, slots=True)
class Known:
    database_url: str
    target: Target
    empty: Target
    rows: list[KnownRow]


@pytest.fixture(scope="module")
def known(pg_admin_url: str) -> Iterator[Known]:
    """One database for the module (read only): a table of known scored rows, and an empty one.
    Its time zone is New Zealand's, so a period taken in the session's zone would differ."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Auckland'")
    url = with_database(pg_admin_url, name)
    rows = known_rows()
    target = create_known_table(url, "photos", rows)
    empty = create_known_table(url, "empty photos", [])
    yield Known(url, target, empty, rows)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def trend(known: Known, **options: object) -> list[db.TrendPeriod]:
    with db.connect(known.database_url) as conn:
        return db.quality_trend(conn, known.target, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("by", [None, "created_at", "taken_on"])
@pytest.mark.parametrize("every", ["day", "week", "month"])
def test_each_period_holds_what_its_rows_say(known: Known, every: str, by: str | None) -> None:
    periods = trend(known, by=by, every=every)

    expected = expected_trend(known.rows, every, by)
    assert sum(p.rows for p in periods) == len(known.rows)
    for found, want in pairs(periods, expected):
        context = f"{every} by {by} from {want.start:%Y-%m-%d}"
        assert found.start.tzinfo is not None and found.start.utcoffset().total_seconds() == 0
        assert found.rows == want.rows, context
        assert found.mean_score == pytest.approx(want.mean_score), context
        assert found.categories == want.categories, context
        assert sum(found.shares.values()) == pytest.approx(1.0), context
        assert found.pass_rates == pytest.approx(want.pass_rates), context
        assert found.check_scores == pytest.approx(want.check_scores), context
        assert found.mean_width == pytest.approx(want.mean_width), context
        assert found.mean_height == pytest.approx(want.mean_height), context
        assert found.mean_bytes == pytest.approx(want.mean_bytes), context
        assert found.mean_brightness == pytest.approx(want.mean_brightness), context
        assert period_start(found.end, every) == found.end > found.start, context


def test_periods_are_utc_calendar_periods_whatever_the_session_time_zone(known: Known) -> None:
    sunday_night = datetime(2026, 2, 1, 23, 30, tzinfo=UTC)  # Monday 12:30 in Auckland
    weeks = {p.start: p for p in trend(known, every="week")}
    months = {p.start: p for p in trend(known, every="month")}

    assert datetime(2026, 1, 26, tzinfo=UTC) in weeks  # the Monday before, in UTC
    assert weeks[datetime(2026, 1, 26, tzinfo=UTC)].end == datetime(2026, 2, 2, tzinfo=UTC)
    assert months[datetime(2026, 2, 1, tzinfo=UTC)].end == datetime(2026, 3, 1, tzinfo=UTC)
    in_january_week = [
        r for r in known.rows if datetime(2026, 1, 26, tzinfo=UTC) <= r.scored_at < sunday_night
    ]
    assert weeks[datetime(2026, 1, 26, tzinfo=UTC)].rows == len(in_january_week) + 1


def test_the_last_n_periods_count_back_from_the_latest_period_with_rows(known: Known) -> None:
    every_week = trend(known, every="week")
    last_three = trend(known, every="week", periods=3)

    assert last_three == every_week[-3:]
    assert trend(known, every="month", periods=1) == trend(known, every="month")[-1:]
    assert trend(known, every="month", periods=100) == trend(known, every="month")


def test_the_resolution_pass_rate_falls_as_uploads_get_smaller(known: Known) -> None:
    months = trend(known, every="month")

    assert months[0].pass_rates["resolution"] == 1.0
    assert months[-1].pass_rates["resolution"] < 0.5
    assert months[-1].mean_width < months[0].mean_width
    assert set(months[0].pass_rates) == set(CHECK_NAMES) == set(months[0].check_scores)


def test_an_empty_results_table_has_no_periods(known: Known) -> None:
    with db.connect(known.database_url) as conn:
        assert db.quality_trend(conn, known.empty) == []
        assert db.quality_trend(conn, known.empty, by="created_at", periods=3) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"by": "nope"}, "--by: column 'nope' does not exist in table 'photos'"),
        ({"by": "title"}, "--by: column 'title' of 'photos' has type text"),
        ({"every": "year"}, "--every: 'year' is not a period; use one of day, week, month"),
        ({"periods": 0}, "--periods: 0 is not a number of periods"),
    ],
)
def test_a_bad_option_is_refused_with_what_to_use(
    known: Known, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        trend(known, **options)

    assert message in str(raised.value)
    if "nope" in message:
        assert "created_at, taken_on" in str(raised.value)
