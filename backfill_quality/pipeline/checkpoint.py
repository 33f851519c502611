"""The JSON checkpoint: load, validate, fingerprint the target, save atomically; low-water mark.

The file keeps the original script's camelCase keys (`jq '.failedImages'` still works) and adds
`version`, `updatedAt`, `dryRun`, `fingerprint`, `target`, `shard`, `finished` and `skipped`;
`orderBy` keeps the composite cursor of a `--order-by` run (then `lastProcessedId` is the id of
that cursor's row, not a bound on the ids done).
No password ever reaches it: the database appears only as host:port/dbname, and credentials in
image URLs are masked.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from backfill_quality.config import OrderBy, RunSettings, Shard, Target
from backfill_quality.errors import CheckpointError, CheckpointWriteError
from backfill_quality.models import OrderCursor, Outcome, PageKey, RowId
from backfill_quality.pipeline.target import target_tag
from backfill_quality.redaction import redact

CHECKPOINT_VERSION = 1
LEGACY_DETECTOR = "heuristic"
"""The detector of checkpoints written before the key existed: the only one there was."""
DECILES = 10
_RESTART_HINT = "delete it or use --restart"
_ABSENT: Any = object()


@dataclass(slots=True)
class FailedImage:
    """One row that could not be scored; it stays NULL in the database."""

    id: RowId
    url: str
    error: str
    attempts: int = 1
    _json: str = field(default="", init=False, repr=False, compare=False)

    def to_json_text(self) -> str:
        """The entry as one line of redacted JSON, encoded once: a checkpoint is saved after
        every page, and re-encoding thousands of failures each time made a page cost hundreds
        of ms (bench/checkpoint_save.py)."""
        if not self._json:
            url, error = redact(self.url), redact(self.error)
            entry = {"id": self.id, "url": url, "error": error, "attempts": self.attempts}
            self._json = json.dumps(entry, ensure_ascii=False)
        return self._json


def decile_of(score: int) -> int:
    """0 for 0-9, 1 for 10-19, … 9 for 90-100 (100 belongs to the top decile)."""
    return min(max(score, 0) // 10, DECILES - 1)


def _now() -> datetime:
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # what the file keeps


@dataclass(slots=True)
class Checkpoint:
    """The state of one run, saved after every page. Mutable: the runner updates it.

    `processed` counts every row handled, so processed = succeeded + failed + skipped.
    """

    fingerprint: str
    dry_run: bool
    total: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    start_time: datetime = field(default_factory=_now)
    last_processed_id: RowId | None = None
    estimated_time_remaining: str = ""
    failed_images: list[FailedImage] = field(default_factory=list)
    shard: str | None = None
    finished: bool = False
    skipped: int = 0
    target: str = ""
    detector: str = LEGACY_DETECTOR
    """The --detector of the run that wrote it: a resumed run must score with the same one."""
    score_histogram: list[int] = field(default_factory=lambda: [0] * DECILES)
    """The scores this run (and the runs it resumed) gave, by decile: 0-9, 10-19, … 90-100."""
    rescore: dict[str, int] | None = None
    """A rescore's rows by path (recomputed, revalidated, …: pipeline/rescore.py); None: a run."""
    rescore_started_at: datetime | None = None
    """When the rescore started, by the database's clock: it never takes a row whose result was
    written at or after it (a resumed rescore would otherwise rewrite rows past its mark)."""
    order_by: OrderBy | None = None
    """The run's --order-by: a resumed run must take rows in the same order."""
    order_type: str = ""
    """The order column's type when the run started (the cursor value is cast back to it)."""
    order_cursor: OrderCursor | None = None
    """With --order-by: the low-water mark, as (value, id) of the last row of the done prefix."""

    @property
    def cursor(self) -> PageKey | None:
        """Where the next page starts: the low-water mark as the page reader keys it."""
        return self.order_cursor if self.order_by is not None else self.last_processed_id

    @cursor.setter
    def cursor(self, key: PageKey | None) -> None:
        if isinstance(key, OrderCursor):
            self.order_cursor, self.last_processed_id = key, key.id
        else:
            self.order_cursor, self.last_processed_id = None, key

    def record(self, outcome: Outcome, *, is_skipped: bool = False) -> None:
        """Count one finished row (is_skipped: someone else scored it between read and write)."""
        self.processed += 1
        if is_skipped:
            self.skipped += 1
        elif outcome.is_success:
            self.succeeded += 1
            if outcome.score is not None:
                self.score_histogram[decile_of(outcome.score)] += 1
        else:
            self.failed += 1
            self.failed_images.append(
                FailedImage(
                    id=outcome.row.id,
                    url=redact(outcome.row.url),
                    error=redact(outcome.error or "unknown error"),
                    attempts=outcome.attempts,
                )
            )

    def forget_failures(self, row_ids: set[RowId]) -> None:
        """Un-count failed rows that will be tried again (on resume: those past the mark)."""
        if not row_ids:
            return
        kept = [f for f in self.failed_images if f.id not in row_ids]
        forgotten = len(self.failed_images) - len(kept)
        self.failed_images = kept
        self.failed -= forgotten
        self.processed -= forgotten

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk (camelCase keys of the original, plus ours)."""
        return self._header() | {
            "failedImages": [
                {"id": f.id, "url": redact(f.url), "error": redact(f.error), "attempts": f.attempts}
                for f in self.failed_images
            ],
        }

    def to_text(self) -> str:
        """`to_json` as the file's text: indented, with one failed image per line.

        Each failure is redacted and encoded once, so a save costs about the bytes written, not a
        new encoding of every failure of the run so far.
        """
        head = json.dumps(self._header(), indent=2, ensure_ascii=False)[:-2]
        if not self.failed_images:
            return head + ',\n  "failedImages": []\n}\n'
        entries = ",\n    ".join(f.to_json_text() for f in self.failed_images)
        return head + ',\n  "failedImages": [\n    ' + entries + "\n  ]\n}\n"

    def _header(self) -> dict[str, Any]:
        """Every key of the file but failedImages, in the file's order."""
        return {
            "version": CHECKPOINT_VERSION,
            "total": self.total,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "startTime": _format_time(self.start_time),
            "updatedAt": _format_time(_now()),
            "lastProcessedId": self.last_processed_id,
            "estimatedTimeRemaining": self.estimated_time_remaining,
            "finished": self.finished,
            "dryRun": self.dry_run,
            "fingerprint": self.fingerprint,
            "target": self.target,
            "shard": self.shard,
            "detector": self.detector,
            "scoreHistogram": self.score_histogram,
            "orderBy": self._order_json(),
        } | self._rescore_json()

    def _rescore_json(self) -> dict[str, Any]:
        if self.rescore is None:
            return {}
        started = self.rescore_started_at
        return {
            "rescore": self.rescore,
            "rescoreStartedAt": None if started is None else started.isoformat(),
        }

    def _order_json(self) -> dict[str, Any] | None:
        if self.order_by is None:
            return None
        cursor = self.order_cursor
        return {
            "column": self.order_by.column,
            "descending": self.order_by.descending,
            "type": self.order_type,
            "cursor": None
            if cursor is None
            else {
                "phase": "nulls" if cursor.is_null else "values",
                "value": cursor.value,
                "id": cursor.id,
            },
        }

    @classmethod
    def from_json(cls, data: Any, *, path: Path) -> Checkpoint:
        """Validate a parsed checkpoint strictly; CheckpointError says what is wrong, what to do."""
        reader = _Reader(data, path)
        get = reader.get
        last_id = data["lastProcessedId"]
        order_by, order_type, order_cursor = reader.order("orderBy")
        return cls(
            fingerprint=get("fingerprint", str),
            dry_run=get("dryRun", bool),
            total=get("total", int),
            processed=get("processed", int),
            succeeded=get("succeeded", int),
            failed=get("failed", int),
            skipped=get("skipped", int),
            start_time=reader.time("startTime"),
            last_processed_id=None if last_id is None else get("lastProcessedId", RowId),
            estimated_time_remaining=get("estimatedTimeRemaining", str),
            failed_images=reader.failed_images(),
            shard=None if data["shard"] is None else get("shard", str),
            finished=get("finished", bool),
            target=get("target", str),
            detector=get("detector", str) if "detector" in data else LEGACY_DETECTOR,
            score_histogram=reader.histogram("scoreHistogram"),
            rescore=reader.counts("rescore"),
            rescore_started_at=reader.optional_time("rescoreStartedAt"),
            order_by=order_by,
            order_type=order_type,
            order_cursor=order_cursor,
        )


