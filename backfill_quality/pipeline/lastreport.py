"""Where the last review report of a target was written: a small JSON file beside the checkpoint.

`<checkpoint stem>.last-report` (e.g. `.backfill-progress.last-report`): `status` already reads
that folder for the same `--checkpoint`, a report is written by the one who runs the backfill
(no write access to the database needed, nothing to migrate), and the name does not end in
`.json`, so it is never taken for a checkpoint (`<stem>*.json`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SUFFIX = ".last-report"


@dataclass(frozen=True, slots=True)
class LastReport:
    path: Path
    built_at: datetime
    rows: int


def record_path(checkpoint: Path) -> Path:
    """`.backfill-progress.json` -> `.backfill-progress.last-report` (same folder)."""
    return checkpoint.with_name(checkpoint.name.removesuffix(checkpoint.suffix) + SUFFIX)


def remember_report(checkpoint: Path, report: Path, rows: int) -> None:
    """Write the record atomically (a reader never sees half of it); OSError if it cannot."""
    record = record_path(checkpoint)
    text = json.dumps(
        {
            "path": str(report.resolve()),
            "builtAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "rows": rows,
        }
    )
    partial = record.with_name(record.name + ".tmp")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, record)


def last_report(checkpoint: Path) -> LastReport | None:
    """The record beside `checkpoint`, None when there is none or it cannot be read."""
    try:
        data = json.loads(record_path(checkpoint).read_text(encoding="utf-8"))
        built_at = datetime.fromisoformat(str(data["builtAt"]).replace("Z", "+00:00"))
        return LastReport(Path(str(data["path"])), built_at, int(data["rows"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
