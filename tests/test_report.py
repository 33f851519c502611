"""`backfill-quality report` without a browser: the page's parts, its options and its errors,
after a real run on the embedded PostgreSQL and the test image server."""

from __future__ import annotations

import json
import re
import signal
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.report.failures import reason_class
from tests.support.cli import read_checkpoint, run_cli
from tests.support.report import FAST, PER_GALLERY, ScoredRun, scored_run
from tests.support.table import UserTable, apply_migrations, serve_valid_images

__all__ = ["scored_run"]

VOID = frozenset({"meta", "link", "img", "input", "br", "hr", "source", "col", "wbr"})
# elements HTML lets a writer leave open; the template closes them all the same
SVG_SELF_CLOSING = frozenset({"rect", "line", "path", "circle"})


class WellFormed(HTMLParser):
    """Every element closed in order, ids unique, every image with alt text, every form control
    with a label, no reference to anything outside the file."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.ids: list[str] = []
        self.labelled: set[str] = set()
        self.controls: list[str] = []
        self.problems: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(str(found["id"]))
        if tag == "img":
            self.images.append(found)
            if not found.get("alt"):
                self.problems.append(f"img without alt: {found.get('src', '')[:40]}")
        if tag == "label" and found.get("for"):
            self.labelled.add(str(found["for"]))
        if tag in ("input", "select") and found.get("id"):
            self.controls.append(str(found["id"]))
        for name in ("src", "href"):
            value = found.get(name) or ""
            if tag != "a" and value and not value.startswith("data:"):
                self.problems.append(f"<{tag} {name}={value!r}> loads something from outside")
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
            return
        self.open.pop()


def check_page(text: str) -> WellFormed:
    parser = WellFormed()
    parser.feed(text)
    parser.close()
    assert text.startswith("<!DOCTYPE html>")
    assert parser.problems == []
    assert parser.open == []
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    assert set(parser.controls) <= parser.labelled, "a filter without a label"
    return parser


def cards(page: str) -> dict[str, str]:
    """Each card's markup by its image id (the first card of each image)."""
    found: dict[str, str] = {}
    for match in re.finditer(r'<li class="card" data-id="([^"]+)".*?</li>', page, re.S):
        found.setdefault(match[1], match[0])
    return found


def test_the_page_is_well_formed_and_a_failed_thumbnail_is_a_placeholder(
    scored_run: ScoredRun,
) -> None:
    out = scored_run.cwd / "report.html"
    result = scored_run.report(out)
    assert result.exit_code == 0, result.output
    assert f"Report written: {out}" in result.stdout
    page = out.read_text(encoding="utf-8")
    parser = check_page(page)
    assert len(parser.images) >= 10
    sources = dict(scored_run.sql("SELECT image_id::text, source FROM images_quality_results"))
    broken = [key for key, source in sources.items() if source == scored_run.broken_url]
    card = cards(page)[broken[0]]
    assert 'class="placeholder" role="img"' in card
    assert "not an image" in card
    assert "<img" not in card
    assert f'href="{scored_run.broken_url}"' in card  # the original is still linked


def test_no_thumbnails_links_the_originals_and_fetches_nothing(scored_run: ScoredRun) -> None:
    server = scored_run.server
    paths = [
        s.removeprefix(server.base_url)
        for (s,) in scored_run.sql("SELECT source FROM images_quality_results")
    ]
    before = {path: server.hits(path) for path in paths}
    out = scored_run.cwd / "links.html"
    result = scored_run.report(out, "--no-thumbnails")
    assert result.exit_code == 0, result.output
    assert {path: server.hits(path) for path in paths} == before
    page = out.read_text(encoding="utf-8")
    check_page(page)
    assert "data:image/jpeg" not in page
    assert "<img" not in page
    sources = dict(scored_run.sql("SELECT image_id::text, source FROM images_quality_results"))
    shown = cards(page)
    assert len(shown) >= PER_GALLERY
    for key, card in shown.items():
        assert f'<a class="original" href="{sources[key]}"' in card


