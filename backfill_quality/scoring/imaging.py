"""Bytes -> a small RGB working array: size guard, draft-mode decode, EXIF orientation.

This is the only module (besides `annotate`) that imports Pillow. Every check reads the same
small array, so an image is decoded exactly once and never at full size when the format allows
it: JPEGs use draft mode (DCT scaling by 1/2, 1/4 or 1/8 inside libjpeg), which turns a
4000x3000 decode into a 500x375 one.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from backfill_quality.config import DEFAULT_MAX_PIXELS
from backfill_quality.errors import DecodeError

WORK_SIZE = 256
"""Largest long side of the working copy, in pixels: enough for brightness and subject
detection (the detector works on a 32-cell map), small enough to keep analysis at a few ms.
JPEGs are decoded at the smallest DCT scale whose result is at least this big, then reduced by
an integer box factor, so the long side lands between about half and all of it: no bilinear
pass (it cost 1.3 ms a 1600x1200 photo, a quarter of the scaled decode itself)."""
LARGE_PHOTO_FACTOR = 4
"""A JPEG whose long side is at least this many working sizes is decoded at the smallest DCT
scale that still gives half the working size (1/8 for a 1600x1200 photo: the working copy
straight from the decoder, 1 ms less than 1/4 plus a box reduction). Smaller photos keep the
finer scale, whose box reduction the detector was measured on."""

EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSE_BY_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class WorkingImage:
    """A decoded image: displayed size of the original and a small RGB copy to analyse."""

    width: int
    """Original pixel width as displayed (after EXIF orientation)."""
    height: int
    """Original pixel height as displayed (after EXIF orientation)."""
    rgb: NDArray[np.uint8]
    """(h, w, 3) working copy, long side <= the work size, same aspect ratio as displayed."""


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, work_size: int = WORK_SIZE
) -> WorkingImage:
    """Decode image bytes into a `WorkingImage`; raise `DecodeError` for anything unusable.

    The pixel count is checked from the header before any pixel data is decoded, so a
    decompression bomb costs only the header parse.
    """
    if not data:
        raise DecodeError("not an image (the body is empty)")
    image = _open(data, max_pixels)
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(
                _too_large_message(f"{width}x{height} = {width * height:,}", max_pixels)
            )
        orientation = _orientation(image)
        small = _decode_small(image, work_size)
        transpose = _TRANSPOSE_BY_ORIENTATION.get(orientation)
        if transpose is not None:
            small = small.transpose(transpose)
        rgb: NDArray[np.uint8] = np.asarray(small, dtype=np.uint8)
    finally:
        image.close()
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return WorkingImage(width=width, height=height, rgb=rgb)


def measure_brightness(rgb: NDArray[np.uint8]) -> float:
    """Mean of the R, G, B channel means, 0-255 (the original service's brightness)."""
    if rgb.size == 0:
        return 0.0
    # the channels have the same number of pixels, so the mean of the three channel means is
    # the mean of all values: one contiguous reduction instead of a strided one (10x faster)
    return float(rgb[..., :3].mean(dtype=np.float64))


def measure_contrast_std(rgb: NDArray[np.uint8]) -> float:
    """Standard deviation of the luma (Rec. 601), 0-~128: how flat the image is."""
    if rgb.size == 0:
        return 0.0
    luma = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(luma.std(dtype=np.float64))


def _too_large_message(size: str, max_pixels: int) -> str:
    return (
        f"image too large: {size} pixels exceeds the limit of {max_pixels:,} "
        "(possible decompression bomb); raise the pixel limit if such images are expected"
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only (Pillow's open is lazy); translate every failure to DecodeError."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check (which runs next) replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) fired before our check could.
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,}" if found else "too many"
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or max_pixels)
        raise DecodeError(_too_large_message(size, min(max_pixels, pillow_limit))) from error
    except UnidentifiedImageError as error:
        start = data[:8].hex(" ")
        raise DecodeError(
            f"not an image (unrecognized format, {len(data):,} bytes starting with {start})"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DecodeError(f"truncated or corrupt image ({error})") from error


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when absent or unreadable."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not fail the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _decode_small(image: Image.Image, work_size: int) -> Image.Image:
    """Decode (at reduced DCT scale for JPEG) and shrink to an RGB image of <= work_size."""
    fmt = image.format
    try:
        if fmt == "JPEG":
            is_large = max(image.size) >= LARGE_PHOTO_FACTOR * work_size
            request = work_size // 2 if is_large else work_size
            image.draft("RGB", (request, request))
        image.load()
        flat = _to_resizable(image)
        flat = _shrink(flat, work_size)
        return _to_rgb(flat)
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        kind = fmt or "image"
        raise DecodeError(f"truncated or corrupt image ({kind}: {error})") from error


def _to_resizable(image: Image.Image) -> Image.Image:
    """Bring any mode to RGB, RGBA or L (modes Pillow resizes with a real filter)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return _wide_to_gray(image)
    if mode in ("RGB", "RGBA", "L"):
        return image
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    if mode == "P":
        return image.convert("RGBA" if image.palette and image.palette.mode == "RGBA" else "RGB")
    return image.convert("RGB")  # 1, CMYK, YCbCr, LAB, HSV, I;16 variants handled above


def _wide_to_gray(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit grayscale -> 8-bit L, scaling the 16-bit range instead of clipping it."""
    values = np.asarray(image).astype(np.float32)
    top = float(values.max()) if values.size else 0.0
    if image.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0
    else:
        scale = 1.0 / 257.0 if image.mode != "I" or top > 255.0 else 1.0
    gray = np.clip(values * scale, 0.0, 255.0).astype(np.uint8)
    return Image.fromarray(gray)


def _shrink(image: Image.Image, work_size: int) -> Image.Image:
    """Bring the long side to at most work_size by an integer box reduction (fast, antialiased)."""
    long_side = max(image.size)
    if long_side <= work_size:
        return image
    factor = -(-long_side // work_size)  # ceil: the smallest factor that fits
    return image.reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as is; RGBA composited on white; L expanded to RGB."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, _WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def resize_rgb(rgb: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """An (h, w, 3) uint8 array resized to (height, width, 3), bilinear (the models' input)."""
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
