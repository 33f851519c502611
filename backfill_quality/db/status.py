"""Monitoring SQL for `status`: score categories, histograms, exact counts and estimates."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _raw, _translate, _translated
from backfill_quality.db.pages import estimate_unscored
from backfill_quality.db.results import KEY_COLUMN, _results, results_label
from backfill_quality.db.schema import _table, _table_label

ScoreBuckets = tuple[int, list[int]]  # (unscored rows, scored rows per decile 0-9 … 90-100)


def score_distribution(conn: psycopg.Connection[Any], target: Target) -> dict[str, int]:
    """Rows per category (the original's monitoring SQL): high, medium, low, unscored."""
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE {s} >= 80), count(*) FILTER (WHERE {s} >= 60 AND {s} < 80),"
        " count(*) FILTER (WHERE {s} < 60), count(*) FILTER (WHERE {s} IS NULL) FROM {table}"
    ).format(s=sql.Identifier(target.score_column), table=_table(target))
    with _translated(f"reading the score distribution of {_table_label(target)!r}"):
        row = conn.execute(query).fetchone()
    high, medium, low, unscored = (int(n) for n in row) if row else (0, 0, 0, 0)
    return {"high": high, "medium": medium, "low": low, "unscored": unscored}


def score_histogram(conn: psycopg.Connection[Any], target: Target) -> list[int]:
    """Scored rows in 10 buckets: 0-9, 10-19, …, 80-89, 90-100."""
    query = sql.SQL(
        "SELECT least({s} / 10, 9) AS bucket, count(*) FROM {table}"
        " WHERE {s} IS NOT NULL GROUP BY bucket"
    ).format(s=sql.Identifier(target.score_column), table=_table(target))
    with _translated(f"reading the score histogram of {_table_label(target)!r}"):
        rows = conn.execute(query).fetchall()
    buckets = [0] * 10
    for bucket, count in rows:
        buckets[max(0, min(9, int(bucket)))] += int(count)
    return buckets


def count_score_buckets(
    conn: psycopg.Connection[Any], target: Target, *, timeout_ms: int | None = None
) -> ScoreBuckets | None:
    """Exact unscored count and decile histogram in one scan; None if `timeout_ms` ran out."""
    query = sql.SQL(
        "SELECT CASE WHEN {s} IS NULL THEN -1 ELSE greatest(0, least({s} / 10, 9)) END AS bucket,"
        " count(*) FROM {table} GROUP BY bucket"
    ).format(s=sql.Identifier(target.score_column), table=_table(target))
    try:
        with conn.transaction():
            if timeout_ms is not None:
                conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            rows = conn.execute(query).fetchall()
    except psycopg.errors.QueryCanceled:
        return None
    except psycopg.Error as exc:
        raise _translate(exc, f"counting the scores of {_table_label(target)!r}") from exc
    buckets = [0] * 10
    unscored = 0
    for bucket, count in rows:
        if int(bucket) < 0:
            unscored = int(count)
        else:
            buckets[int(bucket)] += int(count)
    return unscored, buckets


def _estimate_rows(conn: psycopg.Connection[Any], query: sql.Composed, params: list[Any]) -> int:
    row = _raw(conn, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params).fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def estimate_score_buckets(conn: psycopg.Connection[Any], target: Target) -> ScoreBuckets:
    """The planner's estimates (column statistics, instant on any size) of the same figures."""
    score, table = sql.Identifier(target.score_column), _table(target)
    with _translated(f"estimating the scores of {_table_label(target)!r}"):
        unscored = estimate_unscored(conn, target)
        buckets = []
        for decile in range(10):
            upper = sql.SQL("") if decile == 9 else sql.SQL(" AND {} < $2").format(score)
            query = sql.SQL("SELECT 1 FROM {} WHERE {} >= $1{}").format(table, score, upper)
            params = [decile * 10] if decile == 9 else [decile * 10, decile * 10 + 10]
            buckets.append(_estimate_rows(conn, query, params))
    return unscored, buckets


def estimate_table_rows(conn: psycopg.Connection[Any], target: Target) -> int:
    """The planner's estimate of the table's row count (instant)."""
    with _translated(f"estimating the size of {_table_label(target)!r}"):
        return _estimate_rows(conn, sql.SQL("SELECT 1 FROM {}").format(_table(target)), [])


def count_scored_without_result(
    conn: psycopg.Connection[Any], target: Target, *, timeout_ms: int | None = None
) -> int | None:
    """Scored rows with no stored result (scored before the results table existed, or by
    another writer); None if `timeout_ms` ran out."""
    query = sql.SQL(
        "SELECT count(*) FROM {table} t WHERE t.{s} IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM {results} r WHERE r.{image_id} = t.{id})"
    ).format(
        table=_table(target),
        s=sql.Identifier(target.score_column),
        results=_results(target),
        image_id=sql.Identifier(KEY_COLUMN),
        id=sql.Identifier(target.id_column),
    )
    try:
        with conn.transaction():
            if timeout_ms is not None:
                conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            row = conn.execute(query).fetchone()
    except psycopg.errors.QueryCanceled:
        return None
    except psycopg.Error as exc:
        action = f"counting the scores without a result in {results_label(target)}"
        raise _translate(exc, action) from exc
    return int(row[0]) if row else 0


def count_results_by_version(
    conn: psycopg.Connection[Any],
    target: Target,
    scorer_version: str,
    *,
    timeout_ms: int | None = None,
) -> tuple[int, int] | None:
    """Stored results of this scorer version and of any other (current, stale); None if
    `timeout_ms` ran out."""
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE scorer_version = $1),"
        " count(*) FILTER (WHERE scorer_version <> $1) FROM {}"
    ).format(_results(target))
    try:
        with conn.transaction():
            if timeout_ms is not None:
                conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            row = _raw(conn, query, [scorer_version]).fetchone()
    except psycopg.errors.QueryCanceled:
        return None
    except psycopg.Error as exc:
        action = f"counting the results by scorer version in {results_label(target)}"
        raise _translate(exc, action) from exc
    return (int(row[0]), int(row[1])) if row else (0, 0)


def estimate_results_rows(conn: psycopg.Connection[Any], target: Target) -> int:
    """The planner's estimate of the results table's row count (instant)."""
    with _translated(f"estimating the size of {results_label(target)}"):
        return _estimate_rows(conn, sql.SQL("SELECT 1 FROM {}").format(_results(target)), [])
