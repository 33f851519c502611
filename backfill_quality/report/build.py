"""Build the review report: figures and galleries from SQL, failures from the checkpoints,
thumbnails from the images, one self-contained HTML file from the template.

`build_report` is the library call behind `report`, `run --report`, `watch --report` and the
demo. The page's size grows with the galleries (`per_gallery` cards each), never with the table.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backfill_quality import db
from backfill_quality.config import FetchSettings, Target
from backfill_quality.errors import ConfigError
from backfill_quality.pipeline.lastreport import remember_report
from backfill_quality.pipeline.status import TableStats, find_checkpoints, table_stats
from backfill_quality.report.charts import histogram_bars, shares, trend_bars
from backfill_quality.report.failures import Failures, collect_failures
from backfill_quality.report.page import render_page
from backfill_quality.report.thumbnails import (
    DEFAULT_THUMBNAIL_CONCURRENCY,
    Thumbnail,
    make_thumbnails,
)
from backfill_quality.results import CHECK_NAMES

DEFAULT_REPORT_PATH = Path("quality-report.html")
DEFAULT_PER_GALLERY = 12
MAX_PER_GALLERY = 500
CATEGORIES = ("high", "medium", "low")
TREND_PERIODS = 52
"""The trend shows the last 52 periods (a year of weeks) that end at the newest with rows."""


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """What `report` needs: where the rows are, where the page goes, how to make thumbnails."""

    database_url: str = ""
    target: Target = field(default_factory=Target)
    out: Path = DEFAULT_REPORT_PATH
    checkpoint: Path = Path(".backfill-progress.json")
    has_thumbnails: bool = True
    per_gallery: int = DEFAULT_PER_GALLERY
    by: str | None = None
    """The trend's time: None for `scored_at`, else a date/timestamp column of the table."""
    every: str = "week"
    fetch: FetchSettings = field(
        default_factory=lambda: FetchSettings(concurrency=DEFAULT_THUMBNAIL_CONCURRENCY)
    )

    def __post_init__(self) -> None:
        if not 1 <= self.per_gallery <= MAX_PER_GALLERY:
            raise ConfigError(f"--per-gallery must be between 1 and {MAX_PER_GALLERY}")
        db.check_every(self.every)
        folder = self.out.parent
        if not folder.is_dir():
            raise ConfigError(
                f"--out: the folder {folder} does not exist; create it or choose another path"
            )


@dataclass(frozen=True, slots=True)
class Gallery:
    key: str
    title: str
    description: str
    rows: list[db.GalleryRow]


@dataclass(frozen=True, slots=True)
class BuiltReport:
    """The written page and the figures it shows (the `--json` output)."""

    path: Path
    figures: dict[str, Any]


def _galleries(conn: Any, target: Target, n: int) -> list[Gallery]:
    galleries = [Gallery("lowest", "Lowest scores", f"The {n} lowest-scoring images.", [])]
    galleries[0].rows.extend(db.lowest_scored(conn, target, n))
    for category in CATEGORIES:
        rows = db.category_sample(conn, target, category, n)
        about = f"A random sample of up to {n} images scored {category}."
        galleries.append(Gallery(f"category-{category}", f"Sample: {category}", about, rows))
    for check in CHECK_NAMES:
        rows = db.failed_check_sample(conn, target, check, n)
        about = f"A random sample of up to {n} images that failed {check}."
        galleries.append(Gallery(f"failed-{check}", f"Failed: {check}", about, rows))
    return galleries


@dataclass(frozen=True, slots=True)
class FromDatabase:
    figures: db.ResultFigures
    galleries: list[Gallery]
    trend: list[db.TrendPeriod]


def _read_database(settings: ReportSettings) -> FromDatabase:
    target = settings.target
    with db.connect(settings.database_url) as conn:
        db.check_target(conn, target)
        if not db.has_results_table(conn, target):
            raise ConfigError(
                f"no results table {db.results_label(target)}: the report shows what each score"
                f" was made of, and this table has none yet. Run `backfill-quality migrate"
                f" --table {target.label} --id-column {target.id_column}`, then `backfill-quality"
                " run` to score rows with their results; nothing was written"
            )
        figures = db.result_figures(conn, target)
        galleries = _galleries(conn, target, settings.per_gallery)
        trend = db.quality_trend(
            conn, target, by=settings.by, every=settings.every, periods=TREND_PERIODS
        )
    return FromDatabase(figures, galleries, trend)


