"""Option types shared by several commands (declared once, reused with Annotated)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from backfill_quality import config


class LogFormat(StrEnum):
    """How progress and errors are written to stderr."""

    text = "text"
    json = "json"


DB_PANEL = "Database"
FETCH_PANEL = "Fetching"
OUTPUT_PANEL = "Output"

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        help="libpq URI or key=value string; empty: the usual PG* variables.",
        show_default=False,
        rich_help_panel=DB_PANEL,
    ),
]
Table = Annotated[
    str, typer.Option("--table", help="Table holding the images.", rich_help_panel=DB_PANEL)
]
IdColumn = Annotated[
    str,
    typer.Option(
        "--id-column", help="Primary key column (uuid, integer or text).", rich_help_panel=DB_PANEL
    ),
]
UrlColumn = Annotated[
    str, typer.Option("--url-column", help="Column with the image URL.", rich_help_panel=DB_PANEL)
]
ScoreColumn = Annotated[
    str,
    typer.Option(
        "--score-column", help="Integer column the score is written to.", rich_help_panel=DB_PANEL
    ),
]
CheckpointPath = Annotated[
    Path,
    typer.Option(
        "--checkpoint",
        envvar="BACKFILL_CHECKPOINT",
        help="Checkpoint file (dry runs and shards use a sibling file).",
        dir_okay=False,
    ),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="More detail (and tracebacks).", rich_help_panel=OUTPUT_PANEL
    ),
]
ThresholdOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        metavar="NAME=VALUE",
        help="Override a scoring threshold, e.g. min_short_side=300 (repeatable).",
    ),
]

DEFAULT_TABLE = config.DEFAULT_TABLE
DEFAULT_ID_COLUMN = config.DEFAULT_ID_COLUMN
DEFAULT_URL_COLUMN = config.DEFAULT_URL_COLUMN
DEFAULT_SCORE_COLUMN = config.DEFAULT_SCORE_COLUMN
DEFAULT_CHECKPOINT = config.DEFAULT_CHECKPOINT