def test_json_gives_the_path_and_the_databases_figures(scored_run: ScoredRun) -> None:
    out = scored_run.cwd / "figures.html"
    result = scored_run.report(out, "--json", "--no-thumbnails")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["path"] == str(out.resolve())
    assert figures["bytes"] == out.stat().st_size
    ((scored, left),) = scored_run.sql(
        "SELECT count(quality_score), count(*) - count(quality_score) FROM images"
    )
    assert (figures["scored"], figures["left"], figures["failed"]) == (scored, left, 3)
    histogram = [0] * 10
    for decile, count in scored_run.sql(
        "SELECT least(score / 10, 9), count(*) FROM images_quality_results GROUP BY 1"
    ):
        histogram[decile] = count
    assert figures["histogram"] == histogram
    assert figures["failedByReason"] == {"HTTP 404": 2, "not an image": 1}
    lowest = scored_run.sql(
        "SELECT image_id::text FROM images_quality_results ORDER BY score, image_id LIMIT %s",
        PER_GALLERY,
    )
    assert figures["galleries"]["lowest"] == [key for (key,) in lowest]
    assert sum(p["rows"] for p in figures["trend"]) == scored  # all scored this week
    # status now says where the last report is
    status = run_cli(
        "status", "--json", cwd=scored_run.cwd, database_url=scored_run.table.database_url
    )
    assert json.loads(status.stdout)["lastReport"]["path"] == str(out.resolve())
    text = run_cli("status", cwd=scored_run.cwd, database_url=scored_run.table.database_url)
    assert f"Last report: {out.resolve()}" in text.stdout


def test_the_trend_by_a_date_column_of_the_table(scored_run: ScoredRun) -> None:
    out = scored_run.cwd / "trend.html"
    result = scored_run.report(
        out, "--no-thumbnails", "--json", "--by", "created_at", "--every", "day"
    )
    assert result.exit_code == 0, result.output
    days = scored_run.sql(
        "SELECT date_trunc('day', i.created_at, 'UTC'), count(*) FROM images i"
        " JOIN images_quality_results r ON r.image_id = i.id GROUP BY 1 ORDER BY 1"
    )
    assert [p["rows"] for p in json.loads(result.stdout)["trend"]] == [n for _, n in days]
    assert "Mean score per day (by created_at, UTC)" in out.read_text(encoding="utf-8")

    wrong = scored_run.report(out, "--no-thumbnails", "--by", "title")
    assert wrong.exit_code == 2
    assert "--by: column 'title'" in wrong.stderr and "date or timestamp" in wrong.stderr


def test_bad_options_are_usage_errors_before_any_work(scored_run: ScoredRun) -> None:
    missing = scored_run.cwd / "no-such-folder" / "r.html"
    result = scored_run.report(missing)
    assert result.exit_code == 2, result.output
    assert f"--out: the folder {missing.parent} does not exist" in result.stderr
    result = scored_run.report(scored_run.cwd / "r.html", "--every", "year")
    assert result.exit_code == 2, result.output
    assert "--every: 'year' is not a period; use one of day, week, month" in result.stderr
    assert not (scored_run.cwd / "r.html").exists()


def test_without_a_results_table_the_report_says_what_to_run(
    database_url: str, tmp_path: Path
) -> None:
    table = UserTable(database_url).create(with_results=False)
    out = tmp_path / "report.html"
    result = run_cli(
        "report", *table.cli_options(), "--out", str(out), cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 2, result.output
    assert "no results table images_quality_results" in result.stderr
    assert "backfill-quality migrate --table images --id-column id" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_run_with_report_writes_it_at_the_end(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = UserTable(database_url).create()
    table.insert([*serve_valid_images(image_server, 3), image_server.url("/status/404")])
    out = tmp_path / "after-run.html"
    result = run_cli(
        "run",
        *table.cli_options(),
        *FAST,
        "--report",
        str(out),
        "--log-format",
        "json",
        cwd=tmp_path,
        database_url=database_url,
    )
    assert result.exit_code == 3, result.output  # one row failed: the run's code is kept
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {"event": "report", "path": str(out.resolve())}.items() <= events[-1].items()
    page = out.read_text(encoding="utf-8")
    assert '<span class="num" id="n-scored">3</span>' in page
    assert '<tr data-reason="HTTP 404"><td>HTTP 404</td><td class="count">1</td>' in page
    assert read_checkpoint(tmp_path / ".backfill-progress.json")["failed"] == 1


def test_a_report_without_a_checkpoint_says_the_failures_are_unknown(
    scored_run: ScoredRun, tmp_path: Path
) -> None:
    out = tmp_path / "elsewhere.html"
    result = run_cli(
        "report",
        "--out",
        str(out),
        "--no-thumbnails",
        "--json",
        cwd=tmp_path,
        database_url=scored_run.table.database_url,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["failed"] is None
    page = out.read_text(encoding="utf-8")
    assert 'id="no-failures-known"' in page
    assert '<span class="num" id="n-failed">unknown</span>' in page


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("HTTP 404 Not Found", "HTTP 404"),
        ("HTTP 503 Service Unavailable after 3 attempts", "HTTP 503"),
        ("read timeout 10s after 2 attempts", "timeout"),
        ("not an image (content-type text/html)", "not an image"),
        ("truncated or corrupt image (JPEG: broken data stream)", "truncated or corrupt image"),
        ("could not connect (127.0.0.1:9: Connection refused)", "no connection"),
        ("something new: details", "something new"),
    ],
)
def test_failures_are_grouped_by_reason_class(error: str, reason: str) -> None:
    assert reason_class(error) == reason


def test_the_sql_aggregates_agree_with_the_rows(scored_run: ScoredRun) -> None:
    with db.connect(scored_run.table.database_url) as conn:
        figures = db.result_figures(conn, scored_run.table.target)
        low = db.category_sample(conn, scored_run.table.target, "low", 100)
        failing = db.failed_check_sample(conn, scored_run.table.target, "contrast", 100)
    rows = scored_run.sql("SELECT category, contrast_passed FROM images_quality_results")
    assert figures.rows == len(rows) == 14
    assert figures.categories["low"] == sum(1 for c, _ in rows if c == "low") == len(low)
    assert figures.passed["contrast"] == sum(1 for _, p in rows if p)
    assert len(failing) == sum(1 for _, p in rows if not p)
    assert all(not r.checks["contrast"]["passed"] for r in failing)


def test_watch_with_report_writes_it_when_it_stops(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    from tests.test_watch import SCORE_BOUND_S, wait_until_scored, watching

    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 2)))
    out = tmp_path / "watch.html"
    with watching(tmp_path, database_url, "--poll-interval", "60", "--report", str(out)) as watch:
        wait_until_scored(table, rows, SCORE_BOUND_S)
        assert not out.exists()  # at the end, not per cycle
        code = watch.stop(signal.SIGTERM)
        events = watch.events()
    assert code == 143, events
    assert any(e.get("event") == "report" and e["path"] == str(out.resolve()) for e in events)
    assert '<span class="num" id="n-scored">2</span>' in out.read_text(encoding="utf-8")


