"""Option types shared by several commands (declared once, reused with Annotated)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from backfill_quality import config
from backfill_quality.cli.app import Version as Version  # beside the top level's --version
from backfill_quality.errors import ConfigError


class LogFormat(StrEnum):
    """How progress and errors are written to stderr."""

    text = "text"
    json = "json"


DB_PANEL = "Database"
FETCH_PANEL = "Fetching"
OUTPUT_PANEL = "Output"
SCALE_PANEL = "Scale-out"

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        metavar="URL",
        help="libpq URI or key=value string; empty: the usual PG* variables.",
        show_default=False,
        rich_help_panel=DB_PANEL,
    ),
]
Table = Annotated[
    str,
    typer.Option(
        "--table",
        metavar="NAME",
        help="Table holding the images: TABLE or SCHEMA.TABLE (media.photos; double-quote a "
        'part with a dot: "My Schema"."photos.v2"), found through the search_path.',
        rich_help_panel=DB_PANEL,
    ),
]
IdColumn = Annotated[
    str,
    typer.Option(
        "--id-column",
        metavar="COLUMN",
        help="Primary key column (uuid, integer or text).",
        rich_help_panel=DB_PANEL,
    ),
]
UrlColumn = Annotated[
    str,
    typer.Option(
        "--url-column",
        metavar="COLUMN",
        help="Column with the image URL.",
        rich_help_panel=DB_PANEL,
    ),
]
ScoreColumn = Annotated[
    str,
    typer.Option(
        "--score-column",
        metavar="COLUMN",
        help="Integer column the score is written to.",
        rich_help_panel=DB_PANEL,
    ),
]
CheckpointPath = Annotated[
    Path,
    typer.Option(
        "--checkpoint",
        envvar="BACKFILL_CHECKPOINT",
        metavar="PATH",
        help="Checkpoint file (another table, a shard or a dry run uses a sibling file).",
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

FETCH_HELP_TIMEOUT = "Connect and read timeout per request, seconds."

BatchSize = Annotated[
    int,
    typer.Option(
        min=1,
        max=config.MAX_BATCH_SIZE,
        metavar="N",
        envvar="BACKFILL_BATCH_SIZE",
        help="Rows per page and per checkpoint.",
    ),
]
Concurrency = Annotated[
    str,
    typer.Option(
        metavar="auto|N",
        envvar="BACKFILL_CONCURRENCY",
        help="Images downloading at once: auto (grows while the scorers wait for images, backs "
        "off when hosts push back) or a fixed N; 1 = sequential like the original.",
        rich_help_panel=FETCH_PANEL,
    ),
]
MaxConcurrency = Annotated[
    int,
    typer.Option(
        min=1,
        max=config.MAX_CONCURRENCY,
        metavar="N",
        envvar="BACKFILL_MAX_CONCURRENCY",
        help="With --concurrency auto: the most images downloading at once.",
        rich_help_panel=FETCH_PANEL,
    ),
]
MaxPerHost = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=config.MAX_CONCURRENCY,
        metavar="N",
        envvar="BACKFILL_MAX_PER_HOST",
        help="The most images downloading at once from one host (default: 3/4 of "
        "--max-concurrency with auto, else --concurrency).",
        show_default=False,
        rich_help_panel=FETCH_PANEL,
    ),
]
MaxRps = Annotated[
    float | None,
    typer.Option(
        min=0.001,
        metavar="R",
        envvar="BACKFILL_MAX_RPS",
        help="Ceiling on image requests per second.",
        rich_help_panel=FETCH_PANEL,
    ),
]
Timeout = Annotated[
    float,
    typer.Option(min=0.001, metavar="S", help=FETCH_HELP_TIMEOUT, rich_help_panel=FETCH_PANEL),
]
MaxBytes = Annotated[
    int,
    typer.Option(
        min=1, metavar="BYTES", help="Largest image body accepted.", rich_help_panel=FETCH_PANEL
    ),
]
Retries = Annotated[
    int,
    typer.Option(
        min=0,
        max=20,
        metavar="N",
        help="Retries after a failed attempt (timeouts, 5xx, 429).",
        rich_help_panel=FETCH_PANEL,
    ),
]
DenyPrivateNetworks = Annotated[
    bool,
    typer.Option(
        "--deny-private-networks",
        help="Refuse image hosts on loopback, private, link-local or metadata addresses "
        "(for URLs from untrusted uploads).",
        rich_help_panel=FETCH_PANEL,
    ),
]
ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        envvar="BACKFILL_SHARD",
        help="Worker K of N (0-based): a contiguous slice of the key space, with its own "
        "checkpoint.",
        rich_help_panel=SCALE_PANEL,
    ),
]
ShardCount = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        envvar="BACKFILL_SHARD_COUNT",
        help="N workers; K comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Job).",
        rich_help_panel=SCALE_PANEL,
    ),
]
OrderByOption = Annotated[
    str | None,
    typer.Option(
        "--order-by",
        metavar="COLUMN",
        envvar="BACKFILL_ORDER_BY",
        help="Take the rows in this column's order (ascending; ties by the key; NULLs last), "
        "e.g. created_at with --descending for the newest first. `migrate --order-by` creates "
        "its index.",
        show_default=False,
        rich_help_panel=DB_PANEL,
    ),
]
Descending = Annotated[
    bool,
    typer.Option(
        "--descending",
        help="With --order-by: the largest (newest) values first; NULLs still last.",
        rich_help_panel=DB_PANEL,
    ),
]


def make_order(order_by: str | None, descending: bool) -> config.OrderBy | None:
    """The order of --order-by and --descending (None: the key's order)."""
    if order_by is None:
        if descending:
            raise ConfigError("--descending needs --order-by COLUMN (the column to sort)")
        return None
    return config.OrderBy(order_by, descending)


Workers = Annotated[
    int | None,
    typer.Option(
        min=1, metavar="N", help="Scoring processes (default: one per CPU this process may use)."
    ),
]
DETECT_PANEL = "Detection"
DetectorOption = Annotated[
    str,
    typer.Option(
        "--detector",
        metavar="learned|heuristic|onnx:PATH",
        envvar="BACKFILL_DETECTOR",
        help="What finds the bird: learned (the shipped networks), heuristic (NumPy, fast, "
        "no models, finds the most distinct thing), or onnx:PATH (your own YOLO-family model "
        "exported to ONNX in the Ultralytics layout).",
        rich_help_panel=DETECT_PANEL,
    ),
]
BirdClass = Annotated[
    int | None,
    typer.Option(
        "--bird-class",
        min=0,
        metavar="N",
        envvar="BACKFILL_BIRD_CLASS",
        help="With --detector onnx:PATH: the class index that is a bird (COCO: 14).",
        rich_help_panel=DETECT_PANEL,
    ),
]
DEFAULT_DETECTOR = config.DEFAULT_DETECTOR

Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Only warnings and the final summary.", rich_help_panel=OUTPUT_PANEL
    ),
]
JSON_EVENTS_HELP = (
    "One JSON object per event on stderr (progress, summary, errors) instead of text: for log "
    "collectors. The older spelling --log-format json still works."
)
JsonEvents = Annotated[
    bool, typer.Option("--json", help=JSON_EVENTS_HELP, rich_help_panel=OUTPUT_PANEL)
]
LegacyLogFormat = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        hidden=True,
        help="The older spelling of --json: text or json.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]


