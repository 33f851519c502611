"""The quality trend (db/trend.py): per day, week and month, by when each image was scored or by a
date column of the user's table, equal to what the rows written here say. Real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.cli.trend_view import move_sentence, share_widths, sparkline
from backfill_quality.config import Target
from backfill_quality.errors import ConfigError
from backfill_quality.pipeline.trend import TrendReport, TrendRequest, biggest_move
from backfill_quality.results import CHECK_NAMES
from tests.support.cli import CliResult, run_cli
from tests.support.pg import with_database
from tests.support.table import UserTable
from tests.support.trend import (
    ExpectedPeriod,
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
    elsewhere: Target
    elsewhere_rows: list[KnownRow]


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
    elsewhere_rows = rows[::4]
    elsewhere = create_known_table(url, "photos", elsewhere_rows, schema="media")
    with psycopg.connect(url, autocommit=True) as conn:  # one upload date unknown
        conn.execute("UPDATE media.photos SET created_at = NULL WHERE id = %s", (rows[0].key,))
    yield Known(url, target, empty, rows, elsewhere, elsewhere_rows)
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


def test_rows_whose_column_is_null_belong_to_no_period(known: Known) -> None:
    with db.connect(known.database_url) as conn:
        months = db.quality_trend(conn, known.elsewhere, by="created_at", every="month")

    dated = [r for r in known.elsewhere_rows if r.key != known.rows[0].key]
    assert len(dated) == len(known.elsewhere_rows) - 1
    for found, want in pairs(months, expected_trend(dated, "month", "created_at")):
        assert (found.rows, found.categories) == (want.rows, want.categories)
        assert found.mean_score == pytest.approx(want.mean_score)


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


# --- status --trend ----------------------------------------------------------------------------


def status(known: Known, tmp_path: Path, *args: str, table: str = "photos") -> CliResult:
    options = ["--table", table, "--id-column", "id", "--url-column", "url"]
    return run_cli("status", *options, *args, cwd=tmp_path, database_url=known.database_url)


def status_json(known: Known, tmp_path: Path, *args: str, table: str = "photos") -> dict[str, Any]:
    result = status(known, tmp_path, "--json", *args, table=table)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_json_periods(found: list[dict[str, Any]], expected: list[ExpectedPeriod]) -> None:
    assert [p["start"] for p in found] == [
        e.start.isoformat().replace("+00:00", "Z") for e in expected
    ]
    for period, want in zip(found, expected, strict=True):
        assert period["rows"] == want.rows
        assert period["meanScore"] == pytest.approx(want.mean_score, abs=0.005)
        assert period["categories"] == want.categories
        assert period["passRates"] == pytest.approx(want.pass_rates, abs=0.00005)
        assert period["meanWidth"] == pytest.approx(want.mean_width, abs=0.05)


def test_status_trend_draws_the_periods_the_chart_and_names_the_check_that_moved(
    known: Known, tmp_path: Path
) -> None:
    result = status(known, tmp_path, "--trend", "--every", "month")

    assert result.exit_code == 0, result.output
    out = result.stdout
    months = expected_trend(known.rows, "month", None)
    assert "Quality per month, by scored_at (UTC): at most the last 12 months" in out
    assert "█ high  ▒ medium  ░ low" in out
    for month in months:
        line = next(ln for ln in out.splitlines() if f" {month.start:%Y-%m} " in ln)
        assert f" {month.rows} " in line and f" {month.mean_score:.1f} " in line, line
        marks = {c: line.count(m) for c, m in (("high", "█"), ("medium", "▒"), ("low", "░"))}
        assert sum(marks.values()) == 20, line
        for category, count in marks.items():
            assert abs(count - 20 * month.categories[category] / month.rows) <= 1, line
    spark = next(ln for ln in out.splitlines() if ln.startswith("Mean score (0-100"))
    assert spark.split(": ", 1)[1].split()[0].strip("▁▂▃▄▅▆▇█") == ""
    assert len(spark.split(": ", 1)[1].split()[0]) == len(months)
    assert "Pass rate of each check per month" in out
    first, last = months[0].pass_rates["resolution"], months[-1].pass_rates["resolution"]
    assert (
        f"resolution pass rate fell from {first:.0%} to {last:.0%} (month 2026-01"
        f" ({months[0].rows} rows) → 2026-03 ({months[-1].rows} rows)), the most of the five"
        " checks: images got smaller (mean 1600x1067 → "
    ) in out
    assert "Score distribution" in out  # the usual status comes first
    report = status_json(known, tmp_path, "--every", "month")
    assert report["trend"]["biggestMove"]["explanation"].startswith("images got smaller")


def test_status_trend_json_by_a_column_of_the_table_keeps_the_last_periods(
    known: Known, tmp_path: Path
) -> None:
    report = status_json(known, tmp_path, "--by", "created_at", "--periods", "4")

    trend = report["trend"]
    assert (trend["by"], trend["every"], trend["limit"]) == ("created_at", "week", 4)
    weeks = expected_trend(known.rows, "week", "created_at")
    recent = [w for w in weeks if w.start >= weeks[-1].start - timedelta(weeks=3)]
    assert_json_periods(trend["periods"], recent)
    assert report["trendError"] is None and report["table"]["scored"] == len(known.rows)
    first, last = recent[0].pass_rates, recent[-1].pass_rates
    check = max(CHECK_NAMES, key=lambda c: abs(last[c] - first[c]))
    move = trend["biggestMove"]
    assert move["check"] == check and last[check] != first[check]
    assert (move["from"], move["to"]) == pytest.approx((first[check], last[check]), abs=0.00005)


@pytest.mark.parametrize("every", ["day", "week", "month"])
def test_status_trend_json_every_period_of_a_table_in_another_schema(
    known: Known, tmp_path: Path, every: str
) -> None:
    report = status_json(
        known, tmp_path, "--every", every, "--periods", "1000", table="media.photos"
    )

    assert_json_periods(
        report["trend"]["periods"], expected_trend(known.elsewhere_rows, every, None)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "nope"], "--by: column 'nope' does not exist in table 'photos'; use scored_at"),
        (["--by", "title"], "--by: column 'title' of 'photos' has type text"),
        (["--every", "year"], "--every: 'year' is not a period; use one of day, week, month"),
        (["--trend", "--periods", "0"], "--periods"),
    ],
)
def test_status_trend_refuses_a_bad_option_with_exit_2(
    known: Known, tmp_path: Path, args: list[str], message: str
) -> None:
    result = status(known, tmp_path, *args)

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output and "Quality per" not in result.stdout


def test_status_trend_json_tells_a_bad_column_beside_the_counts(
    known: Known, tmp_path: Path
) -> None:
    result = status(known, tmp_path, "--json", "--by", "title")

    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["trend"] is None and "has type text" in report["trendError"]
    assert report["table"]["scored"] == len(known.rows)


def test_status_trend_of_an_empty_results_table(known: Known, tmp_path: Path) -> None:
    text = status(known, tmp_path, "--trend", table='"empty photos"')
    report = status_json(known, tmp_path, "--trend", table='"empty photos"')

    assert text.exit_code == 0, text.output
    assert "Trend: no scored row with a stored result has a scored_at yet" in text.stdout
    assert report["trend"]["periods"] == [] and report["trend"]["biggestMove"] is None


def test_status_trend_without_a_results_table_names_migrate(
    database_url: str, tmp_path: Path
) -> None:
    table = UserTable(database_url, name="shots").create(with_results=False)
    table.insert(["http://h/1.jpg"], score=70)

    result = run_cli(
        "status", "--trend", "--table", "shots", cwd=tmp_path, database_url=database_url
    )

    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "the results table shots_quality_results does not exist" in message
    assert "run `backfill-quality migrate --table shots --id-column id` once" in message
    assert "1 in all, 1 scored" in result.stdout  # the rest of status is still shown


# --- the check that moved, and the charts (pure) -----------------------------------------------


def a_period(day: int, rows: int = 10, brightness: float = 120.0, **rates: float) -> db.TrendPeriod:
    start = datetime(2026, 3, day, tzinfo=UTC)
    return db.TrendPeriod(
        start=start,
        end=start + timedelta(days=1),
        rows=rows,
        mean_score=70.0,
        categories={"high": 3, "medium": 3, "low": 4},
        pass_rates={c: rates.get(c, 1.0) for c in CHECK_NAMES},
        check_scores=dict.fromkeys(CHECK_NAMES, 90.0),
        mean_width=1000.0,
        mean_height=800.0,
        mean_bytes=1e5,
        mean_brightness=brightness,
    )


def test_the_move_names_a_darker_contrast_and_the_checks_tied_with_it() -> None:
    darker = [a_period(1), a_period(2, brightness=30.0, contrast=0.4)]
    tied = [a_period(1), a_period(2, positioning=0.5, contrast=0.5)]
    still = [a_period(1), a_period(2)]

    move = biggest_move(darker)
    assert move is not None and (move.check, move.tied) == ("contrast", ())
    assert move.explanation == "images got darker (mean brightness 120 → 30)"
    tie = biggest_move(tied)
    assert tie is not None and (tie.check, tie.tied) == ("positioning", ("contrast",))
    assert tie.explanation is None
    sentence = move_sentence(tie, TrendReport(TrendRequest(every="day"), tied))
    assert sentence == (
        "positioning pass rate fell from 100% to 50% (day 2026-03-01 (10 rows) → 2026-03-02"
        " (10 rows)), as much as contrast moved"
    )
    assert biggest_move(still) is None and biggest_move(darker[:1]) is None


def test_the_share_bar_always_fills_its_width_and_the_sparkline_is_absolute() -> None:
    assert share_widths({"high": 1, "medium": 1, "low": 1}) == {"high": 7, "medium": 7, "low": 6}
    assert share_widths({"high": 0, "medium": 0, "low": 5}) == {"high": 0, "medium": 0, "low": 20}
    assert sum(share_widths({"high": 7, "medium": 13, "low": 29}).values()) == 20
    assert sparkline([0.0, 49.0, 100.0]) == "▁▄█"
