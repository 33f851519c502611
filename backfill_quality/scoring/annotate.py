"""Draw what the scorer saw: the detected bird box, the bird count and the check scores."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from backfill_quality.errors import DecodeError
from backfill_quality.models import Analysis

ANNOTATION_LONG_SIDE_PX = 1024
ANNOTATION_MIN_LONG_SIDE_PX = 512
"""Smaller pictures are enlarged to this, so the label is readable without covering them."""
SHORT_SIDE_PER_FONT_PX = 36
"""The label's font size is the picture's short side divided by this (14 px on 512 px)..."""
MIN_FONT_PX = 8
"""...but never smaller than this."""
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
    """Write a PNG (long side 512-1024 px) with the subject box and the scores drawn on it; the
    label scales with the picture (about a tenth of it)."""
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
    _draw_panel(draw, summary_lines(analysis), font_px=label_font_px(width, height))
    try:
        image.save(out_path, format="PNG")
    except OSError as error:
        raise OSError(f"cannot write the annotated image to {out_path}: {error}") from error


def _load_display_copy(data: bytes) -> Image.Image:
    """Decode (draft mode for JPEG), orient by EXIF and bring to the annotation size (a small
    picture is enlarged: its label would cover it, or be unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            if source.format == "JPEG":
                source.draft("RGB", (ANNOTATION_LONG_SIDE_PX, ANNOTATION_LONG_SIDE_PX))
            oriented = ImageOps.exif_transpose(source)
            image = oriented.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise DecodeError(f"cannot annotate: not a decodable image ({error})") from error
    image.thumbnail((ANNOTATION_LONG_SIDE_PX, ANNOTATION_LONG_SIDE_PX), Image.Resampling.BILINEAR)
    long_side = max(image.size)
    if long_side < ANNOTATION_MIN_LONG_SIDE_PX:
        factor = ANNOTATION_MIN_LONG_SIDE_PX / long_side
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def label_font_px(width: int, height: int) -> int:
    """The label's font size for a picture of this size (display pixels)."""
    return max(MIN_FONT_PX, round(min(width, height) / SHORT_SIDE_PER_FONT_PX))


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


def _draw_panel(draw: ImageDraw.ImageDraw, lines: list[str], *, font_px: int) -> None:
    """The label in the top-left corner: white text on a dark panel, all sizes from `font_px`."""
    font = _font(font_px)
    text = "\n".join(lines)
    spacing, pad = max(1, round(font_px / 4)), max(2, round(font_px / 3))
    origin = (pad + 2, pad + 2)
    left, top, right, bottom = draw.multiline_textbbox(origin, text, font=font, spacing=spacing)
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=PANEL_COLOUR)
    draw.multiline_text(origin, text, fill=TEXT_COLOUR, font=font, spacing=spacing)


def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own scalable font (10.1+, with FreeType), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size_px)
    except TypeError:  # Pillow 10.0: no size
        return ImageFont.load_default()