def wants_json(json_flag: bool, log_format: LogFormat | None) -> bool:
    """--json, or its older spelling --log-format json; both at odds is a usage error."""
    if json_flag and log_format is LogFormat.text:
        raise typer.BadParameter("--json and --log-format text disagree: give --json alone")
    return json_flag or log_format is LogFormat.json


NotifyUrl = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        envvar="BACKFILL_NOTIFY_URL",
        help="POST a JSON summary here when the run ends (a failing webhook only warns).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]


def make_target(table: str, id_column: str, url_column: str, score_column: str) -> config.Target:
    """The target of --table (TABLE or SCHEMA.TABLE) and the column options."""
    schema, name = config.parse_table_option(table)
    return config.Target(
        table=name,
        schema=schema,
        id_column=id_column,
        url_column=url_column,
        score_column=score_column,
    )


def make_fetch_settings(
    *,
    timeout: float,
    max_bytes: int,
    retries: int,
    max_rps: float | None,
    concurrency: str,
    max_concurrency: int = config.DEFAULT_MAX_CONCURRENCY,
    max_per_host: int | None = None,
    deny_private_networks: bool,
) -> config.FetchSettings:
    return config.FetchSettings(
        timeout_s=timeout,
        max_bytes=max_bytes,
        retries=retries,
        max_rps=max_rps,
        concurrency=config.parse_concurrency(concurrency),
        max_concurrency=max_concurrency,
        max_per_host=max_per_host,
        deny_private_networks=deny_private_networks,
    )
