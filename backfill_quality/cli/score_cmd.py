"""`backfill-quality score`: score single images from files or URLs (nothing is written)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backfill_quality.cli import options as o
from backfill_quality.cli.app import EXIT_OK, EXIT_SOME_FAILED, app, error_boundary
from backfill_quality.config import (
    DEFAULT_TIMEOUT_S,
    FetchSettings,
    available_cpus,
    parse_detector,
    thresholds_with_overrides,
)
from backfill_quality.errors import BackfillError
from backfill_quality.results import result_to_dict
from backfill_quality.scoring.version import versions

if TYPE_CHECKING:
    from backfill_quality.fetching.fetcher import Fetched
    from backfill_quality.models import Analysis

SCORE_EPILOG = """Examples:

  backfill-quality score photo.jpg

  backfill-quality score https://example.org/bird.jpg --json | jq .score

  backfill-quality score photo.jpg --annotate photo-checked.png

  backfill-quality score photo.jpg --detector onnx:yolov8n.onnx
"""


def is_url(source: str) -> bool:
    """Anything with '://' (or data:/file:) is fetched as a URL; the rest is a local path."""
    return "://" in source or source.startswith(("data:", "file:"))


def read_source(source: str, fetch: FetchSettings) -> Fetched:
    """Bytes of a local file (no validators), or of an http(s) URL (anything with '://' is treated
    as a URL) with the response's ETag and Last-Modified."""
    from backfill_quality.fetching.fetcher import Fetched, fetch_one  # httpx: not for --help

    if is_url(source):
        return fetch_one(source, fetch)
    try:
        return Fetched(Path(source).read_bytes(), 1, source)
    except OSError as exc:
        raise BackfillError(f"cannot read {source}: {exc.strerror or exc}") from exc


def annotate_path(out: Path, index: int, count: int) -> Path:
    """OUT.png for one image; OUT-1.png, OUT-2.png, ... for several."""
    return out if count == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")


@app.command(epilog=SCORE_EPILOG)
def score(
    sources: Annotated[
        list[str], typer.Argument(metavar="PATH_OR_URL...", help="Image files or http(s) URLs.")
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per image on stdout (errors as JSON on stderr).",
            rich_help_panel=o.OUTPUT_PANEL,
        ),
    ] = False,
    annotate: Annotated[
        Path | None,
        typer.Option(
            metavar="OUT.png",
            help="Write the image with the detected bird and the check scores drawn.",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.001, metavar="S", help=o.FETCH_HELP_TIMEOUT + " (URLs only)")
    ] = DEFAULT_TIMEOUT_S,
    threshold: o.ThresholdOverrides = None,
    detector: o.DetectorOption = o.DEFAULT_DETECTOR,
    bird_class: o.BirdClass = None,
    verbose: o.Verbose = False,
    version: o.Version = False,
) -> None:
    """Score single images: the five checks with their reasons (the original's "test a single
    image")."""
    failures = 0
    with error_boundary(verbose=verbose, as_json=as_json):
        from backfill_quality.cli.views import print_analysis, print_error  # rich
        from backfill_quality.scoring.detectors.factory import load_detector  # NumPy, ONNX
        from backfill_quality.scoring.score import describe, score_image  # Pillow

        thresholds = thresholds_with_overrides(threshold or [])
        choice = parse_detector(detector, bird_class)
        threads = available_cpus()
        finder = load_detector(choice, threads)  # a bad --detector fails here, at once
        scorer = versions(choice, thresholds)
        fetch = FetchSettings(timeout_s=timeout)
        for index, source in enumerate(sources, start=1):
            try:
                started_s = time.perf_counter()
                fetched = read_source(source, fetch)
                read_ms = (time.perf_counter() - started_s) * 1000
                scoring_started_s = time.perf_counter()
                analysis = score_image(fetched.data, thresholds, finder)
                score_ms = (time.perf_counter() - scoring_started_s) * 1000
                if annotate is not None:
                    out = annotate_path(annotate, index, len(sources))
                    write_annotation(fetched.data, analysis, out)
            except BackfillError as exc:
                failures += 1
                if as_json:
                    typer.echo(json.dumps({"source": source, "error": str(exc)}))
                else:
                    print_error(source, str(exc))
                continue
            if as_json:
                result = result_to_dict(
                    source,
                    describe(fetched.data, analysis, score_ms),
                    scorer_version=scorer.scorer,
                    measurement_version=scorer.measurement,
                    scored_at=datetime.now(UTC),
                    etag=fetched.etag,
                    last_modified=fetched.last_modified,
                    fetch_ms=read_ms if is_url(source) else None,
                )
                typer.echo(json.dumps(result))
            else:
                print_analysis(source, analysis)
    raise typer.Exit(EXIT_SOME_FAILED if failures else EXIT_OK)


def write_annotation(data: bytes, analysis: Analysis, out: Path) -> None:
    from backfill_quality.scoring.annotate import annotate_image

    try:
        annotate_image(data, analysis, out)
    except OSError as exc:
        raise BackfillError(f"cannot write {out}: {exc.strerror or exc}") from exc
