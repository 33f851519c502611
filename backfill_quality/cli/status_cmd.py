"""`backfill-quality status`: checkpoints (all shards, dry runs, watch) and the table's scores."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_FATAL, EXIT_OK, app, error_boundary
from backfill_quality.cli.views import print_status
from backfill_quality.pipeline.status import report_status, status_to_dict
from backfill_quality.redaction import register_database_secrets

STATUS_EPILOG = """Examples:

  backfill-quality status                        # progress of every checkpoint, scores by category

  backfill-quality status --exact                # exact counts, even on a huge table (slower)

  backfill-quality status --json | jq .table.distribution
"""


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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: o.Verbose = False,
) -> None:
    """Checkpoint progress (all shards, dry runs, watch) and the score distribution.

    Lists every `<checkpoint stem>*.json` beside --checkpoint with progress, ETA and failures;
    the database part is exact on a table that counts quickly, planner estimates otherwise.
    Exits 1 (after showing the checkpoints) when the database cannot be read.
    """
    with error_boundary(verbose=verbose):
        register_database_secrets(database_url)
        target = o.make_target(table, id_column, url_column, score_column)
        report = report_status(database_url, target, checkpoint, exact=exact)
        if as_json:
            typer.echo(json.dumps(status_to_dict(report), default=str))
        else:
            print_status(report)
    raise typer.Exit(EXIT_FATAL if report.table_problem else EXIT_OK)
