"""decode_image: formats, orientation, size guard and broken inputs; measure_brightness."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from backfill_quality.demo.synthetic import make_bird_image
from backfill_quality.errors import DecodeError
from backfill_quality.scoring.imaging import (
    WORK_SIZE,
    decode_image,
    measure_brightness,
    measure_contrast_std,
)

# A 4:3 picture's working copy: an integer box reduction of the (DCT-scaled) decode, so its long
# side lies between half and all of WORK_SIZE (256).
WORKING_SHAPES_4_3 = {(150, 200, 3), (188, 250, 3), (192, 256, 3)}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 400, height: int = 300) -> Image.Image:
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([xs + 0 * ys, ys + 0 * xs, np.full((height, width), 90.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_large_jpeg_decodes_to_working_copy_with_original_size() -> None:
    data = make_bird_image(seed=1, width=4000, height=3000)
    image = decode_image(data)
    assert (image.width, image.height) == (4000, 3000)
    assert image.rgb.shape in WORKING_SHAPES_4_3
    assert image.rgb.dtype == np.uint8


def test_jpeg_decode_is_fast() -> None:
    data = make_bird_image(seed=2, width=1600, height=1200)
    decode_image(data)
    start = time.perf_counter()
    for _ in range(10):
        decode_image(data)
    assert (time.perf_counter() - start) / 10 < 0.05  # a few ms normally; generous for shared CI


def test_small_image_is_not_upscaled() -> None:
    image = decode_image(encode(gradient(120, 80), "PNG"))
    assert image.rgb.shape == (80, 120, 3)


@pytest.mark.parametrize(
    ("orientation", "size", "corner"),
    [
        (1, (400, 300), "red"),
        (3, (400, 300), "blue"),
        (6, (300, 400), "yellow"),
        (8, (300, 400), "green"),
    ],
)
def test_exif_orientation_is_applied(orientation: int, size: tuple[int, int], corner: str) -> None:
    # Quadrants: top-left red, top-right green, bottom-left yellow, bottom-right blue.
    pixels = np.zeros((300, 400, 3), np.uint8)
    pixels[:150, :200] = (255, 0, 0)
    pixels[:150, 200:] = (0, 255, 0)
    pixels[150:, :200] = (255, 255, 0)
    pixels[150:, 200:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = decode_image(encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95))
    assert (image.width, image.height) == size
    assert (image.rgb.shape[1] > image.rgb.shape[0]) == (size[0] > size[1])
    expected = {
        "red": (255, 0, 0),
        "green": (0, 255, 0),
        "yellow": (255, 255, 0),
        "blue": (0, 0, 255),
    }
    top_left = image.rgb[5, 5].astype(int)
    assert np.abs(top_left - np.array(expected[corner])).max() < 40


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_common_formats(fmt: str) -> None:
    image = decode_image(encode(gradient(), fmt))
    assert (image.width, image.height) == (400, 300)
    assert image.rgb.shape in WORKING_SHAPES_4_3


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK"])
def test_modes_become_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = decode_image(encode(gradient().convert(mode), fmt))
    assert image.rgb.shape in WORKING_SHAPES_4_3


def test_cmyk_jpeg_keeps_brightness() -> None:
    source = gradient()
    image = decode_image(encode(source.convert("CMYK"), "JPEG", quality=95))
    assert measure_brightness(image.rgb) == pytest.approx(
        measure_brightness(np.asarray(source)), abs=4.0
    )


def test_transparent_pixels_are_composited_on_white() -> None:
    image = decode_image(encode(Image.new("RGBA", (50, 40), (0, 0, 0, 0)), "PNG"))
    assert int(image.rgb.min()) == 255


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.linspace(0, 65535, 300 * 400).reshape(300, 400).astype(np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    image = decode_image(encode(source, "PNG"))
    assert measure_brightness(image.rgb) == pytest.approx(127.5, abs=3.0)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (60, 40), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image = decode_image(buffer.getvalue())
    assert tuple(image.rgb[10, 10]) == (255, 0, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an image"),
        (b"<html>502 Bad Gateway</html>", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "image"),
    ],
)
def test_non_images_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_raises_decode_error(fmt: str) -> None:
    data = make_bird_image(seed=3, width=800, height=600, fmt=fmt)
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_is_checked_before_decoding() -> None:
    bomb = encode(Image.new("L", (12_000, 12_000)), "PNG")  # 144 Mpx, compresses to ~140 kB
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="too large"):
        decode_image(bomb)
    assert time.perf_counter() - start < 0.5


def test_own_pixel_limit() -> None:
    data = encode(gradient(), "PNG")
    with pytest.raises(DecodeError, match="400x300 = 120,000 pixels exceeds the limit of 100,000"):
        decode_image(data, max_pixels=100_000)


def test_work_size_is_configurable() -> None:
    image = decode_image(make_bird_image(seed=4, width=1600, height=1200), work_size=128)
    assert 64 < max(image.rgb.shape[:2]) <= 128 < WORK_SIZE


def test_brightness_and_contrast() -> None:
    flat = np.full((10, 10, 3), (30, 60, 90), np.uint8)
    assert measure_brightness(flat) == pytest.approx(60.0)
    assert measure_contrast_std(flat) == pytest.approx(0.0, abs=1e-3)
    half = np.zeros((10, 10, 3), np.uint8)
    half[:5] = 255
    assert measure_contrast_std(half) == pytest.approx(127.5, abs=0.5)
