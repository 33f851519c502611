"""`backfill-quality watch`: score new images as they arrive (LISTEN/NOTIFY plus a poll)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_OK, EXIT_SOME_FAILED, app, error_boundary
from backfill_quality.cli.report_cmd import ReportPath, report_at_end
from backfill_quality.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHECKPOINT,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_FAILED_AFTER_S,
    DEFAULT_TIMEOUT_S,
    RunSettings,
    parse_detector,
    resolve_shard,
    thresholds_with_overrides,
)
from backfill_quality.errors import ConfigError
from backfill_quality.redaction import register_database_secrets

if TYPE_CHECKING:
    from backfill_quality.models import RunSummary
    from backfill_quality.pipeline.progress import Reporter

WATCH_CHECKPOINT = DEFAULT_CHECKPOINT.with_name(".backfill-progress.watch.json")
WATCH_EPILOG = """Examples:

  backfill-quality migrate --watch  # once: adds the NOTIFY trigger

  backfill-quality watch            # score new rows within seconds; Ctrl+C stops it

  backfill-quality watch --poll-interval 10 --notify-url https://hooks.example.com/x \\
      --notify-each-cycle
"""
SCALE_PANEL = "Scale-out"
WATCH_PANEL = "Watch"
ORDER_BY_REFUSED = (
    "--order-by: watch does not take a priority order. It scores rows within seconds of their"
    " insert, so there is no queue to order, and each cycle walks the unscored rows afresh. To"
    " score a backlog newest first, run `backfill-quality run --order-by COLUMN [--descending]`"
    " once, then start watch for the rows that arrive after it"
)


@app.command(epilog=WATCH_EPILOG)
def watch(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    poll_interval: Annotated[
        float,
        typer.Option(
            min=0.01,
            metavar="S",
            envvar="BACKFILL_POLL_INTERVAL",
            help="Look for unscored rows at least this often, seconds (a missed "
            "notification only delays a row by this much).",
            rich_help_panel=WATCH_PANEL,
        ),
    ] = DEFAULT_POLL_INTERVAL_S,
    retry_failed_after: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="S",
            help="Try a failed row again after this many seconds.",
            rich_help_panel=WATCH_PANEL,
        ),
    ] = DEFAULT_RETRY_FAILED_AFTER_S,
    notify_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            envvar="BACKFILL_NOTIFY_URL",
            help="POST a JSON summary here (with --notify-each-cycle: after every cycle "
            "that scored rows).",
            rich_help_panel=WATCH_PANEL,
        ),
    ] = None,
    notify_each_cycle: Annotated[
        bool,
        typer.Option(
            "--notify-each-cycle",
            help="Send the webhook after every cycle that processed rows.",
            rich_help_panel=WATCH_PANEL,
        ),
    ] = False,
    batch_size: o.BatchSize = DEFAULT_BATCH_SIZE,
    concurrency: o.Concurrency = DEFAULT_CONCURRENCY,
    max_concurrency: o.MaxConcurrency = DEFAULT_MAX_CONCURRENCY,
    max_per_host: o.MaxPerHost = None,
    max_rps: o.MaxRps = None,
    timeout: o.Timeout = DEFAULT_TIMEOUT_S,
    max_bytes: o.MaxBytes = DEFAULT_MAX_BYTES,
    retries: o.Retries = DEFAULT_RETRIES,
    deny_private_networks: o.DenyPrivateNetworks = False,
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            envvar="BACKFILL_WATCH_CHECKPOINT",
            metavar="PATH",
            help="Checkpoint of the current cycle (kept apart from `run`'s).",
            dir_okay=False,
        ),
    ] = WATCH_CHECKPOINT,
    order_by: Annotated[
        str | None,
        typer.Option("--order-by", hidden=True, help="Refused: see `run --order-by`."),
    ] = None,
    shard: o.ShardOption = None,
    shard_count: o.ShardCount = None,
    workers: o.Workers = None,
    threshold: o.ThresholdOverrides = None,
    detector: o.DetectorOption = o.DEFAULT_DETECTOR,
    bird_class: o.BirdClass = None,
    report: ReportPath = None,
    verbose: o.Verbose = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Only warnings and one line per cycle.",
            rich_help_panel=o.OUTPUT_PANEL,
        ),
    ] = False,
    json_events: o.JsonEvents = False,
    log_format: o.LegacyLogFormat = None,
    version: o.Version = False,
) -> None:
    """Score new images as they arrive: LISTEN for the insert trigger, poll as a safety net.

    With --report PATH, writes the review report when it stops (SIGTERM, Ctrl+C).
    """
    as_json = o.wants_json(json_events, log_format)
    with error_boundary(verbose=verbose, as_json=as_json):
        if order_by is not None:
            raise ConfigError(ORDER_BY_REFUSED)
        register_database_secrets(database_url)
        # imported here, not at the top: `--help` must not pay for psycopg, httpx, NumPy, rich
        from backfill_quality.cli.reporters import make_reporter
        from backfill_quality.pipeline.notify import NotifySettings, Webhook, summary_payload
        from backfill_quality.pipeline.signals import EXIT_SIGNALS
        from backfill_quality.pipeline.watch import Watcher, WatchSettings

        run_settings = RunSettings(
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
            checkpoint_path=checkpoint,
            workers=workers,
            shard=resolve_shard(shard, shard_count),
        )
        settings = WatchSettings(
            run=run_settings,
            poll_interval_s=poll_interval,
            retry_failed_after_s=retry_failed_after,
        )

        def new_reporter() -> Reporter:
            return make_reporter(
                log_format="json" if as_json else "text",
                verbose=verbose,
                quiet=quiet,
                is_terminal=False,
            )

        new_reporter()  # validates --log-format / --verbose --quiet before anything starts
        webhook = None
        if notify_url and notify_each_cycle:
            webhook = Webhook(NotifySettings(notify_url), warn=new_reporter().warning)
        elif notify_url:
            raise ConfigError(
                "--notify-url: watch never finishes, so it notifies per cycle — add "
                "--notify-each-cycle (only cycles that scored rows send a summary)"
            )

        def on_cycle(number: int, summary: RunSummary) -> None:
            if webhook is not None:
                code = EXIT_SOME_FAILED if summary.failed else EXIT_OK
                if summary.interrupted:
                    code = EXIT_SIGNALS[summary.interrupted]
                payload = summary_payload(
                    summary,
                    exit_code=code,
                    shard=run_settings.shard,
                    event="watch.cycle",
                    cycle=number,
                )
                webhook.send(payload)

        result = Watcher(settings, new_reporter, on_cycle=on_cycle).run()
        if report is not None:
            report_at_end(
                report,
                database_url=database_url,
                target=run_settings.target,
                checkpoint=checkpoint,
                deny_private_networks=deny_private_networks,
                as_json=as_json,
            )
    raise typer.Exit(EXIT_SIGNALS[result.interrupted] if result.interrupted else EXIT_OK)