def test_rows_a_rescore_could_not_refresh_keep_their_score_and_are_listed_apart(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = UserTable(database_url).create()
    table.insert([*serve_valid_images(image_server, 3), image_server.url("/status/404")])
    heuristic = ("--detector", "heuristic")
    options = (*table.cli_options(), *FAST, *heuristic)
    ran = run_cli("run", *options, cwd=tmp_path, database_url=database_url)
    assert ran.exit_code == 3, ran.output  # the 404 row stays NULL
    # a scored row whose image is gone since, and whose result is stale: a rescore must download
    # it, fails, and keeps its old score
    with psycopg.connect(database_url, autocommit=True) as conn:
        row_id, old_score = conn.execute(
            "SELECT id::text, quality_score FROM images WHERE quality_score IS NOT NULL"
            " ORDER BY id LIMIT 1"
        ).fetchone() or ("", 0)
        conn.execute(
            "UPDATE images SET url = %s WHERE id::text = %s", [image_server.url("/x/404"), row_id]
        )
        conn.execute(
            "UPDATE images_quality_results SET scorer_version = 'old',"
            " measurement_version = 'old' WHERE image_id::text = %s",
            [row_id],
        )
    rescored = run_cli("rescore", *options, cwd=tmp_path, database_url=database_url)
    assert rescored.exit_code == 3, rescored.output
    assert {str(k): v for k, v in table.scores().items()}[row_id] == old_score

    out = tmp_path / "after-rescore.html"
    result = run_cli(
        "report", *table.cli_options(), "--out", str(out), "--no-thumbnails", "--json",
        cwd=tmp_path, database_url=database_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["left"], figures["failed"]) == (1, 1)  # only the row without a score
    assert figures["failedByReason"] == {"HTTP 404": 1}
    assert figures["rescoreFailed"] == 1
    assert figures["rescoreFailedByReason"] == {"HTTP 404": 1}
    assert figures["lastRun"]["kind"] == "rescore" and figures["lastRun"]["processed"] == 1
    page = out.read_text(encoding="utf-8")
    check_page(page)
    assert '<span class="num" id="n-failed">1</span>' in page
    assert '<p id="last-run">Last rescore: started' in page
    failed_rows = page.split('id="h-failed"')[1]
    could_not_score, could_not_rescore = failed_rows.split('id="h-rescore-failed"')
    assert row_id not in could_not_score
    assert row_id in could_not_rescore and "old score kept" in could_not_rescore

    status = run_cli(
        "status", *table.cli_options(), "--json", cwd=tmp_path, database_url=database_url
    )
    kinds = sorted(c["kind"] for c in json.loads(status.stdout)["checkpoints"])
    assert kinds == ["rescore", "run"]
    text = run_cli("status", *table.cli_options(), cwd=tmp_path, database_url=database_url)
    out_text = " ".join(text.stdout.split())
    assert "rescore: finished; processed 1/1 (100.0%), rescored 0, could not be rescored 1" in (
        out_text
    ), out_text
    assert "(old scores kept)" in out_text
