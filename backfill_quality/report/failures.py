"""The failed rows of a target, from its checkpoints, grouped by why they failed.

The database only knows that these rows are still NULL; the reasons are in the checkpoints that
`run` and `watch` write beside `--checkpoint` (`<stem>*.json`: the run, every shard, the watch).
Dry runs are left out (they write nothing, so their failures say nothing about the table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backfill_quality.config import Target
from backfill_quality.pipeline.status import SHARD_SUFFIX, CheckpointInfo

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
    groups: list[ReasonGroup]
    last_run: LastRun | None


def describes(checkpoint_target: str, target: Target) -> bool:
    """Whether a checkpoint's `target` ('host:5432/db images(id,url→score) shard 1/4') is about
    this table and these columns (any database identity: one folder, one target)."""
    described = SHARD_SUFFIX.sub("", checkpoint_target)
    columns = f"{target.id_column},{target.url_column}→{target.score_column}"
    return described.endswith(f" {target.label}({columns})")


def _saved_at(info: CheckpointInfo) -> datetime:
    return info.updated_at or datetime.min.replace(tzinfo=UTC)


def collect_failures(infos: list[CheckpointInfo], target: Target) -> Failures:
    """Failed rows of every real (not dry) checkpoint of `target`, one per row id, grouped by
    reason class (most frequent first)."""
    chosen = [
        info
        for info in infos
        if info.checkpoint is not None
        and not info.checkpoint.dry_run
        and describes(info.checkpoint.target, target)
    ]
    seen: set[str] = set()
    groups: dict[str, ReasonGroup] = {}
    for info in sorted(
        chosen, key=lambda i: i.updated_at or datetime.min.astimezone(), reverse=True
    ):
        assert info.checkpoint is not None
        for failed in info.checkpoint.failed_images:
            key = str(failed.id)
            if key in seen:
                continue
            seen.add(key)
            reason = reason_class(failed.error)
            group = groups.setdefault(reason, ReasonGroup(reason))
            group.count += 1
            if len(group.examples) < EXAMPLES_PER_REASON:
                group.examples.append(FailedExample(key, failed.url, failed.error))
    newest = max(chosen, key=_saved_at, default=None)
    last_run = None
    if newest is not None and newest.checkpoint is not None:
        cp = newest.checkpoint
        last_run = LastRun(cp.start_time, newest.updated_at, cp.processed, cp.finished)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.reason))
    return Failures([str(i.path) for i in chosen], len(seen), ordered, last_run)
