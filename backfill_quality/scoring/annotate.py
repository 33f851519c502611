"""Draw what the scorer saw: the detected bird box, the bird count and the check scores."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from backfill_quality.errors import DecodeError
from backfill_quality.models import Analysis

ANNOTATION_LONG_SIDE_PX = 1024
BOX_COLOUR = (255, 40, 40)
TEXT_COLOUR = (255, 255, 255)
PANEL_COLOUR = (0, 0, 0, 170)
CHECK_LABELS = {
    "bird_size": "birdSize",
    "positioning": "positioning",
    "resolution": "resolution",
    "contrast": "contrast",
    "primary_subject": "primarySubject",
}


def annotate_image(data: bytes, analysis: Analysis, out_path: Path) -> None:
    """Write a PNG (long side <= 1024 px) with the subject box and the scores drawn on it."""
    image = _load_display_copy(data)
    draw = ImageDraw.Draw(image, "RGBA")
    subject = analysis.measurements.subject
    width, height = image.size
    line_px = max(2, round(max(width, height) / 300))
    if subject is not None:
        box = subject.bbox
        corners = (
            box.x * width,
            box.y * height,
            (box.x + box.width) * width - 1,
            (box.y + box.height) * height - 1,
        )
        draw.rectangle(corners, outline=BOX_COLOUR, width=line_px)
    _draw_panel(draw, summary_lines(analysis))
    try:
        image.save(out_path, format="PNG")
    except OSError as error:
        raise OSError(f"cannot write the annotated image to {out_path}: {error}") from error


def _load_display_copy(data: bytes) -> Image.Image:
    """Decode (draft mode for JPEG), orient by EXIF and shrink to the annotation size."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            if source.format == "JPEG":
                source.draft("RGB", (ANNOTATION_LONG_SIDE_PX, ANNOTATION_LONG_SIDE_PX))
            oriented = ImageOps.exif_transpose(source)
            image = oriented.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise DecodeError(f"cannot annotate: not a decodable image ({error})") from error
    image.thumbnail((ANNOTATION_LONG_SIDE_PX, ANNOTATION_LONG_SIDE_PX), Image.Resampling.BILINEAR)
    return image


def summary_lines(analysis: Analysis) -> list[str]:
    subject = analysis.measurements.subject
    if subject is None:
        bird = "no bird found"
    else:
        bird = (
            f"birds: {subject.count}  visible: {subject.visible_ratio:.0%}  "
            f"confidence: {subject.confidence:.2f}"
        )
    m = analysis.measurements
    presence = "" if m.presence is None else f"  bird probability: {m.presence:.2f}"
    lines = [
        f"score {analysis.score} ({analysis.category})",
        f"detector: {m.detector}{presence}",
        bird,
    ]
    for check in analysis.checks:
        label = CHECK_LABELS.get(check.name, check.name)
        lines.append(f"{label}: {check.score}{'' if check.passed else '  (fail)'}")
    return lines


def _draw_panel(draw: ImageDraw.ImageDraw, lines: list[str]) -> None:
    font = ImageFont.load_default()
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((6, 6), text, font=font, spacing=3)
    draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=PANEL_COLOUR)
    draw.multiline_text((6, 6), text, fill=TEXT_COLOUR, font=font, spacing=3)
