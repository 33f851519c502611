"""Where a run starts: a new checkpoint, a resumed one, or a refusal with advice; the rows left."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfill_quality import db
from backfill_quality.config import RunSettings
from backfill_quality.errors import CheckpointError, ConfigError
from backfill_quality.pipeline.checkpoint import Checkpoint, load_checkpoint, run_checkpoint_path
from backfill_quality.pipeline.target import describe_order, describe_target, make_fingerprint


@dataclass(frozen=True, slots=True)
class RunStart:
    """Where a run starts: its checkpoint and file, its shard's key range, the rows left."""

    checkpoint: Checkpoint
    path: Path
    id_range: db.IdRange | None
    left: int
    """Unscored rows after the checkpoint's mark (in the shard), whatever --limit says."""
    notes: tuple[str, ...] = ()
    """What the user should know about the start (a replaced dry-run checkpoint)."""
    warnings: tuple[str, ...] = ()
    """What may go wrong later (a dry run without the results table, no index for the order)."""
    order: db.PageOrder | None = None
    """--order-by, checked: the order the pages are read in (None: key order)."""


def prepare_run(conn: Any, s: RunSettings) -> RunStart:
    """Check the target, choose the checkpoint (new, resumed or refused), count the rows left."""
    id_type = db.check_target(conn, s.target)
    order = db.check_order(conn, s.target, s.order_by) if s.order_by else None
    warnings: tuple[str, ...] = ()
    if not s.dry_run:
        db.require_results_table(conn, s.target)  # before the checkpoint: nothing to undo
    elif not db.has_results_table(conn, s.target):
        warnings = (
            f"the results table {db.results_label(s.target)} does not exist: this dry run "
            "writes nothing anyway, but a real run will refuse to start until "
            "`backfill-quality migrate` has created it",
        )
    database = db.describe_database(conn)
    fingerprint = make_fingerprint(
        database=database, target=s.target, shard=s.shard, order_by=s.order_by
    )
    path = run_checkpoint_path(s)
    description = describe_target(
        database=database, target=s.target, shard=s.shard, order_by=s.order_by
    )
    replaced = _replaced_dry_run(s, path)
    checkpoint = prepare_checkpoint(s, path, fingerprint, description)
    id_range = db.key_range_for_shard(conn, s.target, id_type, s.shard) if s.shard else None
    if order is not None:
        _check_order_type(checkpoint, order, path)
        if not db.has_order_index(conn, s.target, order, id_range):
            warnings += (db.slow_order_warning(s.target, order),)
    mark = checkpoint.cursor
    if checkpoint.failed_images:
        # rows that failed past the mark are met again: count them once, when they are
        ids = [f.id for f in checkpoint.failed_images]
        past = (
            set(ids)
            if mark is None
            else db.ids_after(conn, s.target, ids, mark, id_type=id_type, order=order)
        )
        checkpoint.forget_failures(past)
    left = db.count_unscored(conn, s.target, after_id=mark, id_range=id_range, order=order)
    checkpoint.total = checkpoint.processed + left  # every row left: --limit is shown apart
    checkpoint.finished = False
    notes = (replaced,) if replaced else ()
    return RunStart(checkpoint, path, id_range, left, notes, warnings, order)


def _check_order_type(checkpoint: Checkpoint, order: db.PageOrder, path: Path) -> None:
    """Keep the order column's type with the checkpoint; refuse a cursor of another type."""
    if checkpoint.order_type and checkpoint.order_type != order.sql_type:
        raise CheckpointError(
            f"checkpoint {path}: the --order-by column {order.column!r} had type "
            f"{checkpoint.order_type} when the run started and has type {order.sql_type} now, "
            "so its cursor cannot be trusted — use --restart to start over in the new order"
        )
    checkpoint.order_type = order.sql_type


def _replaced_dry_run(settings: RunSettings, path: Path) -> str | None:
    """The note when a new dry run replaces an unfinished one's checkpoint, else None."""
    if not settings.dry_run or settings.resume or settings.retry_failed or settings.restart:
        return None
    try:
        existing = load_checkpoint(path)
    except CheckpointError:
        return f"replacing the unreadable dry-run checkpoint {path}"
    if existing is None or existing.finished:
        return None
    return (
        f"replacing the earlier dry run's checkpoint {path} ({existing.processed} of "
        f"{existing.total} rows); --dry-run --resume would have continued it"
    )


def prepare_checkpoint(
    settings: RunSettings, path: Path, fingerprint: str, description: str
) -> Checkpoint:
    """The checkpoint to start from, refusing to silently overwrite an unfinished run.

    `description` names the target for people (host/db table(columns) shard), never a password.
    """
    checkpoint = _choose(settings, path, fingerprint, description)
    checkpoint.target = description
    return checkpoint


