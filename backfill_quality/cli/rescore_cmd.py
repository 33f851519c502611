"""`backfill-quality rescore`: refresh the scores of rows scored by another scorer version."""

from __future__ import annotations

from typing import Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import app, error_boundary
from backfill_quality.cli.run_cmd import exit_code_for
from backfill_quality.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    RunSettings,
    parse_detector,
    resolve_shard,
    thresholds_with_overrides,
)
from backfill_quality.redaction import register_database_secrets

RESCORE_EPILOG = """Examples:

  backfill-quality rescore --dry-run          # how many rows are stale, and which need a download

  backfill-quality rescore --threshold min_pixels=200000   # after a threshold change: no download

  backfill-quality rescore --where "r.category = 'low'"    # only the stale rows scored low

  backfill-quality rescore --all --where "t.created_at >= '2024-01-01'"   # every scored row
"""


@app.command(epilog=RESCORE_EPILOG)
def rescore(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    every_row: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Every scored row, not only those whose scorer version is not the current one.",
        ),
    ] = False,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            metavar="SQL",
            help="Only rows where this boolean SQL holds; t. is your table, r. its results "
            "table (NULL for rows scored without a result), e.g. \"r.category = 'low'\".",
        ),
    ] = None,
    batch_size: o.BatchSize = DEFAULT_BATCH_SIZE,
    concurrency: o.Concurrency = DEFAULT_CONCURRENCY,
    max_concurrency: o.MaxConcurrency = DEFAULT_MAX_CONCURRENCY,
    max_per_host: o.MaxPerHost = None,
    max_rps: o.MaxRps = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Count what would be recomputed and what fetched; no request, no write, no lock.",
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the rescore's checkpoint.")
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over, replacing an unfinished checkpoint.")
    ] = False,
    checkpoint: o.CheckpointPath = o.DEFAULT_CHECKPOINT,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Stop after this many rows (Total still counts every row left).",
        ),
    ] = None,
    timeout: o.Timeout = DEFAULT_TIMEOUT_S,
    max_bytes: o.MaxBytes = DEFAULT_MAX_BYTES,
    retries: o.Retries = DEFAULT_RETRIES,
    deny_private_networks: o.DenyPrivateNetworks = False,
    shard: o.ShardOption = None,
    shard_count: o.ShardCount = None,
    workers: o.Workers = None,
    threshold: o.ThresholdOverrides = None,
    detector: o.DetectorOption = o.DEFAULT_DETECTOR,
    bird_class: o.BirdClass = None,
    verbose: o.Verbose = False,
    quiet: o.Quiet = False,
    json_events: o.JsonEvents = False,
    version: o.Version = False,
) -> None:
    """Score again the scored rows whose scorer version is not the current one (and those
    scored without a result), downloading as little as possible.

    Recomputes from the stored measurements when only thresholds or formulas changed; else sends
    a conditional GET and reuses results by content hash. Its own checkpoint
    (x.rescore.json); the same lock as run (exit 4 while one runs on the table).
    """
    with error_boundary(verbose=verbose, as_json=json_events):
        register_database_secrets(database_url)
        # imported here, not at the top: `--help` must not pay for psycopg, httpx, NumPy, rich
        from backfill_quality.cli.reporters import make_reporter
        from backfill_quality.pipeline.rescore import RescoreOptions, RescoreRunner

        settings = RunSettings(
            database_url=database_url,
            target=o.make_target(table, id_column, url_column, score_column),
            fetch=o.make_fetch_settings(
                timeout=timeout,
                max_bytes=max_bytes,
                retries=retries,
                max_rps=max_rps,
                concurrency=concurrency,
                max_concurrency=max_concurrency,
                max_per_host=max_per_host,
                deny_private_networks=deny_private_networks,
            ),
            thresholds=thresholds_with_overrides(threshold or []),
            detector=parse_detector(detector, bird_class),
            batch_size=batch_size,
            dry_run=dry_run,
            resume=resume,
            restart=restart,
            checkpoint_path=checkpoint,
            limit=limit,
            workers=workers,
            shard=resolve_shard(shard, shard_count),
        )
        options = RescoreOptions(is_all=every_row, where=where)
        reporter = make_reporter(
            log_format="json" if json_events else "text", verbose=verbose, quiet=quiet
        )
        try:
            summary = RescoreRunner(settings, reporter, options).run()
            reporter.finish(summary)
        finally:
            reporter.close()
    raise typer.Exit(exit_code_for(summary))
