"""Writing: the pipelined per-row score UPDATEs, and the demo's seed rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.config import Target
from backfill_quality.db.connection import _translate
from backfill_quality.db.schema import _table, _table_label
from backfill_quality.models import RowId


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of one score written by `write_score_results`."""

    row_id: RowId
    is_written: bool
    error: str | None = None


# --- writing scores --------------------------------------------------------------------------


def _update_statement(target: Target) -> sql.Composed:
    return sql.SQL("UPDATE {table} SET {score} = $1 WHERE {id} = $2 AND {score} IS NULL").format(
        table=_table(target),
        score=sql.Identifier(target.score_column),
        id=sql.Identifier(target.id_column),
    )


def write_score_results(
    conn: psycopg.Connection[Any], target: Target, scores: Sequence[tuple[RowId, int]]
) -> list[WriteResult]:
    """Write each score in its own transaction, pipelined; report per row what happened.

    In pipeline mode every statement up to a protocol Sync shares one implicit transaction, so
    each UPDATE is followed by `Pipeline.sync()`: the row commits (or fails) alone, and a failed
    row (say a CHECK violation) leaves the others untouched. A row already scored by someone
    else, or deleted, is not written (`is_written=False`, no error). Losing the connection
    raises a retryable DatabaseError; rows before it are committed, and retrying is harmless
    because the UPDATE only fills NULL scores. Cost: `Pipeline.sync()` waits for its row's
    result (psycopg has no public Sync that does not wait), so this is one round trip and one
    commit per row; on a local socket about 2 000 rows/s, bounded by the per-commit WAL flush.
    """
    statement = _update_statement(target)
    results: list[WriteResult] = []
    try:
        with conn.pipeline() as pipeline, psycopg.RawCursor(conn) as cur:
            for row_id, score in scores:
                try:
                    cur.execute(statement, (score, row_id))
                    pipeline.sync()
                except (psycopg.IntegrityError, psycopg.DataError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    error = f"the database refused score {score} for row {row_id}: {reason}"
                    results.append(WriteResult(row_id, False, error))
                    continue
                results.append(WriteResult(row_id, cur.rowcount == 1))
    except psycopg.Error as exc:
        failure = _translate(exc, f"writing scores to {_table_label(target)!r}")
        failure.confirmed = list(results)  # committed (or refused) before the loss: not to redo
        raise failure from exc
    return results


def write_scores(
    conn: psycopg.Connection[Any], target: Target, scores: Sequence[tuple[RowId, int]]
) -> list[bool]:
    """Per row: True if this call wrote the score, False if not (already scored, gone, failed)."""
    return [result.is_written for result in write_score_results(conn, target, scores)]


# --- demo data -----------------------------------------------------------------------------------


def replace_demo_rows(conn: psycopg.Connection[Any], urls: Sequence[str]) -> None:
    """Empty the demo's `images` table and insert one unscored row per URL (demo only)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("TRUNCATE images")
            cur.executemany("INSERT INTO images (url) VALUES (%s)", [(url,) for url in urls])
    except psycopg.Error as exc:
        raise _translate(exc, "filling the demo table") from exc
