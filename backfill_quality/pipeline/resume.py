"""Choosing the checkpoint a run starts from: a new one, a resumed one, or a refusal with advice."""

from __future__ import annotations

from pathlib import Path

from backfill_quality.config import RunSettings
from backfill_quality.errors import CheckpointError, ConfigError
from backfill_quality.pipeline.checkpoint import Checkpoint, load_checkpoint


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
    fresh = Checkpoint(fingerprint=fingerprint, dry_run=settings.dry_run, shard=shard)
    if settings.restart:
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
        check_resumable(
            existing,
            fingerprint=fingerprint,
            dry_run=settings.dry_run,
            path=path,
            target_description=description,
        )
        return existing
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
    check_resumable(
        existing,
        fingerprint=fingerprint,
        dry_run=settings.dry_run,
        path=path,
        target_description=description,
    )
    retried = len(existing.failed_images)
    existing.processed -= retried
    existing.failed -= retried
    existing.failed_images = []
    existing.last_processed_id = None
    existing.finished = False
    return existing


def check_resumable(
    checkpoint: Checkpoint,
    *,
    fingerprint: str,
    dry_run: bool,
    path: Path,
    target_description: str = "",
) -> None:
    """Refuse to resume a checkpoint written for another target or another kind of run."""
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
