"""A small JPEG of an image, decoded exactly as the scorer decodes it (same orientation), so a
stored box's fractions land on the thumbnail where they landed on the scored picture."""

from __future__ import annotations

import io

from PIL import Image

from backfill_quality.config import DEFAULT_MAX_PIXELS
from backfill_quality.scoring.imaging import decode_image

THUMBNAIL_LONG_SIDE_PX = 160
THUMBNAIL_JPEG_QUALITY = 70
"""About 4-7 KB for a 160 px photo: a thousand of them stay a few megabytes."""


def make_thumbnail(
    data: bytes,
    *,
    long_side_px: int = THUMBNAIL_LONG_SIDE_PX,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes:
    """JPEG bytes, long side at most `long_side_px`, EXIF orientation applied; DecodeError for
    anything that is not a usable image (the same limits as scoring)."""
    # decoded at up to twice the size (a fast integer reduction), then resampled to the size
    working = decode_image(data, max_pixels=max_pixels, work_size=2 * long_side_px)
    picture = Image.fromarray(working.rgb, "RGB")
    picture.thumbnail((long_side_px, long_side_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY, optimize=True)
    return buffer.getvalue()
