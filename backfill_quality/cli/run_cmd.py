"""`backfill-quality run`: the backfill itself."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, app, error_boundary
from backfill_quality.cli.report_cmd import ReportPath, report_at_end
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
from backfill_quality.errors import BackfillError
from backfill_quality.redaction import register_database_secrets

if TYPE_CHECKING:
    from backfill_quality.models import RunSummary

RUN_EPILOG = """Examples:

  backfill-quality run --dry-run --limit 200     # try it: fetch and score, write nothing

  backfill-quality run                            # the real run (Ctrl+C saves and stops)

  backfill-quality run --resume                   # continue after an interruption

  backfill-quality run --concurrency 1 --batch-size 10 --delay 3000   # the original's pace

  backfill-quality run --order-by created_at --descending   # the newest images first
"""


def exit_code_for(summary: RunSummary) -> int:
    """130/143 after a signal, 3 when rows failed, else 0."""
    if summary.interrupted is not None:
        from backfill_quality.pipeline.signals import EXIT_SIGNALS  # asyncio: not for --help

        return EXIT_SIGNALS[summary.interrupted]
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


@app.command(epilog=RUN_EPILOG)
def run(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    batch_size: o.BatchSize = DEFAULT_BATCH_SIZE,
    delay: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="MS",
            envvar="BACKFILL_DELAY_MS",
            help="Pause between pages, in milliseconds (politeness).",
        ),
    ] = 0,
    concurrency: o.Concurrency = DEFAULT_CONCURRENCY,
    max_concurrency: o.MaxConcurrency = DEFAULT_MAX_CONCURRENCY,
    max_per_host: o.MaxPerHost = None,
    max_rps: o.MaxRps = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Fetch and score, write nothing to the database (and take no lock).",
        ),
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint.")] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over, replacing an unfinished checkpoint.")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Resume, first trying again the rows that failed (from the checkpoint).",
        ),
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
    order_by: o.OrderByOption = None,
    descending: o.Descending = False,
    shard: o.ShardOption = None,
    shard_count: o.ShardCount = None,
    workers: o.Workers = None,
    threshold: o.ThresholdOverrides = None,
    detector: o.DetectorOption = o.DEFAULT_DETECTOR,
    bird_class: o.BirdClass = None,
    notify_url: o.NotifyUrl = None,
    report: ReportPath = None,
    verbose: o.Verbose = False,
    quiet: o.Quiet = False,
    json_events: o.JsonEvents = False,
    log_format: o.LegacyLogFormat = None,
    version: o.Version = False,
) -> None:
    """Score every image whose score is NULL and write the score back, page by page.

    One run per table at a time: a second one (not a dry run) exits 4, naming the first.
    With --report PATH, a run that was not interrupted ends by writing the review report.
    """
    as_json = o.wants_json(json_events, log_format)
    with error_boundary(verbose=verbose, as_json=as_json):
        register_database_secrets(database_url)
        # imported here, not at the top: `--help` must not pay for psycopg, httpx, NumPy, rich
        from backfill_quality.cli.reporters import make_reporter
        from backfill_quality.pipeline.notify import (
            NotifySettings,
            Webhook,
            notify_run_end,
            notify_run_failure,
        )
        from backfill_quality.pipeline.runner import Runner

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
            delay_ms=delay,
            dry_run=dry_run,
            resume=resume,
            restart=restart,
            retry_failed=retry_failed,
            checkpoint_path=checkpoint,
            limit=limit,
            workers=workers,
            shard=resolve_shard(shard, shard_count),
            order_by=o.make_order(order_by, descending),
        )
        notify = NotifySettings(notify_url) if notify_url else None
        reporter = make_reporter(
            log_format="json" if as_json else "text", verbose=verbose, quiet=quiet
        )
        webhook = Webhook(notify, warn=reporter.warning, run=settings) if notify else None
        started_s = time.monotonic()
        try:
            summary = Runner(settings, reporter).run()
            reporter.finish(summary)
            notify_run_end(webhook, summary, exit_code=exit_code_for(summary))
        except BackfillError as exc:
            notify_run_failure(webhook, exc, elapsed_s=time.monotonic() - started_s)
            raise
        finally:
            reporter.close()
        code = exit_code_for(summary)
        if report is not None and summary.interrupted is None:
            written = report_at_end(
                report,
                database_url=database_url,
                target=settings.target,
                checkpoint=checkpoint,
                deny_private_networks=deny_private_networks,
                as_json=as_json,
            )
            code = code if written is not None else max(code, EXIT_FATAL)
    raise typer.Exit(code)
