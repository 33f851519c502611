"""What `status` reports: every checkpoint beside the given one, and the table's scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfill_quality import db
from backfill_quality.checkpoint import Checkpoint, load_checkpoint
from backfill_quality.config import Target
from backfill_quality.errors import BackfillError


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One checkpoint file, or why it could not be read."""

    path: Path
    checkpoint: Checkpoint | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class TableStats:
    """Rows scored and left, by category and by decile."""

    unscored: int
    distribution: dict[str, int]
    histogram: list[int]

    @property
    def scored(self) -> int:
        return sum(self.histogram)


@dataclass(frozen=True, slots=True)
class StatusReport:
    checkpoints: list[CheckpointInfo]
    table: TableStats | None


def find_checkpoints(base: Path) -> list[CheckpointInfo]:
    """The checkpoint at `base` and its siblings (dry run, shards): `<stem>*.json` in its folder."""
    folder = base.parent if str(base.parent) else Path(".")
    found: list[CheckpointInfo] = []
    for path in sorted(folder.glob(f"{base.stem}*{base.suffix}")):
        try:
            checkpoint = load_checkpoint(path)
        except BackfillError as exc:
            found.append(CheckpointInfo(path, None, str(exc)))
            continue
        if checkpoint is not None:
            found.append(CheckpointInfo(path, checkpoint))
    return found


def table_stats(database_url: str, target: Target) -> TableStats:
    """Counts from the database (the original's monitoring SQL, plus deciles)."""
    with db.connect(database_url) as conn:
        db.check_target(conn, target)
        distribution = db.score_distribution(conn, target)
        histogram = db.score_histogram(conn, target)
    return TableStats(
        unscored=distribution.get("unscored", 0),
        distribution=distribution,
        histogram=histogram,
    )


def status_to_dict(report: StatusReport) -> dict[str, Any]:
    """The `status --json` object."""
    table = None
    if report.table is not None:
        table = {
            "unscored": report.table.unscored,
            "scored": report.table.scored,
            "distribution": report.table.distribution,
            "histogram": report.table.histogram,
        }
    return {
        "checkpoints": [
            {"path": str(info.path), "problem": info.problem}
            | (info.checkpoint.to_json() if info.checkpoint else {})
            for info in report.checkpoints
        ],
        "table": table,
    }
