"""`backfill-quality migrate`: apply the SQL files of migrations/ (idempotent)."""

from __future__ import annotations

import typer

from backfill_quality import db
from backfill_quality.cli import options as o
from backfill_quality.cli.app import app, error_boundary
from backfill_quality.config import Target
from backfill_quality.redaction import register_database_secrets

MIGRATE_EPILOG = """Examples:

  DATABASE_URL=postgresql://app@db/prod backfill-quality migrate

  backfill-quality migrate --table photos --id-column photo_id   # + photos_quality_results
"""


@app.command(epilog=MIGRATE_EPILOG)
def migrate(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    verbose: o.Verbose = False,
) -> None:
    """Create the score column, its CHECK, indexes, get_quality_category() and the results
    table — safe to re-run.

    Adds nothing that rewrites the table or holds a long lock; the index of unscored rows is built
    CONCURRENTLY so writers are never blocked. The results table `<table>_quality_results` (what
    each score was made of) is created beside --table, keyed by --id-column.
    """
    with error_boundary(verbose=verbose):
        register_database_secrets(database_url)
        target = Target(table=table, id_column=id_column)
        with db.connect(database_url) as conn:
            applied = db.apply_migrations(conn, on_lock_wait=_say_waiting)
            results = db.create_results_table(conn, target)
        for name in applied:
            typer.echo(f"applied {name}")
        typer.echo(f"results table {db.results_label(target)}: {results}")
        if not applied and results == "already present":
            typer.echo("Database schema is up to date: nothing to apply.")


def _say_waiting(message: str) -> None:
    typer.echo(f"waiting: {message}", err=True)
