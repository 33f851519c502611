"""The real photographs that ship with the demo (see photos/SOURCES.md), and variants of them.

Thirteen bird photos and six without a bird, 800 px on the long side, from Debian and PyPI
packages under free licences. Variants (darker, smaller, cut by the frame, PNG) show what each
check does on real pictures; they are made at run time from the same bytes, so they are
deterministic.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageEnhance

from backfill_quality.models import BBox

PHOTO_DIR = Path(__file__).resolve().parent / "photos"
NO_BIRD_PREFIX = "nobird-"


def bird_photos() -> list[str]:
    """File names of the photos with birds, sorted."""
    return sorted(p.name for p in PHOTO_DIR.glob("*.jpg") if not p.name.startswith(NO_BIRD_PREFIX))


def no_bird_photos() -> list[str]:
    """File names of the photos without a bird, sorted."""
    return sorted(p.name for p in PHOTO_DIR.glob(f"{NO_BIRD_PREFIX}*.jpg"))


def photo_bytes(name: str) -> bytes:
    """The encoded JPEG of one shipped photo."""
    return (PHOTO_DIR / name).read_bytes()


def variant(
    data: bytes,
    *,
    scale: float = 1.0,
    brightness: float = 1.0,
    crop: BBox | None = None,
    fmt: str = "JPEG",
) -> bytes:
    """The photo cropped to `crop` (normalized), then scaled, then its brightness multiplied,
    re-encoded as `fmt` (JPEG quality 90, or PNG)."""
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGB")
    if crop is not None:
        width, height = image.size
        image = image.crop(
            (
                round(crop.x * width),
                round(crop.y * height),
                round((crop.x + crop.width) * width),
                round((crop.y + crop.height) * height),
            )
        )
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    if brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(brightness)
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=90)
    return out.getvalue()