_REQUIRED_KEYS = frozenset(
    {"version", "total", "processed", "succeeded", "failed", "skipped", "startTime", "updatedAt"}
    | {"lastProcessedId", "estimatedTimeRemaining", "finished", "dryRun", "fingerprint"}
    | {"target", "shard", "failedImages"}
)
_OPTIONAL_KEYS = frozenset({"detector", "scoreHistogram", "rescore", "rescoreStartedAt", "orderBy"})
"""Keys added since version 1, absent from the files older releases wrote."""
_EXPECTED = {str: "a string", bool: "true or false", int: "an integer ≥ 0", list: "a list"}


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Reader:
    """Strict, typed access to the keys of a parsed checkpoint."""

    def __init__(self, data: Any, path: Path) -> None:
        self.path = path
        if not isinstance(data, dict):
            kind = {list: "list", str: "string", type(None): "null"}.get(type(data), "number")
            self.fail(f"holds a JSON {kind}, not an object")
        version = data.get("version")
        if version is None:
            self.fail("has no version: it was not written by this tool (the original script?)")
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} is from version {redact(repr(version))[:40]}; this tool writes "
                f"version {CHECKPOINT_VERSION} — start over with --restart"
            )
        if missing := sorted(_REQUIRED_KEYS - data.keys()):
            self.fail(f"lacks the keys {', '.join(missing)}")
        if unknown := sorted(data.keys() - _REQUIRED_KEYS - _OPTIONAL_KEYS):
            self.fail(f"has unknown keys {', '.join(unknown)[:200]}")
        self.data: dict[str, Any] = data

    def fail(self, problem: str) -> NoReturn:
        raise CheckpointError(f"checkpoint {self.path} {problem} — {_RESTART_HINT}")

    def get(self, key: str, kind: Any, value: Any = _ABSENT) -> Any:
        """The value at `key` (or `value`), checked against `kind` (str, bool, int, list, RowId)."""
        value = self.data[key] if value is _ABSENT else value
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if ok and isinstance(value, int) and kind is int and value < 0:
            ok = False
        if not ok:
            expected = _EXPECTED.get(kind, "a string or an integer id")
            self.fail(f"has {key} = {redact(repr(value))[:80]}, expected {expected}")
        return value

    def time(self, key: str) -> datetime:
        raw: str = self.get(key, str)
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            self.fail(f"has {key} = {raw[:40]!r}, expected an ISO 8601 time")
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def optional_time(self, key: str) -> datetime | None:
        """An ISO 8601 time kept to the microsecond, None when absent or null."""
        return None if self.data.get(key) is None else self.time(key)

    def histogram(self, key: str) -> list[int]:
        """Ten counts (deciles); absent from files older releases wrote: zeros then."""
        if key not in self.data:
            return [0] * DECILES
        counts: list[Any] = self.get(key, list)
        if len(counts) != DECILES:
            self.fail(f"has {key} with {len(counts)} counts, expected {DECILES}")
        return [self.get(f"{key}[{i}]", int, count) for i, count in enumerate(counts)]

    def counts(self, key: str) -> dict[str, int] | None:
        """A JSON object of counts (a rescore's paths), None when absent."""
        if key not in self.data:
            return None
        found = self.data[key]
        if not isinstance(found, dict):
            self.fail(f"has {key} = {redact(repr(found))[:80]}, expected an object of counts")
        return {str(name): self.get(f"{key}.{name}", int, count) for name, count in found.items()}

    def order(self, key: str) -> tuple[OrderBy | None, str, OrderCursor | None]:
        """The --order-by and its cursor; absent from files older releases wrote: none."""
        entry = self.data.get(key)
        if entry is None:
            return None, "", None
        if not isinstance(entry, dict) or entry.keys() != {
            "column",
            "descending",
            "type",
            "cursor",
        }:
            self.fail(f"has {key} without exactly column, descending, type and cursor")
        order_by = OrderBy(
            self.get(f"{key}.column", str, entry["column"]),
            self.get(f"{key}.descending", bool, entry["descending"]),
        )
        order_type: str = self.get(f"{key}.type", str, entry["type"])
        cursor = entry["cursor"]
        if cursor is None:
            return order_by, order_type, None
        if not isinstance(cursor, dict) or cursor.keys() != {"phase", "value", "id"}:
            self.fail(f"has {key}.cursor without exactly phase, value and id")
        phase = cursor["phase"]
        is_null = phase == "nulls"
        if phase not in ("values", "nulls") or is_null != (cursor["value"] is None):
            self.fail(f"has {key}.cursor with phase {phase!r} and value {cursor['value']!r}")
        value = None if is_null else self.get(f"{key}.cursor.value", str, cursor["value"])
        row_id = self.get(f"{key}.cursor.id", RowId, cursor["id"])
        return order_by, order_type, OrderCursor(value, row_id)

    def failed_images(self) -> list[FailedImage]:
        images = []
        for index, entry in enumerate(self.get("failedImages", list)):
            key = f"failedImages[{index}]"
            if not isinstance(entry, dict) or not {"id", "url", "error"} <= entry.keys():
                self.fail(f"has {key} without id, url and error")
            if entry.keys() - {"id", "url", "error", "attempts"}:
                self.fail(f"has {key} with unknown keys")
            images.append(
                FailedImage(
                    id=self.get(f"{key}.id", RowId, entry["id"]),
                    url=self.get(f"{key}.url", str, entry["url"]),
                    error=self.get(f"{key}.error", str, entry["error"]),
                    attempts=self.get(f"{key}.attempts", int, entry.get("attempts", 1)),
                )
            )
        return images


