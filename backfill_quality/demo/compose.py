"""Pictures of several birds built from real ones: bird crops pasted, apart, on a soft background.

For counting, with truth known by construction: the demo shows flocks made from its photos, and
the benchmarks and tests make them from the development photos at run time (nothing is saved).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageFilter

from backfill_quality.models import BBox

BACKGROUND_BLUR_PX = 24
CANVAS_SIZE = (1024, 640)
BIRD_HEIGHT_SHARE = 0.4
"""Each bird is scaled to about this share of the canvas height (0.6-1.0 times it at random)."""
CONTEXT_MARGIN = 0.15
"""The crop keeps this share of the box's size around it on each side (less where the photo
ends): a bird cut tight along its outline is not what a detector was trained on."""


@dataclass(frozen=True, slots=True)
class BirdCrop:
    """A photo (encoded bytes) and the normalized box of the bird in it."""

    data: bytes
    box: BBox


def crop_bird(crop: BirdCrop) -> Image.Image:
    """The bird's box cut out of its photo, RGB."""
    with Image.open(io.BytesIO(crop.data)) as photo:
        image = photo.convert("RGB")
    width, height = image.size
    b = crop.box
    margin_x, margin_y = CONTEXT_MARGIN * b.width, CONTEXT_MARGIN * b.height
    corners = (
        round(max(0.0, b.x - margin_x) * width),
        round(max(0.0, b.y - margin_y) * height),
        round(min(1.0, b.x + b.width + margin_x) * width),
        round(min(1.0, b.y + b.height + margin_y) * height),
    )
    return image.crop(corners)


def compose_flock(
    birds: list[BirdCrop], background: bytes, *, seed: int = 0
) -> tuple[bytes, list[BBox]]:
    """A JPEG with every bird pasted into its own cell of a row (never overlapping), on the
    blurred background photo; and each pasted crop's normalized box (the bird and the
    CONTEXT_MARGIN around it)."""
    rng = random.Random(seed)
    canvas_w, canvas_h = CANVAS_SIZE
    with Image.open(io.BytesIO(background)) as photo:
        canvas = photo.convert("RGB").resize(CANVAS_SIZE, Image.Resampling.BILINEAR)
    canvas = canvas.filter(ImageFilter.GaussianBlur(BACKGROUND_BLUR_PX))
    cell_w = canvas_w // max(1, len(birds))
    boxes = []
    for index, bird in enumerate(birds):
        image = crop_bird(bird)
        target_h = canvas_h * BIRD_HEIGHT_SHARE * rng.uniform(0.6, 1.0)
        scale = min(target_h / image.height, 0.9 * cell_w / image.width)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left = index * cell_w + rng.randint(0, max(0, cell_w - size[0]))
        top = rng.randint(round(0.1 * canvas_h), max(round(0.1 * canvas_h), canvas_h - size[1]))
        top = min(top, canvas_h - size[1])
        canvas.paste(image, (left, top))
        boxes.append(BBox(left / canvas_w, top / canvas_h, size[0] / canvas_w, size[1] / canvas_h))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=90)
    return out.getvalue(), boxes
