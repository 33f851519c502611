"""The failed rows of a target, from its checkpoints, grouped by why they failed.

The database only knows that these rows are still NULL; the reasons are in the checkpoints that
`run` and `watch` write beside `--checkpoint` (`<stem>*.json`: the run, every shard, the watch).
A rescore's checkpoint (`<stem>.rescore*.json`) lists rows it could not refresh: they keep their
old score and result, so they are counted apart, never among the rows without a score.
Dry runs are left out (they write nothing, so their failures say nothing about the table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backfill_quality.config import Target
from backfill_quality.pipeline.checkpoint import Checkpoint
from backfill_quality.pipeline.status import RESCORE, SHARD_SUFFIX, CheckpointInfo, checkpoint_kind

EXAMPLES_PER_REASON = 5
_REASON_CLASSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bHTTP (\d{3})\b"), "HTTP {0}"),
    (re.compile(r"timeout|timed out", re.I), "timeout"),
    (re.compile(r"not an image", re.I), "not an image"),
    (re.compile(r"truncated or corrupt", re.I), "truncated or corrupt image"),
    (re.compile(r"too large|exceeds", re.I), "too large"),
    (re.compile(r"could not connect|connection error|connection refused", re.I), "no connection"),
    (re.compile(r"redirect", re.I), "redirects"),
    (re.compile(r"private|not allowed|unsupported|scheme", re.I), "URL refused"),
)


def reason_class(error: str) -> str:
    """'HTTP 404 Not Found after 1 attempts' -> 'HTTP 404'; 'read timeout 10s' -> 'timeout'."""
    for pattern, label in _REASON_CLASSES:
        match = pattern.search(error)
        if match:
            return label.format(*match.groups())
    head = re.split(r"[:(]", error, maxsplit=1)[0].strip()
    return head[:40] or "unknown"


@dataclass(frozen=True, slots=True)
class FailedExample:
    id: str
    url: str
    error: str


@dataclass(slots=True)
class ReasonGroup:
    """All failed rows of one reason class: how many, and the first few."""

    reason: str
    count: int = 0
    examples: list[FailedExample] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LastRun:
    """The newest checkpoint of the target: when it ran and how fast."""

    started_at: datetime
    updated_at: datetime | None
    processed: int
    finished: bool
    kind: str = "run"
    """`run` (a run or a watch: scored NULL rows) or `rescore` (refreshed scored rows)."""

    @property
    def rows_per_s(self) -> float | None:
        if self.updated_at is None:
            return None
        seconds = (self.updated_at - self.started_at).total_seconds()
        return self.processed / seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class Failures:
    """What the checkpoints say about the target's failed rows."""

    checkpoints: list[str]
    """The checkpoint files read (empty: none found, so the failures are unknown)."""
    total: int
    """Rows that could not be scored (still NULL), by the runs' and watches' checkpoints."""
    groups: list[ReasonGroup]
    last_run: LastRun | None
    rescore_total: int = 0
    """Rows a rescore could not refresh: they keep their old score and result."""
    rescore_groups: list[ReasonGroup] = field(default_factory=list)


def describes(checkpoint_target: str, target: Target) -> bool:
    """Whether a checkpoint's `target` ('host:5432/db images(id,url→score) shard 1/4') is about
    this table and these columns (any database identity: one folder, one target)."""
    described = SHARD_SUFFIX.sub("", checkpoint_target)
    columns = f"{target.id_column},{target.url_column}→{target.score_column}"
    named = f" {target.label}({columns})"
    # a run in an order ends with ' order by …', a rescore with ' rescore of …'
    return described.endswith(named) or any(
        f"{named}{tail}" in described for tail in (" order by ", " rescore of ")
    )


def _saved_at(info: CheckpointInfo) -> datetime:
    return info.updated_at or datetime.min.replace(tzinfo=UTC)


def collect_failures(infos: list[CheckpointInfo], target: Target) -> Failures:
    """Failed rows of every real (not dry) checkpoint of `target`, one per row id, grouped by
    reason class (most frequent first): the runs' (no score) apart from the rescores' (old
    score kept)."""
    chosen = [
        info
        for info in infos
        if info.checkpoint is not None
        and not info.checkpoint.dry_run
        and describes(info.checkpoint.target, target)
    ]
    newest_first = sorted(chosen, key=_saved_at, reverse=True)
    runs = [
        i.checkpoint
        for i in newest_first
        if i.checkpoint and checkpoint_kind(i.checkpoint) != RESCORE
    ]
    rescores = [
        i.checkpoint
        for i in newest_first
        if i.checkpoint and checkpoint_kind(i.checkpoint) == RESCORE
    ]
    total, groups = _grouped(runs)
    rescore_total, rescore_groups = _grouped(rescores)
    newest = newest_first[0] if newest_first else None
    last_run = None
    if newest is not None and newest.checkpoint is not None:
        cp = newest.checkpoint
        kind = checkpoint_kind(cp)
        last_run = LastRun(cp.start_time, newest.updated_at, cp.processed, cp.finished, kind)
    return Failures(
        [str(i.path) for i in chosen], total, groups, last_run, rescore_total, rescore_groups
    )


def _grouped(checkpoints: list[Checkpoint]) -> tuple[int, list[ReasonGroup]]:
    """The failed rows of these checkpoints (newest first), one per row id, by reason class."""
    seen: set[str] = set()
    groups: dict[str, ReasonGroup] = {}
    for checkpoint in checkpoints:
        for failed in checkpoint.failed_images:
            key = str(failed.id)
            if key in seen:
                continue
            seen.add(key)
            reason = reason_class(failed.error)
            group = groups.setdefault(reason, ReasonGroup(reason))
            group.count += 1
            if len(group.examples) < EXAMPLES_PER_REASON:
                group.examples.append(FailedExample(key, failed.url, failed.error))
    return len(seen), sorted(groups.values(), key=lambda g: (-g.count, g.reason))
