"""`backfill-quality demo`: the whole product on an embedded database, no set-up, no internet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_FATAL, EXIT_OK, app, error_boundary
from backfill_quality.cli.report_cmd import report_at_end
from backfill_quality.cli.run_cmd import exit_code_for
from backfill_quality.config import DEFAULT_DEMO_ROWS, RunSettings, Target

DEMO_REPORT_NAME = "backfill-quality-demo-report.html"


@app.command(epilog="Example:\n\n  backfill-quality demo --rows 500 --latency-ms 100")
def demo(
    rows: Annotated[
        int, typer.Option(min=1, max=100_000, metavar="N", help="Image rows to create.")
    ] = DEFAULT_DEMO_ROWS,
    latency_ms: Annotated[
        float,
        typer.Option(
            min=0, metavar="MS", help="Delay the image server adds to every response, ms."
        ),
    ] = 0.0,
    workdir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            metavar="DIR",
            help="Keep the database and checkpoint here (default: a temporary folder, deleted "
            "at the end, also after Ctrl+C or an error).",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="PATH",
            dir_okay=False,
            help="Where the review report goes at the end (default: quality-report.html in"
            " --workdir, or backfill-quality-demo-report.html in the current folder).",
        ),
    ] = None,
    verbose: o.Verbose = False,
    quiet: o.Quiet = False,
    json_events: o.JsonEvents = False,
    log_format: o.LegacyLogFormat = None,
    version: o.Version = False,
) -> None:
    """Start an embedded PostgreSQL, fill `images` with the shipped real photos and variants of
    them (and a few broken URLs) served from 127.0.0.1, run the backfill with live progress, show
    `status`, and write the review report (an HTML file) and print its path."""
    as_json = o.wants_json(json_events, log_format)
    with error_boundary(verbose=verbose, as_json=as_json):
        from backfill_quality.cli.reporters import make_reporter
        from backfill_quality.cli.views import print_status
        from backfill_quality.demo.embedded import demo_folder, embedded_database, fill_demo_table
        from backfill_quality.demo.imageserver import ImageServer
        from backfill_quality.pipeline.runner import Runner
        from backfill_quality.pipeline.status import StatusReport, find_checkpoints, table_stats

        written: str | None = None  # the report's path; stays None when interrupted
        with (
            demo_folder(workdir) as folder,
            embedded_database(folder, keep=workdir is not None) as url,
            ImageServer(latency_ms=latency_ms) as server,
        ):
            if not (quiet or as_json):
                typer.echo(f"Demo database ready; serving images from {server.base_url}", err=True)
            fill_demo_table(url, server, rows)
            checkpoint = folder / ".backfill-progress.json"
            settings = RunSettings(database_url=url, checkpoint_path=checkpoint, restart=True)
            reporter = make_reporter(
                log_format="json" if as_json else "text", verbose=verbose, quiet=quiet
            )
            try:
                summary = Runner(settings, reporter).run()
                reporter.finish(summary)
            finally:
                reporter.close()
            print_status(StatusReport(find_checkpoints(checkpoint), table_stats(url, Target())))
            if summary.interrupted is None:
                out = report or (
                    workdir / "quality-report.html" if workdir else Path(DEMO_REPORT_NAME)
                )
                written = report_at_end(
                    out,
                    database_url=url,
                    target=Target(),
                    checkpoint=checkpoint,
                    as_json=as_json,
                    says_where=False,  # the demo's last line names it, saying what to do
                )
        if not (quiet or as_json):
            typer.echo(
                "\nThe failed rows point at broken URLs on purpose (404, 500, not an image, "
                "truncated): they stay NULL and are listed in the checkpoint and the report.\n"
                "Next: `backfill-quality score PATH_OR_URL` on your own photo, or read README.md "
                "for a production run.",
                err=True,
            )
        if written is not None and not as_json:
            typer.echo(f"Open the review report in a browser: {written}", err=True)
    code = exit_code_for(summary)
    if summary.interrupted:
        raise typer.Exit(code)
    raise typer.Exit(EXIT_OK if written is not None else EXIT_FATAL)
