"""What `status` reports: every checkpoint beside the given one, and the table's scores.

Checkpoints: `<stem>*.json` in the checkpoint's folder — the run, its dry run, every shard, the
watch — each with progress, ETA, failures and when it was last written; an unreadable file is
listed with the reason instead of stopping the report. Shards are also summed per N, naming
the shards whose checkpoint is missing.

Table: by default exact counts when the table is small enough to count in a moment, else the
planner's estimates (instant on any size, marked as such); `exact=True` always counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.errors import BackfillError
from backfill_quality.pipeline.checkpoint import Checkpoint, load_checkpoint
from backfill_quality.pipeline.lastreport import LastReport, last_report
from backfill_quality.pipeline.trend import TrendReport, TrendRequest, trend_report, trend_to_dict
from backfill_quality.redaction import redact

CATEGORY_DECILES = {"high": range(8, 10), "medium": range(6, 8), "low": range(0, 6)}
_SHARD = re.compile(r"^(\d+)/(\d+)$")
SHARD_SUFFIX = re.compile(r" shard \d+/\d+(?= order by | rescore of |$)")
"""The shard in a checkpoint's `target` (at its end, or before its order or its rescore part):
what its shards' descriptions do not share."""
RUN, RESCORE = "run", "rescore"


def checkpoint_kind(checkpoint: Checkpoint) -> str:
    """`rescore` for a rescore's checkpoint (its failed rows keep their old score), else `run`
    (a run's or a watch's: its failed rows have no score)."""
    return RESCORE if checkpoint.rescore is not None else RUN


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One checkpoint file, or why it could not be read."""

    path: Path
    checkpoint: Checkpoint | None
    problem: str | None = None
    updated_at: datetime | None = None

    @property
    def percent(self) -> float | None:
        cp = self.checkpoint
        return 100.0 * cp.processed / cp.total if cp and cp.total else None


@dataclass(frozen=True, slots=True)
class VersionCounts:
    """Scored rows by scorer version: the current one, another (stale), none (unknown: scored
    without a result). `rescore` takes the stale and the unknown ones."""

    scorer_version: str
    current: int
    stale: int
    unknown: int


@dataclass(frozen=True, slots=True)
class TableStats:
    """Rows left, and scored rows by decile (0-9 … 90-100); categories derive from deciles."""

    unscored: int
    histogram: list[int]
    is_estimate: bool = False
    without_result: int | None = None
    """Scored rows with no stored result (scored before the results table existed); None when
    there is no results table (`migrate` has not created it)."""
    by_version: VersionCounts | None = None
    """Stored results of the current scorer version and of others; None when not counted."""

    @property
    def scored(self) -> int:
        return sum(self.histogram)

    @property
    def distribution(self) -> dict[str, int]:
        """Rows per category (the original's monitoring SQL): high, medium, low, unscored."""
        counts = {c: sum(self.histogram[i] for i in r) for c, r in CATEGORY_DECILES.items()}
        return counts | {"unscored": self.unscored}


@dataclass(frozen=True, slots=True)
class ShardGroup:
    """The checkpoints of one N-way sharded run (real or dry) of one target, summed."""

    target: str
    """The target without its shard, as the checkpoints describe it (database table(columns))."""
    kind: str
    """`run` or `rescore` (`checkpoint_kind`): a run's and a rescore's shards are not summed."""
    count: int
    dry_run: bool
    present: list[int]
    processed: int
    total: int
    failed: int
    finished: int

    @property
    def missing(self) -> list[int]:
        return [k for k in range(self.count) if k not in self.present]


@dataclass(frozen=True, slots=True)
class StatusReport:
    checkpoints: list[CheckpointInfo]
    table: TableStats | None
    table_problem: str | None = None
    table_problem_exit_code: int = 0
    """The exit code of the error behind `table_problem`: 2 when an option must be fixed (a
    malformed --database-url, an unknown table or column), 1 when the database failed."""
    trend: TrendReport | None = None
    """Quality per period (`--trend`); None when not asked for or when it failed."""
    trend_problem: str | None = None
    trend_problem_exit_code: int = 0
    last_report: LastReport | None = None
    """Where the last review report beside the checkpoint was written (pipeline/lastreport.py)."""

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the table's problem, else of the trend's."""
        return self.table_problem_exit_code or self.trend_problem_exit_code

    @property
    def shard_groups(self) -> list[ShardGroup]:
        return group_shards(self.checkpoints)


def find_checkpoints(base: Path) -> list[CheckpointInfo]:
    """The checkpoint at `base` and its siblings (dry run, shards, watch): `<stem>*.json`."""
    folder = base.parent if str(base.parent) else Path(".")
    stem = base.name[: len(base.name) - len(base.suffix)]
    found: list[CheckpointInfo] = []
    try:
        paths = sorted(p for p in folder.glob(f"{stem}*{base.suffix}") if not p.is_dir())
    except OSError as exc:  # an unreadable folder: say so, as for an unreadable file
        return [CheckpointInfo(folder, None, f"cannot list {folder}: {exc.strerror or exc}")]
    for path in paths:
        updated_at = _modified_at(path)
        try:
            checkpoint = load_checkpoint(path)
        except BackfillError as exc:
            found.append(CheckpointInfo(path, None, str(exc), updated_at))
            continue
        if checkpoint is not None:
            found.append(CheckpointInfo(path, checkpoint, None, updated_at))
    return found


def _modified_at(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def group_shards(checkpoints: list[CheckpointInfo]) -> list[ShardGroup]:
    """Sum the shard checkpoints per (target, N, dry run); tells which shards have none."""
    groups: dict[tuple[str, str, int, bool], list[tuple[int, Checkpoint]]] = {}
    for info in checkpoints:
        cp = info.checkpoint
        match = _SHARD.match(cp.shard or "") if cp else None
        if cp is None or match is None:
            continue
        target = SHARD_SUFFIX.sub("", cp.target)
        key = (target, checkpoint_kind(cp), int(match[2]), cp.dry_run)
        groups.setdefault(key, []).append((int(match[1]), cp))
    return [
        ShardGroup(
            target=target,
            kind=kind,
            count=count,
            dry_run=dry_run,
            present=sorted(k for k, _ in members),
            processed=sum(cp.processed for _, cp in members),
            total=sum(cp.total for _, cp in members),
            failed=sum(cp.failed for _, cp in members),
            finished=sum(cp.finished for _, cp in members),
        )
        for (target, kind, count, dry_run), members in sorted(groups.items())
    ]


def table_stats(
    database_url: str, target: Target, *, exact: bool = False, scorer_version: str | None = None
) -> TableStats:
    """Counts from the database: exact if asked or cheap, else the planner's estimates; with
    `scorer_version`, the results by version too (exact only: skipped when counting is slow)."""
    with db.connect(database_url) as conn:
        db.check_target(conn, target)
        counts: db.ScoreBuckets | None = None
        timeout_ms = None if exact else db.EXACT_COUNT_TIMEOUT_MS
        if exact or db.estimate_table_rows(conn, target) <= db.EXACT_COUNT_LIMIT:
            counts = db.count_score_buckets(conn, target, timeout_ms=timeout_ms)
        is_estimate = counts is None
        unscored, histogram = counts or db.estimate_score_buckets(conn, target)
        without_result = None
        if db.has_results_table(conn, target):
            if not is_estimate:
                without_result = db.count_scored_without_result(conn, target, timeout_ms=timeout_ms)
            if without_result is None:  # the planner's figures: scored rows minus results
                is_estimate = True
                without_result = max(0, sum(histogram) - db.estimate_results_rows(conn, target))
            by_version = None
            if scorer_version is not None and not is_estimate:
                counted = db.count_results_by_version(
                    conn, target, scorer_version, timeout_ms=timeout_ms
                )
                if counted is not None:
                    by_version = VersionCounts(scorer_version, *counted, without_result)
            return TableStats(unscored, histogram, is_estimate, without_result, by_version)
    return TableStats(unscored, histogram, is_estimate, without_result)


def report_status(
    database_url: str,
    target: Target,
    checkpoint: Path,
    *,
    exact: bool = False,
    trend: TrendRequest | None = None,
    scorer_version: str | None = None,
) -> StatusReport:
    """Checkpoints always; the table's figures unless the database fails (then why, instead);
    with `trend`, quality per period (or why not)."""
    checkpoints = find_checkpoints(checkpoint)
    report = last_report(checkpoint)
    try:
        table = table_stats(database_url, target, exact=exact, scorer_version=scorer_version)
    except BackfillError as exc:
        failed = StatusReport(checkpoints, None, str(exc), exc.exit_code, last_report=report)
        if trend is None:
            return failed
        return replace(failed, trend_problem=str(exc), trend_problem_exit_code=exc.exit_code)
    if trend is None:
        return StatusReport(checkpoints, table, last_report=report)
    try:
        trended = trend_report(database_url, target, trend)
    except BackfillError as exc:
        return StatusReport(
            checkpoints,
            table,
            trend_problem=str(exc),
            trend_problem_exit_code=exc.exit_code,
            last_report=report,
        )
    return StatusReport(checkpoints, table, trend=trended, last_report=report)


def _checkpoint_to_dict(info: CheckpointInfo) -> dict[str, Any]:
    fields: dict[str, Any] = {"path": str(info.path), "problem": info.problem}
    if info.checkpoint is not None:
        fields["kind"] = checkpoint_kind(info.checkpoint)
        fields |= info.checkpoint.to_json()
        percent = info.percent
        fields["percent"] = None if percent is None else round(percent, 2)
    # the file's own time: to_json() would stamp "now"
    fields["updatedAt"] = (
        info.updated_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        if info.updated_at
        else None
    )
    return fields


def _versions_to_dict(counts: VersionCounts | None) -> dict[str, Any] | None:
    if counts is None:
        return None
    return {
        "scorerVersion": counts.scorer_version,
        "current": counts.current,
        "stale": counts.stale,
        "unknown": counts.unknown,
    }


def status_to_dict(report: StatusReport) -> dict[str, Any]:
    """The `status --json` object."""
    table = None
    if report.table is not None:
        table = {
            "unscored": report.table.unscored,
            "scored": report.table.scored,
            "isEstimate": report.table.is_estimate,
            "distribution": report.table.distribution,
            "histogram": report.table.histogram,
            "scoredWithoutResult": report.table.without_result,
            "versions": _versions_to_dict(report.table.by_version),
        }
    return {
        "checkpoints": [_checkpoint_to_dict(info) for info in report.checkpoints],
        "shards": [
            {
                "target": g.target,
                "kind": g.kind,
                "count": g.count,
                "dryRun": g.dry_run,
                "present": g.present,
                "missing": g.missing,
                "processed": g.processed,
                "total": g.total,
                "failed": g.failed,
                "finished": g.finished,
            }
            for g in report.shard_groups
        ],
        "table": table,
        "tableError": redact(report.table_problem) if report.table_problem else None,
        "lastReport": None
        if report.last_report is None
        else {
            "path": str(report.last_report.path),
            "builtAt": report.last_report.built_at.isoformat(timespec="seconds").replace(
                "+00:00", "Z"
            ),
            "results": report.last_report.rows,
        },
    } | _trend_fields(report)


def _trend_fields(report: StatusReport) -> dict[str, Any]:
    """`trend` and `trendError`, present only with --trend."""
    if report.trend is not None:
        return {"trend": trend_to_dict(report.trend), "trendError": None}
    if report.trend_problem is not None:
        return {"trend": None, "trendError": redact(report.trend_problem)}
    return {}