def checkpoint_path_for(
    base: Path, *, dry_run: bool, shard: Shard | None, target: Target | None = None
) -> Path:
    """The file for this target and kind of run: x.json (the default table), x.photos.json,
    x.dry-run.json, x.photos.shard-0-of-4.json, …; `target` None is the default table."""
    tag = target_tag(target) if target is not None else None
    tags = (
        ([tag] if tag else [])
        + ([f"shard-{shard.index}-of-{shard.count}"] if shard else [])
        + (["dry-run"] if dry_run else [])
    )
    if not tags:
        return base
    suffix = base.suffix if base.suffix == ".json" else ""
    stem = base.name[: len(base.name) - len(suffix)]
    return base.with_name(".".join([stem, *tags]) + suffix)


def run_checkpoint_path(settings: RunSettings) -> Path:
    """The checkpoint file of a run with these settings (see `checkpoint_path_for`)."""
    return checkpoint_path_for(
        settings.checkpoint_path,
        dry_run=settings.dry_run,
        shard=settings.shard,
        target=settings.target,
    )


# --- load and save ----------------------------------------------------------------------------


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, None when absent; CheckpointError when it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc.strerror or exc} — check the path and permissions"
        ) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} is not UTF-8 text — {_RESTART_HINT}") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"checkpoint {path} is not valid JSON (line {exc.lineno}, column {exc.colno}): "
            f"{exc.msg} — {_RESTART_HINT}"
        ) from exc
    return Checkpoint.from_json(data, path=path)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically (temp file, fsync, rename, fsync dir); the old file survives any failure."""
    text = checkpoint.to_text()
    temp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
        temp_name = None
        _fsync_directory(path.parent)
    except OSError as exc:
        raise CheckpointWriteError(_save_failure_message(path, exc)) from exc
    finally:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_failure_message(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "the disk is full — free some space"
    else:
        advice = f"{exc.strerror or exc} — make sure the directory exists and is writable"
    return (
        f"cannot save checkpoint {path}: {advice}, then resume with --resume "
        "(the previous checkpoint, if any, is unchanged)"
    )
