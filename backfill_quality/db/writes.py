"""Writing: the pipelined per-row score UPDATEs with their results, and the demo's seed rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from backfill_quality.config import Target
from backfill_quality.db.connection import _translate
from backfill_quality.db.results import guarded_write_statement, write_parameters
from backfill_quality.db.schema import _table_label
from backfill_quality.models import RowId


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of one score written by `write_score_results`."""

    row_id: RowId
    is_written: bool
    error: str | None = None


# --- writing scores --------------------------------------------------------------------------

_WRITE_QUERIES: dict[tuple[Target, str], bytes] = {}
"""`guarded_write_statement` rendered, by target and client encoding: composing its ~40 quoted
identifiers again for every batch (usually one row) cost more CPU than the write itself."""


ScoreWrite = tuple[RowId, Mapping[str, Any]]
"""One row to write: its key and its result record (`results.result_to_dict`), score included."""


def write_score_results(
    conn: psycopg.Connection[Any], target: Target, rows: Sequence[ScoreWrite]
) -> list[WriteResult]:
    """Write each score with its result, each row in its own transaction, pipelined; report per
    row what happened.

    One statement per row (`guarded_write_statement`): the UPDATE that fills a NULL score and,
    only for a row it updated, the INSERT of the result, so there is never a score without its
    result or a result without its score. In pipeline mode every statement up to a protocol
    Sync shares one implicit transaction, so each statement is followed by `Pipeline.sync()`:
    the row commits (or fails) alone, and a failed row (say a CHECK violation) leaves the others
    untouched. A row already scored by someone else, or deleted, is not written
    (`is_written=False`, no error). Losing the connection raises a retryable DatabaseError; rows
    before it are committed, and retrying is harmless because the UPDATE only fills NULL scores.
    Cost: `Pipeline.sync()` waits for its row's result (psycopg has no public Sync that does not
    wait), so this is one round trip and one commit per row; on a local socket about 2 000
    rows/s, bounded by the per-commit WAL flush.
    """
    results: list[WriteResult] = []
    try:
        statement = _write_query(conn, target)
        with conn.pipeline() as pipeline, psycopg.RawCursor(conn) as cur:
            for row_id, result in rows:
                try:
                    cur.execute(statement, write_parameters(row_id, result))
                    pipeline.sync()
                except (psycopg.IntegrityError, psycopg.DataError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    error = (
                        f"the database refused score {result['score']} for row {row_id}: {reason}"
                    )
                    results.append(WriteResult(row_id, False, error))
                    continue
                results.append(WriteResult(row_id, cur.rowcount == 1))
    except psycopg.Error as exc:
        failure = _translate(exc, f"writing scores to {_table_label(target)!r}")
        failure.confirmed = list(results)  # committed (or refused) before the loss: not to redo
        raise failure from exc
    return results


def _write_query(conn: psycopg.Connection[Any], target: Target) -> bytes:
    """The target's guarded write statement as bytes, composed once per target and encoding."""
    key = (target, conn.info.encoding)
    query = _WRITE_QUERIES.get(key)
    if query is None:
        query = _WRITE_QUERIES[key] = guarded_write_statement(target).as_bytes(conn)
    return query


def write_scores(
    conn: psycopg.Connection[Any], target: Target, rows: Sequence[ScoreWrite]
) -> list[bool]:
    """Per row: True if this call wrote the score, False if not (already scored, gone, failed)."""
    return [result.is_written for result in write_score_results(conn, target, rows)]


# --- demo data -----------------------------------------------------------------------------------


def replace_demo_rows(conn: psycopg.Connection[Any], urls: Sequence[str]) -> None:
    """Empty the demo's `images` table (and its results) and insert one unscored row per URL."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("TRUNCATE images CASCADE")  # the results table references it
            cur.executemany("INSERT INTO images (url) VALUES (%s)", [(url,) for url in urls])
    except psycopg.Error as exc:
        raise _translate(exc, "filling the demo table") from exc
