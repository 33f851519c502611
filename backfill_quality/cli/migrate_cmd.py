"""`backfill-quality migrate`: apply the SQL files of migrations/ (idempotent)."""

from __future__ import annotations

import typer

from backfill_quality import db
from backfill_quality.cli import options as o
from backfill_quality.cli.app import app, error_boundary
from backfill_quality.redaction import register_database_secrets


@app.command(epilog="Example:\n\n  DATABASE_URL=postgresql://app@db/prod backfill-quality migrate")
def migrate(database_url: o.DatabaseUrl = "", verbose: o.Verbose = False) -> None:
    """Create the score column, its CHECK, indexes and get_quality_category() — safe to re-run.

    Adds nothing that rewrites the table or holds a long lock; the index of unscored rows is built
    CONCURRENTLY so writers are never blocked.
    """
    with error_boundary(verbose=verbose):
        register_database_secrets(database_url)
        with db.connect(database_url) as conn:
            applied = db.apply_migrations(conn, on_lock_wait=_say_waiting)
        if applied:
            for name in applied:
                typer.echo(f"applied {name}")
        else:
            typer.echo("Database schema is up to date: nothing to apply.")


def _say_waiting(message: str) -> None:
    typer.echo(f"waiting: {message}", err=True)
