"""`backfill-quality status`: checkpoints and the table's score distribution."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import app, error_boundary
from backfill_quality.config import Target
from backfill_quality.redaction import register_database_secrets
from backfill_quality.status import StatusReport, find_checkpoints, status_to_dict, table_stats
from backfill_quality.views import print_status


@app.command(epilog="Example:\n\n  backfill-quality status --json | jq .table.distribution")
def status(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    checkpoint: o.CheckpointPath = o.DEFAULT_CHECKPOINT,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: o.Verbose = False,
) -> None:
    """Checkpoint progress (all shards, dry runs) and the score distribution in the database."""
    with error_boundary(verbose=verbose):
        register_database_secrets(database_url)
        target = Target(
            table=table, id_column=id_column, url_column=url_column, score_column=score_column
        )
        report = StatusReport(
            checkpoints=find_checkpoints(checkpoint),
            table=table_stats(database_url, target),
        )
        if as_json:
            typer.echo(json.dumps(status_to_dict(report), default=str))
        else:
            print_status(report)
