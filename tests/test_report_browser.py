"""The review report in a real Chromium (the system's, through Playwright), opened from file://
after a real run: what a person would check by looking at it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

from tests.support.report import PER_GALLERY, ScoredRun, chromium_path, scored_run

__all__ = ["scored_run"]

pytestmark = pytest.mark.browser

CHECKS = ("birdSize", "positioning", "resolution", "contrast", "primarySubject")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def built(scored_run: ScoredRun) -> tuple[Path, dict[str, Any]]:
    out = scored_run.cwd / "report.html"
    result = scored_run.report(out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


class Opened:
    """A page with the report loaded, and what it asked for and complained about."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def visible_ids(self, gallery: str) -> list[str]:
        cards = self.page.locator(f"#g-{gallery} .card:not([hidden])")
        return [str(cards.nth(i).get_attribute("data-id")) for i in range(cards.count())]


@pytest.fixture(scope="module")
def opened(browser: Browser, built: tuple[Path, dict[str, Any]]) -> Iterator[Opened]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    seen = Opened(page)
    page.on("request", seen.on_request)
    page.on("console", seen.on_console)
    page.on("pageerror", lambda error: seen.errors.append(f"pageerror: {error}"))
    context.route("**/*", lambda route: route.continue_())  # every request passes through here
    page.goto(built[0].as_uri())
    page.wait_for_load_state("load")
    yield seen
    context.close()


def number(page: Page, selector: str) -> int:
    return int(page.locator(selector).inner_text().replace(",", ""))


def test_the_headline_numbers_are_the_databases(opened: Opened, scored_run: ScoredRun) -> None:
    page = opened.page
    ((scored, left),) = scored_run.sql(
        "SELECT count(quality_score), count(*) - count(quality_score) FROM images"
    )
    assert number(page, "#n-scored") == scored == 14
    assert number(page, "#n-left") == left == 3
    assert number(page, "#n-failed") == 3  # from the checkpoint: the database only knows NULL
    for category, count in scored_run.sql(
        "SELECT c, count(r.category) FROM unnest(array['high','medium','low']) c"
        " LEFT JOIN images_quality_results r ON r.category = c GROUP BY c"
    ):
        assert number(page, f"#n-{category}") == count
    reasons = {
        row.get_attribute("data-reason"): int(row.locator(".count").inner_text())
        for row in page.locator("#failed-table tbody tr").all()
    }
    assert reasons == {"HTTP 404": 2, "not an image": 1}
    for check in CHECKS:
        (passed,) = scored_run.sql(
            f"SELECT count(*) FILTER (WHERE {check_column(check)}) FROM images_quality_results"
        )[0]
        assert (
            f"({passed} of 14)" in page.locator(f'.share[data-check="{check}"] .rate').inner_text()
        )


def check_column(check: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", check).lower() + "_passed"


def test_the_galleries_hold_the_expected_images(opened: Opened, scored_run: ScoredRun) -> None:
    lowest = [
        row[0]
        for row in scored_run.sql(
            "SELECT image_id::text FROM images_quality_results ORDER BY score, image_id LIMIT %s",
            PER_GALLERY,
        )
    ]
    assert opened.visible_ids("lowest") == lowest
    for category in ("high", "medium", "low"):
        members = {
            r[0]
            for r in scored_run.sql(
                "SELECT image_id::text FROM images_quality_results WHERE category = %s", category
            )
        }
        shown = opened.visible_ids(f"category-{category}")
        assert len(shown) == min(PER_GALLERY, len(members)), category
        assert set(shown) <= members, category
    for check in CHECKS:
        failing = {
            r[0]
            for r in scored_run.sql(
                f"SELECT image_id::text FROM images_quality_results WHERE NOT {check_column(check)}"
            )
        }
        shown = opened.visible_ids(f"failed-{check}")
        assert len(shown) == min(PER_GALLERY, len(failing)), check
        assert set(shown) <= failing, check
    sources = dict(scored_run.sql("SELECT image_id::text, source FROM images_quality_results"))
    first = opened.page.locator("#g-lowest .card").first
    assert first.locator("a.original").get_attribute("href") == sources[lowest[0]]


def test_a_filter_changes_what_is_shown(opened: Opened) -> None:
    page = opened.page
    cards = page.locator(".card")
    total = cards.count()
    high = page.locator('.card[data-category="high"]').count()
    assert 0 < high < total
    page.focus("#f-category")
    page.keyboard.press("ArrowDown")  # any -> high, from the keyboard alone
    assert page.locator("#f-category").input_value() == "high"
    assert page.locator(".card:not([hidden])").count() == high
    assert page.locator("#shown").inner_text() == f"{high} of {total} images shown"
    page.click("#f-reset")
    assert page.locator(".card:not([hidden])").count() == total
    # the score range, typed from the keyboard
    page.fill("#f-max", "")
    page.focus("#f-max")
    page.keyboard.type("59")
    low_or_below = sum(
        1
        for s in page.locator(".card").evaluate_all("cs => cs.map(c => +c.dataset.score)")
        if s <= 59
    )
    assert page.locator(".card:not([hidden])").count() == low_or_below < total
    page.click("#f-reset")
    assert page.locator(".card:not([hidden])").count() == total


def test_a_thumbnails_box_sits_where_the_stored_box_says(
    opened: Opened, scored_run: ScoredRun
) -> None:
    stored = dict(
        scored_run.sql(
            "SELECT image_id::text, subject -> 'bbox' FROM images_quality_results"
            " WHERE subject IS NOT NULL"
        )
    )
    checked = 0
    for card in opened.page.locator(".card").all():
        box = card.locator(".box")
        if box.count() == 0:
            continue
        bbox = stored[str(card.get_attribute("data-id"))]
        picture = card.locator(".thumb img").bounding_box()
        drawn = box.bounding_box()
        assert picture is not None and drawn is not None
        assert picture["width"] > 50  # the thumbnail itself is shown, not a broken image
        tolerance_px = 1.5
        assert abs(drawn["x"] - (picture["x"] + bbox["x"] * picture["width"])) <= tolerance_px
        assert abs(drawn["y"] - (picture["y"] + bbox["y"] * picture["height"])) <= tolerance_px
        assert abs(drawn["width"] - bbox["width"] * picture["width"]) <= tolerance_px
        assert abs(drawn["height"] - bbox["height"] * picture["height"]) <= tolerance_px
        checked += 1
    assert checked >= 5


def test_a_failed_thumbnail_shows_a_placeholder(opened: Opened, scored_run: ScoredRun) -> None:
    card = opened.page.locator(f'.card:has(a.original[href="{scored_run.broken_url}"])').first
    assert card.locator(".placeholder").count() == 1
    assert "not an image" in str(card.locator(".placeholder").get_attribute("aria-label"))
    assert card.locator("img").count() == 0
    assert opened.page.locator(".thumb img").count() > 10  # the others are there


def test_no_console_errors_and_no_request_leaves_the_file(
    opened: Opened, built: tuple[Path, dict[str, Any]]
) -> None:
    opened.page.select_option("#f-check", "contrast")
    opened.page.click("#f-reset")
    opened.page.locator("details summary").first.click()
    assert opened.errors == []
    assert opened.requests == [built[0].as_uri()]
    images = opened.page.locator("img").evaluate_all("imgs => imgs.map(i => i.src)")
    assert images and all(src.startswith("data:image/jpeg;base64,") for src in images)
    assert all(
        opened.page.locator("img").evaluate_all(
            "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
        )
    )
