"""`backfill-quality report`: the review report, one self-contained HTML file."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_OK, app, error_boundary, fail
from backfill_quality.config import DEFAULT_MAX_BYTES, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S
from backfill_quality.redaction import register_database_secrets

if TYPE_CHECKING:
    from backfill_quality.config import Target

DEFAULT_REPORT = Path("quality-report.html")
DEFAULT_PER_GALLERY = 12  # report/build.py's default (not imported: --help stays light)
DEFAULT_THUMBNAIL_CONCURRENCY = 8

REPORT_EPILOG = """Examples:

  backfill-quality report                          # quality-report.html in this folder

  backfill-quality report --out /tmp/r.html --no-thumbnails   # quick, links the originals

  backfill-quality report --json | jq .categories
"""

ReportOut = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="PATH",
        dir_okay=False,
        help="Where to write the HTML file (replaced atomically).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]
NoThumbnails = Annotated[
    bool,
    typer.Option(
        "--no-thumbnails",
        help="Link the original images instead of embedding thumbnails (no image is fetched).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]
PerGallery = Annotated[
    int,
    typer.Option(
        "--per-gallery",
        min=1,
        max=500,
        metavar="N",
        help="Images in each gallery (lowest scores, a sample per category, per failed check).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]

TrendBy = Annotated[
    str | None,
    typer.Option(
        "--by",
        metavar="COLUMN",
        help="The trend's time: scored_at (when each image was scored, the default) or a date or"
        " timestamp column of the table (e.g. created_at).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]
TrendEvery = Annotated[
    str,
    typer.Option(
        "--every",
        metavar="day|week|month",
        help="The trend's period (calendar periods in UTC).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]
ReportPath = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="PATH",
        dir_okay=False,
        help="At the end, write the review report there (as `backfill-quality report --out`).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]


def write_report(
    *,
    database_url: str,
    target: Target,
    out: Path,
    checkpoint: Path,
    has_thumbnails: bool = True,
    per_gallery: int = DEFAULT_PER_GALLERY,
    deny_private_networks: bool = False,
) -> dict[str, object]:
    """Build the report (the library call of report, run --report, watch --report, demo)."""
    from backfill_quality.config import FetchSettings
    from backfill_quality.report.build import ReportSettings, build_report

    settings = ReportSettings(
        database_url=database_url,
        target=target,
        out=out,
        checkpoint=checkpoint,
        has_thumbnails=has_thumbnails,
        per_gallery=per_gallery,
        fetch=FetchSettings(
            concurrency=DEFAULT_THUMBNAIL_CONCURRENCY, deny_private_networks=deny_private_networks
        ),
    )
    return build_report(settings).figures


def report_at_end(
    out: Path,
    *,
    database_url: str,
    target: Target,
    checkpoint: Path,
    deny_private_networks: bool = False,
    as_json: bool = False,
    says_where: bool = True,
) -> str | None:
    """`run --report`, `watch --report`, the demo: write the report, say where (a JSON event with
    --json; no line without it when `says_where` is False: the caller names it), or why not; its
    absolute path, None when it could not be written (the work before it stands)."""
    from backfill_quality.errors import BackfillError

    try:
        figures = write_report(
            database_url=database_url,
            target=target,
            out=out,
            checkpoint=checkpoint,
            deny_private_networks=deny_private_networks,
        )
    except BackfillError as exc:
        fail(f"the report was not written: {exc}", as_json=as_json)
        return None
    path = str(figures["path"])
    if as_json:
        event = {"event": "report", "ts": datetime.now(UTC).isoformat(), "path": path}
        print(json.dumps(event | {"bytes": figures["bytes"]}), file=sys.stderr)
    elif says_where:
        print(f"Report written: {path}", file=sys.stderr)
    return path


@app.command(epilog=REPORT_EPILOG)
def report(
    database_url: o.DatabaseUrl = "",
    table: o.Table = o.DEFAULT_TABLE,
    id_column: o.IdColumn = o.DEFAULT_ID_COLUMN,
    url_column: o.UrlColumn = o.DEFAULT_URL_COLUMN,
    score_column: o.ScoreColumn = o.DEFAULT_SCORE_COLUMN,
    checkpoint: o.CheckpointPath = o.DEFAULT_CHECKPOINT,
    out: ReportOut = DEFAULT_REPORT,
    no_thumbnails: NoThumbnails = False,
    per_gallery: PerGallery = DEFAULT_PER_GALLERY,
    by: TrendBy = None,
    every: TrendEvery = "week",
    timeout: o.Timeout = DEFAULT_TIMEOUT_S,
    max_bytes: o.MaxBytes = DEFAULT_MAX_BYTES,
    retries: o.Retries = DEFAULT_RETRIES,
    deny_private_networks: o.DenyPrivateNetworks = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the path and the figures as one JSON object on stdout.",
            rich_help_panel=o.OUTPUT_PANEL,
        ),
    ] = False,
    verbose: o.Verbose = False,
    version: o.Version = False,
) -> None:
    """Write the review report: one self-contained HTML file from the results table.

    Headline counts, the score histogram, categories and each check's pass rate, galleries
    (lowest scores, a sample of each category and of each failed check) with thumbnails and the
    stored box drawn over them, filters, and the failed rows by reason (from the checkpoints
    beside --checkpoint). Opens from a file:// path, with no network. Reads only.
    """
    with error_boundary(verbose=verbose, as_json=as_json):
        register_database_secrets(database_url)
        from backfill_quality.config import FetchSettings
        from backfill_quality.report.build import ReportSettings, build_report

        settings = ReportSettings(
            database_url=database_url,
            target=o.make_target(table, id_column, url_column, score_column),
            out=out,
            checkpoint=checkpoint,
            has_thumbnails=not no_thumbnails,
            per_gallery=per_gallery,
            by=by,
            every=every,
            fetch=FetchSettings(
                timeout_s=timeout,
                max_bytes=max_bytes,
                retries=retries,
                concurrency=DEFAULT_THUMBNAIL_CONCURRENCY,
                deny_private_networks=deny_private_networks,
            ),
        )
        built = build_report(settings)
        if as_json:
            typer.echo(json.dumps(built.figures, default=str))
        else:
            figures = built.figures
            typer.echo(
                f"Report written: {built.path.resolve()} ({figures['bytes']:,} bytes,"
                f" {figures['results']:,} results, {figures['buildSeconds']} s)"
            )
    raise typer.Exit(EXIT_OK)
