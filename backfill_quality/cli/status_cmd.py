"""`backfill-quality status`: checkpoints (all shards, dry runs, watch) and the table's scores."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from backfill_quality import config
from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_OK, app, error_boundary
from backfill_quality.redaction import register_database_secrets

STATUS_EPILOG = """Examples:

  backfill-quality status                        # progress of every checkpoint, scores by category

  backfill-quality status --exact                # exact counts, even on a huge table (slower)

  backfill-quality status --json | jq .table.distribution

  backfill-quality status --trend                # quality per week of scoring, and why it moved

  backfill-quality status --trend --by created_at --every month --periods 24
"""
TREND_PANEL = "Trend"


@app.command(epilog=STATUS_EPILOG)
def status(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    checkpoint: o.CheckpointPath = o.DEFAULT_CHECKPOINT,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="Count every row exactly (a full scan); by default a big table is estimated.",
        ),
    ] = False,
    trend: Annotated[
        bool,
        typer.Option(
            "--trend",
            help="Also show quality per period: category shares, mean score, each check's pass"
            " rate, and the check whose pass rate moved most (needs the results table).",
            rich_help_panel=TREND_PANEL,
        ),
    ] = False,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            metavar="scored_at|COLUMN",
            help="What dates a row for --trend (implies it): scored_at (when it was scored, the"
            " default) or a date or timestamp column of the table, such as created_at.",
            show_default=False,
            rich_help_panel=TREND_PANEL,
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            metavar="day|week|month",
            help="The --trend period (implies it): UTC calendar days, ISO weeks from Monday"
            f" or months (default {config.DEFAULT_TREND_EVERY}).",
            show_default=False,
            rich_help_panel=TREND_PANEL,
        ),
    ] = None,
    periods: Annotated[
        int | None,
        typer.Option(
            "--periods",
            min=1,
            metavar="N",
            help="--trend shows the last N periods (implies it), up to the latest that has"
            f" scored rows (default {config.DEFAULT_TREND_PERIODS}).",
            show_default=False,
            rich_help_panel=TREND_PANEL,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="The report as one JSON object on stdout (errors as JSON on stderr).",
            rich_help_panel=o.OUTPUT_PANEL,
        ),
    ] = False,
    verbose: o.Verbose = False,
    version: o.Version = False,
) -> None:
    """Checkpoint progress (all shards, dry runs, watch) and the score distribution.

    Lists every checkpoint beside --checkpoint that shares its stem (`.backfill-progress*.json`)
    with progress, ETA and failures; the database part is exact on a table that counts quickly,
    planner estimates otherwise.

    With --trend, also the results table per day, week or month (--every) of scored_at or of a
    date column of the table (--by): rows, mean score and category shares with a chart, each
    check's pass rate, and the check whose pass rate moved most between the first and last period.

    When the table cannot be read it still shows the checkpoints, then exits 2 for an option to
    fix (a malformed --database-url, an unknown table or column, a bad --by, no results table
    for --trend) or 1 when the database failed.
    """
    with error_boundary(verbose=verbose, as_json=as_json):
        register_database_secrets(database_url)
        from backfill_quality.cli.views import print_status  # rich, psycopg: not for --help
        from backfill_quality.pipeline.status import report_status, status_to_dict
        from backfill_quality.pipeline.trend import TrendRequest

        target = o.make_target(table, id_column, url_column, score_column)
        is_trend = trend or by is not None or every is not None or periods is not None
        request = (
            TrendRequest(
                by or config.TREND_BY_SCORED_AT,
                every or config.DEFAULT_TREND_EVERY,
                periods or config.DEFAULT_TREND_PERIODS,
            )
            if is_trend
            else None
        )
        if request is not None:
            request.check()  # a bad --every stops here, before anything is read
        report = report_status(database_url, target, checkpoint, exact=exact, trend=request)
        if as_json:
            typer.echo(json.dumps(status_to_dict(report), default=str))
        else:
            print_status(report)
    raise typer.Exit(report.exit_code or EXIT_OK)