def _iso(moment: datetime | None) -> str | None:
    return (
        moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if moment
        else None
    )


def _figures_to_dict(
    stats: TableStats,
    figures: db.ResultFigures,
    failures: Failures,
    galleries: list[Gallery],
    thumbnails: dict[str, Thumbnail],
) -> dict[str, Any]:
    last = failures.last_run
    return {
        "scored": stats.scored,
        "left": stats.unscored,
        "isEstimate": stats.is_estimate,
        "failed": failures.total if failures.checkpoints else None,
        "results": figures.rows,
        "categories": figures.categories,
        "histogram": figures.histogram,
        "passed": figures.passed,
        "detectors": figures.detectors,
        "meanScore": None if figures.mean_score is None else round(figures.mean_score, 2),
        "lastScoredAt": _iso(figures.last_scored_at),
        "meanFetchMs": figures.mean_fetch_ms,
        "meanScoreMs": figures.mean_score_ms,
        "lastRun": None
        if last is None
        else {
            "startedAt": _iso(last.started_at),
            "updatedAt": _iso(last.updated_at),
            "processed": last.processed,
            "finished": last.finished,
            "rowsPerSecond": None if last.rows_per_s is None else round(last.rows_per_s, 2),
            "kind": last.kind,
        },
        "trend": [],
        "failedByReason": {g.reason: g.count for g in failures.groups},
        "rescoreFailed": failures.rescore_total if failures.checkpoints else None,
        "rescoreFailedByReason": {g.reason: g.count for g in failures.rescore_groups},
        "checkpoints": failures.checkpoints,
        "galleries": {g.key: [row.image_id for row in g.rows] for g in galleries},
        "thumbnails": {
            "made": sum(1 for t in thumbnails.values() if t.data_uri),
            "failed": sum(1 for t in thumbnails.values() if t.problem),
        },
    }


def build_report(settings: ReportSettings) -> BuiltReport:
    """Read, render and write the page (atomically); remember where beside the checkpoint."""
    started_s = time.perf_counter()
    read = _read_database(settings)
    figures, galleries = read.figures, read.galleries
    stats = table_stats(settings.database_url, settings.target)
    failures = collect_failures(find_checkpoints(settings.checkpoint), settings.target)
    urls = [row.source for gallery in galleries for row in gallery.rows]
    thumbnails = make_thumbnails(urls, settings.fetch) if settings.has_thumbnails else {}
    summary = _figures_to_dict(stats, figures, failures, galleries, thumbnails)
    summary["trend"] = [
        {"start": _iso(p.start), "rows": p.rows, "meanScore": round(p.mean_score, 2)}
        for p in read.trend
    ]
    html = render_page(
        target=settings.target.label,
        built_at=_iso(datetime.now(UTC)) or "",
        summary=summary,
        histogram=histogram_bars(figures.histogram),
        categories=shares(figures.categories, figures.rows),
        pass_rates=shares(figures.passed, figures.rows),
        galleries=galleries,
        thumbnails=thumbnails,
        has_thumbnails=settings.has_thumbnails,
        failures=failures,
        trend=read.trend,
        trend_bars=trend_bars(read.trend),
        trend_by=settings.by or "scored_at",
        every=settings.every,
    )
    _write_atomically(settings.out, html)
    summary |= {"path": str(settings.out.resolve()), "bytes": len(html.encode())}
    summary["buildSeconds"] = round(time.perf_counter() - started_s, 3)
    with contextlib.suppress(OSError):  # the report is written; only `status` won't point at it
        remember_report(settings.checkpoint, settings.out, figures.rows)
    return BuiltReport(settings.out, summary)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"--out: cannot write the report to {path}: {exc.strerror or exc}"
        ) from exc
