"""The review report's SQL: the results table's figures and galleries, aggregated in PostgreSQL.

Every figure is one aggregate over `<table>_quality_results` (a scan of 100 000 rows takes tens of
milliseconds); galleries are bounded by `LIMIT n`, so what Python receives never grows with the
table. Samples use `ORDER BY random() LIMIT n`: PostgreSQL keeps only the n smallest keys while
it scans (a top-N heap sort, memory bounded by n), the sample is uniform over the rows that
qualify, and a small table still gives n rows. `TABLESAMPLE SYSTEM` would read fewer pages but
picks whole pages (rows scored together, from one run, side by side) and may return nothing on a
small table or a rare category; `BERNOULLI` still reads every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _raw, _translated
from backfill_quality.db.results import KEY_COLUMN, _results, check_column, results_label
from backfill_quality.results import CHECK_NAMES

CATEGORIES = ("high", "medium", "low")


@dataclass(frozen=True, slots=True)
class ResultFigures:
    """The results table in numbers: rows, categories, deciles, pass rates, detectors, timing."""

    rows: int
    categories: dict[str, int]
    histogram: list[int]
    """Rows per score decile: 0-9, 10-19, … 90-100."""
    passed: dict[str, int]
    """Rows that passed each check, by check name (birdSize, …)."""
    detectors: dict[str, int]
    mean_score: float | None
    first_scored_at: datetime | None
    last_scored_at: datetime | None
    mean_fetch_ms: float | None
    mean_score_ms: float | None


@dataclass(frozen=True, slots=True)
class GalleryRow:
    """One image of a gallery, as stored: what the card shows and where the box goes."""

    image_id: str
    source: str
    score: int
    category: str
    detector: str
    width: int
    height: int
    subject: dict[str, Any] | None
    checks: dict[str, Any]


def result_figures(conn: psycopg.Connection[Any], target: Target) -> ResultFigures:
    """Counts, categories, deciles, per-check passes, detectors and timing: three statements."""
    results = _results(target)
    passed = [
        sql.SQL("count(*) FILTER (WHERE {})").format(sql.Identifier(check_column(c, "passed")))
        for c in CHECK_NAMES
    ]
    categories = [
        sql.SQL("count(*) FILTER (WHERE category = {})").format(sql.Literal(c)) for c in CATEGORIES
    ]
    totals = sql.SQL(
        "SELECT count(*), avg(score)::float8, min(scored_at), max(scored_at), avg(fetch_ms),"
        " avg(score_ms), {categories}, {passed} FROM {results}"
    ).format(
        categories=sql.SQL(", ").join(categories),
        passed=sql.SQL(", ").join(passed),
        results=results,
    )
    deciles = sql.SQL(
        "SELECT greatest(0, least(score / 10, 9)) AS decile, count(*) FROM {} GROUP BY decile"
    ).format(results)
    detectors = sql.SQL("SELECT detector, count(*) FROM {} GROUP BY detector ORDER BY 2 DESC")
    with _translated(f"reading the figures of {results_label(target)}"):
        row = _raw(conn, totals, []).fetchone()
        decile_rows = _raw(conn, deciles, []).fetchall()
        detector_rows = _raw(conn, detectors.format(results), []).fetchall()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    rows, mean, first, last, fetch_ms, score_ms, *counts = row
    histogram = [0] * 10
    for decile, count in decile_rows:
        histogram[int(decile)] = int(count)
    return ResultFigures(
        rows=int(rows),
        categories=dict(zip(CATEGORIES, map(int, counts[: len(CATEGORIES)]), strict=True)),
        histogram=histogram,
        passed=dict(zip(CHECK_NAMES, map(int, counts[len(CATEGORIES) :]), strict=True)),
        detectors={str(name): int(count) for name, count in detector_rows},
        mean_score=mean,
        first_scored_at=first,
        last_scored_at=last,
        mean_fetch_ms=fetch_ms,
        mean_score_ms=score_ms,
    )


_GALLERY_COLUMNS = sql.SQL(
    "{key}::text, source, score, category, detector, width, height, subject, checks"
).format(key=sql.Identifier(KEY_COLUMN))


def _gallery(
    conn: psycopg.Connection[Any],
    target: Target,
    where: sql.Composable,
    order: sql.Composable,
    limit: int,
    what: str,
) -> list[GalleryRow]:
    query = sql.SQL("SELECT {columns} FROM {results} WHERE {where} ORDER BY {order} LIMIT {n}")
    statement = query.format(
        columns=_GALLERY_COLUMNS,
        results=_results(target),
        where=where,
        order=order,
        n=sql.Literal(int(limit)),
    )
    with _translated(f"reading {what} from {results_label(target)}"):
        rows = _raw(conn, statement, []).fetchall()
    return [GalleryRow(*row) for row in rows]


def lowest_scored(conn: psycopg.Connection[Any], target: Target, limit: int) -> list[GalleryRow]:
    """The `limit` lowest-scoring images (ties by key: the same rows every time)."""
    order = sql.SQL("score, {}").format(sql.Identifier(KEY_COLUMN))
    return _gallery(conn, target, sql.SQL("true"), order, limit, "the lowest scores")


def category_sample(
    conn: psycopg.Connection[Any], target: Target, category: str, limit: int
) -> list[GalleryRow]:
    """A uniform random sample of `limit` images of one category."""
    where = sql.SQL("category = {}").format(sql.Literal(category))
    return _gallery(conn, target, where, sql.SQL("random()"), limit, f"a sample of {category}")


def failed_check_sample(
    conn: psycopg.Connection[Any], target: Target, check: str, limit: int
) -> list[GalleryRow]:
    """A uniform random sample of `limit` images that failed `check` (birdSize, …)."""
    where = sql.SQL("NOT {}").format(sql.Identifier(check_column(check, "passed")))
    return _gallery(conn, target, where, sql.SQL("random()"), limit, f"a sample failing {check}")
