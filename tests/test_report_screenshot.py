"""The README's screenshot: a report over generated birds (demo/synthetic.py), scored by a real
run, opened in the system's Chromium. Always taken (so the page renders with real thumbnails);
written to docs/img/report.png only when asked:

    REPORT_SCREENSHOT=1 python -m pytest -m slow tests/test_report_screenshot.py
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.synthetic import make_bird_image, make_empty_image
from tests.support.cli import run_cli
from tests.support.report import FAST, chromium_path
from tests.support.table import UserTable

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "report.png"
SCENES: list[dict[str, object]] = [
    {"birds": [(0.3, 0.25, 0.4, 0.5)]},
    {"birds": [(0.25, 0.2, 0.5, 0.6)]},
    {"birds": [(0.35, 0.3, 0.3, 0.4)], "brightness": 0.8},
    {"birds": [(0.45, 0.45, 0.08, 0.1)]},  # small
    {"birds": [(0.8, 0.3, 0.4, 0.5)]},  # cut by the edge
    {"birds": [(0.3, 0.25, 0.4, 0.5)], "brightness": 0.15},  # dark
    {"birds": [(0.1, 0.3, 0.3, 0.4), (0.6, 0.3, 0.3, 0.4)]},  # two birds
    {"birds": []},  # nothing
]


def bird_images() -> list[tuple[str, bytes]]:
    images = []
    for number in range(24):
        scene = SCENES[number % len(SCENES)]
        birds = scene["birds"]
        assert isinstance(birds, list)
        brightness = float(scene.get("brightness", 1.0))  # type: ignore[arg-type]
        if birds:
            data = make_bird_image(
                seed=number, width=640, height=480, birds=birds, brightness=brightness
            )
        else:
            data = make_empty_image(seed=number, width=640, height=480)
        images.append((f"/birds/{number}.jpg", data))
    return images


def test_a_screenshot_of_a_report_over_generated_birds(database_url: str, tmp_path: Path) -> None:
    with ImageServer() as server:
        table = UserTable(database_url).create()
        urls = [server.add(path, data) for path, data in bird_images()]
        table.insert([*urls, server.url("/status/404"), server.url("/not-an-image")])
        # the heuristic detector: it finds the drawn birds, so their boxes show
        ran = run_cli(
            "run",
            *table.cli_options(),
            *FAST,
            "--detector",
            "heuristic",
            cwd=tmp_path,
            database_url=database_url,
        )
        assert ran.exit_code == 3, ran.output
        out = tmp_path / "report.html"
        built = run_cli(
            "report",
            "--out",
            str(out),
            "--per-gallery",
            "6",
            cwd=tmp_path,
            database_url=database_url,
        )
        assert built.exit_code == 0, built.output
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        page = browser.new_page(viewport={"width": 1100, "height": 1500})
        page.goto(out.as_uri())
        assert page.locator(".thumb img").count() >= 20
        png = page.screenshot(full_page=False)
        browser.close()
    with Image.open(io.BytesIO(png)) as shot:
        assert shot.size == (1100, 1500)
        colours = shot.convert("RGB").resize((64, 64)).getcolors(64 * 64) or []
        assert len(colours) > 100  # not blank
    if os.environ.get("REPORT_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes(png)
