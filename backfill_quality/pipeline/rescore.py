"""`rescore`: refresh scored rows whose scorer version is not the current one, downloading as
little as possible.

The run's machinery (`Runner`: pages, rows in flight, the scoring pool, pipelined writes, the
checkpoint's low-water mark, signals, reporters) with three seams replaced: which rows a page
holds (`db.fetch_rescore_page`: scored rows and their stored results), how a row becomes a result
(the four paths below), and the guarded write (`db.write_rescores`: only if the row still has the
score and result version it was read with). Per row, cheapest first:

1. recomputed: the stored measurement version is the current one, so the five checks are
   recomputed from the stored measurements; no request.
2. revalidated: a result measured with the current measurement version exists for the stored
   content hash (in the table, or scored earlier in this run): a conditional GET with the stored
   ETag / Last-Modified; a 304 reuses that result.
3. reused by hash: the bytes (after a 200, or an unconditional GET) hash to such a result.
4. fully rescored: the bytes are scored by the scoring processes.

A row that fails keeps its score and result; a row whose score or result changed since it was
read is skipped (the guard), never overwritten.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backfill_quality import db
from backfill_quality.config import RunSettings, Thresholds
from backfill_quality.errors import DatabaseError, DecodeError, FetchError, ModelError
from backfill_quality.fetching.fetcher import Fetched, ImageFetcher, Validators
from backfill_quality.models import (
    ImageRow,
    OrderCursor,
    Outcome,
    PageKey,
    RowId,
    RunSummary,
    ScoredImage,
)
from backfill_quality.pipeline.checkpoint import Checkpoint, checkpoint_path_for, save_checkpoint
from backfill_quality.pipeline.dbsession import DatabaseSession
from backfill_quality.pipeline.progress import Reporter
from backfill_quality.pipeline.resume import RunStart, prepare_checkpoint
from backfill_quality.pipeline.runlock import TargetLock
from backfill_quality.pipeline.runner import Runner, _Page, _State
from backfill_quality.pipeline.target import describe_target, make_fingerprint
from backfill_quality.results import analysis_fields, measurements_from_record, result_to_dict
from backfill_quality.scoring.checks import evaluate
from backfill_quality.scoring.version import Versions, versions

RECOMPUTED, REVALIDATED, REUSED, FULLY_RESCORED = (
    "recomputed",
    "revalidated",
    "reusedByHash",
    "fullyRescored",
)
SKIPPED, FAILED = "skipped", "failed"
PATHS = (RECOMPUTED, REVALIDATED, REUSED, FULLY_RESCORED, SKIPPED, FAILED)
WOULD_RECOMPUTE, WOULD_FETCH = "wouldRecompute", "wouldFetch"
DRY_RUN_PATHS = (WOULD_RECOMPUTE, WOULD_FETCH, FAILED)
NOTHING_TO_RESCORE = "No scored rows need rescoring"


@dataclass(frozen=True, slots=True)
class RescoreOptions:
    """What `rescore` takes beyond a run's settings: every scored row, and the user's filter."""

    is_all: bool = False
    where: str | None = None


@dataclass(frozen=True, slots=True)
class RescoreOutcome(Outcome):
    """An outcome with the path the row took (`PATHS`, or a dry run's `DRY_RUN_PATHS`)."""

    path: str = ""


def rescore_checkpoint_path(settings: RunSettings) -> Path:
    """`x.rescore.json` (and its target, shard and dry-run tags) beside the run's `x.json`:
    a rescore never resumes, or refuses to start because of, a run's checkpoint."""
    base = settings.checkpoint_path
    suffix = base.suffix if base.suffix == ".json" else ""
    stem = base.name[: len(base.name) - len(suffix)]
    return checkpoint_path_for(
        base.with_name(f"{stem}.rescore{suffix}"),
        dry_run=settings.dry_run,
        shard=settings.shard,
        target=settings.target,
    )


def _fingerprint(database: str, s: RunSettings, selection: db.Selection) -> str:
    """The run's fingerprint of the target, and what this rescore selects and scores to: a
    resume with another --where, --all or scorer version is refused."""
    identity = {
        "target": make_fingerprint(database=database, target=s.target, shard=s.shard),
        "kind": "rescore",
        "all": selection.is_all,
        "where": selection.where,
        "scorer": selection.scorer_version,
    }
    payload = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def prepare_rescore(
    conn: Any, s: RunSettings, selection: db.Selection
) -> tuple[RunStart, db.Selection]:
    """Check the target, its results table and --where; choose the checkpoint; count the rows.
    The selection comes back with the rescore's start (kept in the checkpoint for a resume)."""
    id_type = db.check_target(conn, s.target)
    db.require_results_table(conn, s.target)  # read even by a dry run
    db.check_where(conn, s.target, selection)
    database = db.describe_database(conn)
    path = rescore_checkpoint_path(s)
    what = "every scored row" if selection.is_all else "stale rows"
    where = f" where {selection.where}" if selection.where else ""
    description = (
        describe_target(database=database, target=s.target, shard=s.shard)
        + f" rescore of {what}{where} to {selection.scorer_version}"
    )
    fingerprint = _fingerprint(database, s, selection)
    checkpoint = prepare_checkpoint(s, path, fingerprint, description)
    paths = DRY_RUN_PATHS if s.dry_run else PATHS
    checkpoint.rescore = {name: (checkpoint.rescore or {}).get(name, 0) for name in paths}
    if checkpoint.rescore_started_at is None:
        checkpoint.rescore_started_at = db.database_now(conn)
    selection = dataclasses.replace(selection, started_at=checkpoint.rescore_started_at)
    mark = checkpoint.last_processed_id
    if checkpoint.failed_images:
        ids = [f.id for f in checkpoint.failed_images]
        past = (
            set(ids) if mark is None else db.ids_after(conn, s.target, ids, mark, id_type=id_type)
        )
        checkpoint.forget_failures(past)
        checkpoint.rescore[FAILED] = checkpoint.failed
    id_range = db.key_range_for_shard(conn, s.target, id_type, s.shard) if s.shard else None
    left = db.count_to_rescore(conn, s.target, selection, after_id=mark, id_range=id_range)
    checkpoint.total = checkpoint.processed + left
    checkpoint.finished = False
    return RunStart(checkpoint, path, id_range, left), selection


class RescoreRunner(Runner):
    """A run over scored rows: `Runner` with its page reader, row scorer and writer replaced."""

    def __init__(
        self,
        settings: RunSettings,
        reporter: Reporter,
        options: RescoreOptions,
        *,
        handle_signals: bool = True,
    ) -> None:
        lock = None
        if not settings.dry_run:
            lock = TargetLock(settings.target, settings.shard, command="rescore")
        super().__init__(settings, reporter, handle_signals=handle_signals, lock=lock)
        self._options = options
        self._current = Versions("", "")
        self._selection: db.Selection | None = None
        self._analyses: dict[str, dict[str, Any]] = {}
        """content SHA-256 -> the analysis (JSON form) of bytes scored or reused in this run."""
        self._scoring: dict[str, asyncio.Future[None]] = {}
        """stored SHA-256 -> done when the row downloading those bytes again has its result."""

    # --- the seams ---------------------------------------------------------------------------

    def _prepare(self, conn: Any) -> RunStart:
        s = self.settings
        self._current = versions(s.detector, s.thresholds)
        self._selection = db.Selection(
            scorer_version=self._current.scorer,
            measurement_version=self._current.measurement,
            is_all=self._options.is_all,
            where=self._options.where,
        )
        start, self._selection = prepare_rescore(conn, s, self._selection)
        self._resumed_processed = start.checkpoint.processed
        return start

    def _finish_empty(self, checkpoint: Checkpoint, path: Path) -> RunSummary:
        self.reporter.info(NOTHING_TO_RESCORE)
        checkpoint.finished = True
        save_checkpoint(path, checkpoint)
        return self._summary(checkpoint, path)

    async def _read_page(
        self, session: DatabaseSession, after: PageKey | None, id_range: db.IdRange | None
    ) -> list[ImageRow]:
        assert self._selection is not None  # set by _prepare
        assert not isinstance(after, OrderCursor)  # a rescore walks the key: no --order-by
        after_id: RowId | None = after
        rows: list[db.StoredRow] = await session.call(
            db.fetch_rescore_page,
            self.settings.target,
            self._selection,
            after_id=after_id,
            limit=self.settings.batch_size,
            id_range=id_range,
        )
        return list(rows)

    async def _score_row(self, row: Any, fetcher: ImageFetcher) -> Outcome | None:
        stored: db.StoredRow = row
        if self.settings.dry_run:
            path = WOULD_RECOMPUTE if self._can_recompute(stored) else WOULD_FETCH
            return RescoreOutcome(stored, path=path)
        attempts = 1
        try:
            if self._can_recompute(stored):
                return self._recomputed(stored)
            return await self._downloaded(stored, fetcher)
        except (FetchError, DecodeError) as exc:
            tries = exc.attempts if isinstance(exc, FetchError) else attempts
            return RescoreOutcome(stored, error=str(exc), attempts=tries, path=FAILED)
        except ModelError as exc:
            self._fail(exc)
            return None
        except DatabaseError as exc:  # looking up a result by hash: the session gave up
            self._fail(exc)
            return None
        except Exception as exc:
            if self._interrupted is not None or self._fatal is not None:
                return None
            error = f"internal error while rescoring: {exc!r}"
            return RescoreOutcome(stored, error=error, attempts=attempts, path=FAILED)

    async def _write_batch(
        self, session: DatabaseSession, batch: list[tuple[Outcome, _Page]], state: _State
    ) -> None:
        writes = [
            db.RescoreWrite(o.row.id, o.row.score, o.row.version, o.result)
            for o, _ in batch
            if o.result is not None and isinstance(o.row, db.StoredRow)
        ]
        written: dict[RowId, db.WriteResult] = {}
        if writes and not self.settings.dry_run:
            written = {
                r.row_id: r
                for r in await session.write_rows(db.write_rescores, self.settings.target, writes)
            }
        counts = state.checkpoint.rescore
        assert counts is not None  # set by prepare_rescore
        for outcome, page in batch:
            result = written.get(outcome.row.id)
            is_skipped = result is not None and not result.is_written and result.error is None
            path = outcome.path if isinstance(outcome, RescoreOutcome) else FAILED
            if result is not None and result.error is not None:
                outcome = Outcome(outcome.row, error=result.error, attempts=outcome.attempts)
                path = FAILED
            key = SKIPPED if is_skipped else path
            counts[key] = counts.get(key, 0) + 1
            state.checkpoint.record(outcome, is_skipped=is_skipped)
            state.mark.complete(outcome.row.id)
            page.remaining -= 1
            self.reporter.row_done(outcome)

    def _summary(self, checkpoint: Checkpoint, path: Path) -> RunSummary:
        summary = super()._summary(checkpoint, path)
        return dataclasses.replace(summary, rescore=dict(checkpoint.rescore or {}))

    def _summary_before_start(self) -> RunSummary:
        summary = super()._summary_before_start()
        path = str(rescore_checkpoint_path(self.settings))
        return dataclasses.replace(summary, checkpoint_path=path)

    # --- the paths ---------------------------------------------------------------------------

    async def _downloaded(self, stored: db.StoredRow, fetcher: ImageFetcher) -> RescoreOutcome:
        """Paths 2-4. A row whose stored bytes are being scored for another row right now waits
        for that result first: it can then be revalidated instead of scored twice."""
        sha = stored.content_sha256
        if sha and not self._may_reuse(stored) and (first := self._scoring.get(sha)) is not None:
            await asyncio.shield(first)
        if sha and (stored.etag or stored.last_modified) and self._may_reuse(stored):
            validators = Validators(stored.etag, stored.last_modified)
            fetched = await fetcher.fetch(stored.url, validators=validators)
            if not fetched.is_not_modified:
                return await self._from_bytes(stored, fetched)
            analysis = await self._reusable(sha)
            if analysis is not None:
                return self._outcome(stored, analysis, sha, REVALIDATED, fetched)
            # the twin went away meanwhile: download after all
        is_first = bool(sha) and sha not in self._scoring and not self._may_reuse(stored)
        if is_first and sha:
            self._scoring[sha] = asyncio.get_running_loop().create_future()
        try:
            return await self._from_bytes(stored, await fetcher.fetch(stored.url))
        finally:
            if is_first and sha and not (done := self._scoring.pop(sha)).done():
                done.set_result(None)

    async def _from_bytes(self, stored: db.StoredRow, fetched: Fetched) -> RescoreOutcome:
        """Paths 3 and 4: reuse a result of these bytes, or score them."""
        sha = hashlib.sha256(fetched.data).hexdigest()
        analysis = await self._reusable(sha)
        if analysis is not None:
            return self._outcome(stored, analysis, sha, REUSED, fetched)
        try:
            scored = await self._pool.score(fetched.data)
        except DecodeError as exc:
            return RescoreOutcome(stored, error=str(exc), attempts=fetched.attempts, path=FAILED)
        self._analyses[sha] = scored.analysis
        return self._outcome(stored, scored.analysis, sha, FULLY_RESCORED, fetched, scored)

    def _can_recompute(self, row: db.StoredRow) -> bool:
        return row.measured is not None and row.measurement_version == self._current.measurement

    def _may_reuse(self, row: db.StoredRow) -> bool:
        """Worth a conditional GET: a 304 would find a result to reuse (else a 304 would need
        a second, unconditional GET)."""
        return row.has_current_twin or row.content_sha256 in self._analyses

    async def _reusable(self, sha: str) -> dict[str, Any] | None:
        """The analysis of bytes with this hash under the current scorer: from this run, or
        recomputed from a stored result measured with the current measurement version."""
        if (analysis := self._analyses.get(sha)) is not None:
            return analysis
        session = self._session
        assert session is not None
        measured = await session.call(
            db.find_current_measurements, self.settings.target, sha, self._current.measurement
        )
        if measured is None:
            return None
        analysis = analysis_fields(evaluate(measurements_from_record(measured), self._thresholds))
        self._analyses[sha] = analysis
        return analysis

    @property
    def _thresholds(self) -> Thresholds:
        return self.settings.thresholds

    def _recomputed(self, row: db.StoredRow) -> RescoreOutcome:
        started_s = time.perf_counter()
        assert row.measured is not None
        analysis = analysis_fields(
            evaluate(measurements_from_record(row.measured), self._thresholds)
        )
        scored = ScoredImage(
            analysis=analysis,
            byte_size=row.byte_size or 0,
            content_sha256=row.content_sha256 or "",
            score_ms=(time.perf_counter() - started_s) * 1000,
        )
        result = self._result(row, scored, etag=row.etag, last_modified=row.last_modified)
        return RescoreOutcome(row, score=scored.score, result=result, path=RECOMPUTED)

    def _outcome(
        self,
        row: db.StoredRow,
        analysis: Mapping[str, Any],
        sha: str,
        path: str,
        fetched: Fetched,
        scored: ScoredImage | None = None,
    ) -> RescoreOutcome:
        if scored is None:
            size = row.byte_size if fetched.is_not_modified else len(fetched.data)
            scored = ScoredImage(dict(analysis), size or 0, sha, 0.0)
        fetch_ms = None if fetched.download_s is None else fetched.download_s * 1000
        result = self._result(
            row,
            scored,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            fetch_ms=fetch_ms,
        )
        return RescoreOutcome(
            row, score=scored.score, attempts=fetched.attempts, result=result, path=path
        )

    def _result(
        self,
        row: db.StoredRow,
        scored: ScoredImage,
        *,
        etag: str | None,
        last_modified: str | None,
        fetch_ms: float | None = None,
    ) -> dict[str, Any]:
        return result_to_dict(
            row.url,
            scored,
            scorer_version=self._current.scorer,
            measurement_version=self._current.measurement,
            scored_at=datetime.now(UTC),
            etag=etag,
            last_modified=last_modified,
            fetch_ms=fetch_ms,
        )
