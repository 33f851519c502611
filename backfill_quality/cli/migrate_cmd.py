"""`backfill-quality migrate`: the score column, its CHECK, indexes, the results table (and, on
request, the watch triggers) for the target table; each step says what it did. Safe to re-run."""

from __future__ import annotations

from typing import Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import app, error_boundary
from backfill_quality.errors import ConfigError
from backfill_quality.redaction import register_database_secrets

MIGRATE_EPILOG = """Examples:

  DATABASE_URL=postgresql://app@db/prod backfill-quality migrate

  backfill-quality migrate --table media.photos --url-column src --score-column quality

  backfill-quality migrate --watch --sql     # print what it would run, change nothing

  backfill-quality migrate --order-by created_at --descending   # the index of `run --order-by`
"""


@app.command(epilog=MIGRATE_EPILOG)
def migrate(
    database_url: o.DatabaseUrl = "",
    table: Annotated[
        str | None,
        typer.Option(
            "--table",
            metavar="NAME",
            help="Table holding the images: TABLE or SCHEMA.TABLE, found through the "
            "search_path like any SQL name. Not given: `images`, created for the demo only "
            "when no table of that name exists.",
            show_default=False,
            rich_help_panel=o.DB_PANEL,
        ),
    ] = None,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Also install the triggers `watch` listens to: NOTIFY on insert, and a "
            "changed url resets the score.",
        ),
    ] = False,
    order_by: Annotated[
        str | None,
        typer.Option(
            "--order-by",
            metavar="COLUMN",
            help="Also create the partial index of the unscored rows in this column's order "
            "(step order-index), which `run --order-by COLUMN` reads.",
            show_default=False,
        ),
    ] = None,
    descending: Annotated[
        bool,
        typer.Option("--descending", help="With --order-by: the index for `run --descending`."),
    ] = False,
    as_sql: Annotated[
        bool,
        typer.Option("--sql", help="Print the SQL statements it would run; change nothing."),
    ] = False,
    verbose: o.Verbose = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print nothing but errors.", rich_help_panel=o.OUTPUT_PANEL
        ),
    ] = False,
    version: o.Version = False,
) -> None:
    """Create the score column, its CHECK, indexes, get_quality_category() and the results
    table (TABLE_quality_results) — safe to re-run. With --order-by, the index of that order.

    Each step says what it did: created, already present, or skipped. Nothing rewrites the table
    or holds a long lock; the indexes are built CONCURRENTLY so writers are never blocked. A step
    that cannot complete (scores outside 0-100) stops migrate before it changes anything.
    """
    with error_boundary(verbose=verbose):
        if verbose and quiet:
            raise ConfigError("--verbose and --quiet cannot be used together")
        register_database_secrets(database_url)
        target = o.make_target(table or o.DEFAULT_TABLE, id_column, url_column, score_column)
        order = o.make_order(order_by, descending)
        from backfill_quality import db  # psycopg: not for --help

        with db.connect(database_url) as conn:
            if as_sql:
                plans = db.plan_migration(
                    conn, target, may_create_table=table is None, with_watch=watch, order_by=order
                )
                typer.echo(db.render_sql(conn, target, plans), nl=False)
                return
            plans = db.migrate(
                conn,
                target,
                may_create_table=table is None,
                with_watch=watch,
                on_lock_wait=_ignore if quiet else _say_waiting,
                order_by=order,
            )
        if quiet:
            return
        width = max(len(plan.step) for plan in plans) + 1
        for plan in plans:
            typer.echo(f"{plan.step + ':':<{width}} {plan.outcome} — {plan.detail}")


def _say_waiting(message: str) -> None:
    typer.echo(f"waiting: {message}", err=True)


def _ignore(message: str) -> None:
    pass
