"""annotate_image writes a PNG with the box and the scores; synthetic images are deterministic."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backfill_quality.demo.synthetic import make_bird_image, make_empty_image
from backfill_quality.errors import DecodeError
from backfill_quality.models import Analysis, BBox, CheckResult, Measurements, Subject
from backfill_quality.scoring.annotate import annotate_image, summary_lines


def analysis_with(subject: Subject | None) -> Analysis:
    checks = tuple(
        CheckResult(name, 100, True, "fine")
        for name in ("birdSize", "positioning", "resolution", "contrast", "primarySubject")
    )
    measurements = Measurements(width=2000, height=1500, brightness=120.0, subject=subject)
    return Analysis(measurements=measurements, checks=checks, score=100, category="high")


def test_annotated_png_has_box_and_is_downscaled(tmp_path: Path) -> None:
    data = make_bird_image(seed=1, width=2000, height=1500)
    subject = Subject(BBox(0.25, 0.25, 0.5, 0.5), count=1, visible_ratio=1.0, confidence=0.9)
    out = tmp_path / "out.png"
    annotate_image(data, analysis_with(subject), out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (1024, 768)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    edge = pixels[384, 254:258]  # the left side of the box at x = 0.25 * 1024
    assert ((edge[:, 0] > 200) & (edge[:, 1] < 80)).any()
    assert pixels[5:60, 5:150].mean() < pixels[300:400, 700:800].mean()  # dark text panel


def test_the_panel_names_the_detector_and_its_bird_probability() -> None:
    subject = Subject(BBox(0.25, 0.25, 0.5, 0.5), count=2, visible_ratio=0.75, confidence=0.61)
    analysis = analysis_with(subject)
    learned = replace(
        analysis, measurements=replace(analysis.measurements, detector="learned", presence=0.87)
    )
    lines = summary_lines(learned)
    assert lines[0] == "score 100 (high)"
    assert lines[1] == "detector: learned  bird probability: 0.87"
    assert "birds: 2" in lines[2] and "visible: 75%" in lines[2] and "0.61" in lines[2]
    assert summary_lines(analysis)[1] == "detector: heuristic"  # no probability to show


def test_annotate_without_subject(tmp_path: Path) -> None:
    out = tmp_path / "none.png"
    annotate_image(make_empty_image(seed=2, width=300, height=200), analysis_with(None), out)
    with Image.open(out) as image:
        assert image.size == (512, 341)  # enlarged: a label on 300 x 200 would cover it


def test_annotate_rejects_non_images(tmp_path: Path) -> None:
    with pytest.raises(DecodeError):
        annotate_image(b"not an image", analysis_with(None), tmp_path / "x.png")


def test_synthetic_images_are_deterministic_and_sized() -> None:
    first = make_bird_image(seed=7, width=640, height=480, fmt="PNG")
    assert first == make_bird_image(seed=7, width=640, height=480, fmt="PNG")
    assert first != make_bird_image(seed=8, width=640, height=480, fmt="PNG")
    with Image.open(io.BytesIO(first)) as image:
        assert image.size == (640, 480)


def test_synthetic_brightness_scales_the_image() -> None:
    bright = make_bird_image(seed=3, width=320, height=240, fmt="PNG")
    dark = make_bird_image(seed=3, width=320, height=240, brightness=0.3, fmt="PNG")
    with Image.open(io.BytesIO(bright)) as a, Image.open(io.BytesIO(dark)) as b:
        ratio = np.asarray(b).mean() / np.asarray(a).mean()
    assert ratio == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_synthetic_formats(fmt: str) -> None:
    with Image.open(io.BytesIO(make_bird_image(seed=1, width=200, height=150, fmt=fmt))) as image:
        assert image.format == fmt


# --- the label panel scales with the picture ----------------------------------------------------

MAX_PANEL_SHARE = 0.20  # of the picture's area
MIN_LINE_PX = 10  # a line of the panel is at least this tall: readable


def panel_box(path: Path) -> tuple[int, int, int, int, int, int]:
    """(left, top, right, bottom, width, height): the box of every non-white pixel of an
    annotation drawn on a white picture (the panel: no bird, so no box), and the picture size."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width = pixels.shape[:2]
    marked = (pixels < 250).any(axis=2)
    rows, cols = np.nonzero(marked.any(axis=1))[0], np.nonzero(marked.any(axis=0))[0]
    assert rows.size and cols.size, "no panel drawn"
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, width, height


@pytest.mark.parametrize(
    ("width", "height"),
    [(216, 136), (120, 90), (500, 375), (1024, 768), (4000, 3000), (600, 1200), (1600, 800)],
)
def test_the_label_covers_a_bounded_share_of_the_picture_and_stays_readable(
    tmp_path: Path, width: int, height: int
) -> None:
    white = Image.new("RGB", (width, height), (255, 255, 255))
    buffer = io.BytesIO()
    white.save(buffer, format="PNG")
    analysis = analysis_with(None)
    out = tmp_path / "white.png"
    annotate_image(buffer.getvalue(), analysis, out)

    left, top, right, bottom, out_width, out_height = panel_box(out)
    share = (right - left) * (bottom - top) / (out_width * out_height)
    assert share <= MAX_PANEL_SHARE, f"the label covers {share:.0%} of a {width}x{height} picture"
    assert (bottom - top) / len(summary_lines(analysis)) >= MIN_LINE_PX
    assert out_width / out_height == pytest.approx(width / height, rel=0.02)  # not distorted