def _choose(settings: RunSettings, path: Path, fingerprint: str, description: str) -> Checkpoint:
    shard = str(settings.shard) if settings.shard else None
    fresh = Checkpoint(
        fingerprint=fingerprint,
        dry_run=settings.dry_run,
        shard=shard,
        detector=str(settings.detector),
        order_by=settings.order_by,
    )
    if settings.restart:
        return fresh
    if settings.dry_run and not (settings.resume or settings.retry_failed):
        # a dry run wrote nothing: its checkpoint is a report, and never in the next one's way
        return fresh
    existing = load_checkpoint(path)
    if settings.retry_failed:
        return _for_retry(existing, settings, path, fingerprint, description)
    if settings.resume:
        if existing is None:
            raise ConfigError(
                f"--resume: there is no checkpoint at {path} to resume from. "
                "Run without --resume to start a new backfill (or name the file with --checkpoint)."
            )
        _check_same_run(existing, settings, path, fingerprint, description)
        return existing
    if existing is not None and not existing.finished and existing.order_by != settings.order_by:
        again = " ".join(existing.order_by.cli_options()) if existing.order_by else "no --order-by"
        raise ConfigError(
            f"an unfinished run's checkpoint in {describe_order(existing.order_by)} exists at "
            f"{path}; this run asks for {describe_order(settings.order_by)}. Add --resume with "
            f"{again} to continue it, or --restart to start over in the new order."
        )
    if existing is not None and not existing.finished and existing.fingerprint != fingerprint:
        raise ConfigError(
            f"an unfinished run's checkpoint for another target exists at {path} "
            f"({existing.target or 'fingerprint ' + existing.fingerprint}). "
            "Name another file with --checkpoint, or --restart to replace it."
        )
    if existing is not None and not existing.finished:
        raise ConfigError(
            f"an unfinished run's checkpoint exists at {path} "
            f"({existing.processed} of {existing.total} rows processed, "
            f"last id {existing.last_processed_id}). "
            "Add --resume to continue it, or --restart to start over and replace it."
        )
    return fresh


def _for_retry(
    existing: Checkpoint | None,
    settings: RunSettings,
    path: Path,
    fingerprint: str,
    description: str,
) -> Checkpoint:
    """--retry-failed: walk the unscored rows again from the start of the key space.

    Scored rows are not NULL any more, so the walk meets exactly the rows that failed before
    and those never reached; the failures are forgotten and recorded afresh if they fail again.
    """
    if existing is None:
        raise ConfigError(
            f"--retry-failed: there is no checkpoint at {path} whose failures could be retried. "
            "A new run (without --resume) tries every unscored row anyway."
        )
    _check_same_run(existing, settings, path, fingerprint, description)
    retried = len(existing.failed_images)
    existing.processed -= retried
    existing.failed -= retried
    existing.failed_images = []
    existing.cursor = None
    existing.finished = False
    return existing


def _check_same_run(
    existing: Checkpoint, settings: RunSettings, path: Path, fingerprint: str, description: str
) -> None:
    if existing.order_by != settings.order_by:
        theirs, ours = existing.order_by, settings.order_by
        again = " ".join(theirs.cli_options()) if theirs else "no --order-by"
        raise CheckpointError(
            f"checkpoint {path} was written by a run in {describe_order(theirs)}; this run asks"
            f" for {describe_order(ours)}, and the checkpoint's cursor only means something in"
            f" its own order — resume with {again}, or --restart to start over in the new order"
        )
    check_resumable(
        existing,
        fingerprint=fingerprint,
        dry_run=settings.dry_run,
        path=path,
        target_description=description,
        detector=str(settings.detector),
    )


def check_resumable(
    checkpoint: Checkpoint,
    *,
    fingerprint: str,
    dry_run: bool,
    path: Path,
    target_description: str = "",
    detector: str | None = None,
) -> None:
    """Refuse to resume a checkpoint written for another target, another kind of run, or
    (when `detector` is given) with another detector: one table would mix two scorers."""
    if checkpoint.fingerprint != fingerprint:
        theirs = checkpoint.target or f"fingerprint {checkpoint.fingerprint}"
        ours = target_description or f"fingerprint {fingerprint}"
        raise CheckpointError(
            f"checkpoint {path} was written for another target: {theirs}; this run targets "
            f"{ours} — use another --checkpoint or --restart"
        )
    if checkpoint.dry_run != dry_run:
        kind = "a dry run" if checkpoint.dry_run else "a real run"
        raise CheckpointError(
            f"checkpoint {path} belongs to {kind}; this is "
            f"{'a dry run' if dry_run else 'a real run'} — use another --checkpoint or --restart"
        )
    if detector is not None and checkpoint.detector != detector:
        raise CheckpointError(
            f"checkpoint {path} was written by a run with --detector {checkpoint.detector}; this "
            f"run uses --detector {detector}, and one table would hold scores of both — resume "
            f"with --detector {checkpoint.detector}, or --restart to score from the start"
        )
