"""`backfill-quality migrate`: apply the SQL files of migrations/ (idempotent)."""

from __future__ import annotations

from typing import Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import app, error_boundary
from backfill_quality.errors import ConfigError
from backfill_quality.redaction import register_database_secrets


@app.command(epilog="Example:\n\n  DATABASE_URL=postgresql://app@db/prod backfill-quality migrate")
def migrate(
    database_url: o.DatabaseUrl = "",
    verbose: o.Verbose = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print nothing but errors.", rich_help_panel=o.OUTPUT_PANEL
        ),
    ] = False,
    version: o.Version = False,
) -> None:
    """Create the score column, its CHECK, indexes and get_quality_category() — safe to re-run.

    Adds nothing that rewrites the table or holds a long lock; the index of unscored rows is built
    CONCURRENTLY so writers are never blocked.
    """
    with error_boundary(verbose=verbose):
        if verbose and quiet:
            raise ConfigError("--verbose and --quiet cannot be used together")
        register_database_secrets(database_url)
        from backfill_quality import db  # psycopg: not for --help

        with db.connect(database_url) as conn:
            applied = db.apply_migrations(conn, on_lock_wait=_ignore if quiet else _say_waiting)
        if quiet:
            return
        if applied:
            for name in applied:
                typer.echo(f"applied {name}")
        else:
            typer.echo("Database schema is up to date: nothing to apply.")


def _say_waiting(message: str) -> None:
    typer.echo(f"waiting: {message}", err=True)


def _ignore(message: str) -> None:
    pass
