"""Generated bird-like photographs with known truth, for tests, the demo and benchmarks.

An image is a soft natural-looking background (sky/foliage/earth gradients plus low-frequency
colour noise, optionally blurred) with zero or more sharp, textured "birds" (ellipse body,
head, beak, tail, legs) that exactly fill the requested boxes. Everything is deterministic
by seed. The picture is built at a modest resolution with NumPy, upscaled once and given a
fine film grain, so even a 4000x3000 JPEG is generated quickly. Encoding needs Pillow, which
is why this module imports it (it is never on the scoring path).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

BirdBox = tuple[float, float, float, float]
"""(x, y, width, height) normalized to the image, (x, y) the top-left; may extend past it."""

DEFAULT_BIRD: BirdBox = (0.3, 0.25, 0.4, 0.5)
BUILD_LONG_SIDE_PX = 640
"""Long side of the canvas on which shapes are drawn before the final upscale."""
BACKGROUND_GRID_CELLS = 7
"""Low-frequency noise resolution (cells along the long side)."""
CHROMA_SHARE = 0.3
"""Colour part of the background noise relative to its brightness part (natural scenes)."""
SCENE_AMPLITUDE = 28.0
"""Strength of the background's colour blobs behind birds (0-255 units)."""
CALM_AMPLITUDE = 4.0
"""Strength of the blobs in an empty, featureless scene."""
CALM_GRADIENT_SHARE = 0.25
"""An empty scene keeps a quarter of the sky-to-ground colour change."""
GRAIN_TILE_PX = 128
GRAIN_SIGMA = 4.0
"""Fine sensor-like noise added at full size (standard deviation, 0-255 units)."""

_SCENES: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((150, 190, 225), (95, 130, 70), (85, 110, 55)),  # sky over foliage
    ((90, 120, 60), (60, 95, 45), (120, 140, 80)),  # foliage
    ((140, 115, 85), (110, 90, 65), (165, 145, 110)),  # earth and bark
    ((120, 150, 170), (80, 110, 130), (150, 170, 180)),  # water
    ((200, 210, 220), (170, 180, 190), (210, 215, 225)),  # overcast sky
)
_BIRD_COLOURS: tuple[tuple[int, int, int], ...] = (
    (200, 40, 30),
    (240, 200, 40),
    (30, 60, 170),
    (25, 25, 30),
    (245, 245, 240),
    (230, 120, 30),
)


def make_bird_image(
    *,
    seed: int,
    width: int,
    height: int,
    birds: Sequence[BirdBox] = (DEFAULT_BIRD,),
    brightness: float = 1.0,
    blur_background: bool = True,
    fmt: str = "JPEG",
    quality: int = 85,
) -> bytes:
    """Encoded image bytes: a background with one sharp bird per box (boxes may be cut)."""
    rng = np.random.default_rng(seed)
    canvas = _background(rng, width, height, is_blurred=blur_background)
    for box in birds:
        _draw_bird(canvas, box, rng)
    return _finish(canvas, rng, width, height, brightness, fmt, quality)


def make_empty_image(
    *, seed: int, width: int, height: int, brightness: float = 1.0, fmt: str = "JPEG"
) -> bytes:
    """Encoded image bytes: a calm, featureless scene (sky, fog, a wall) with nothing in it."""
    rng = np.random.default_rng(seed)
    canvas = _background(
        rng,
        width,
        height,
        is_blurred=True,
        noise_amplitude=CALM_AMPLITUDE,
        gradient_share=CALM_GRADIENT_SHARE,
    )
    return _finish(canvas, rng, width, height, brightness, fmt, 85)


def _build_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, BUILD_LONG_SIDE_PX / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def _background(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    is_blurred: bool,
    noise_amplitude: float = SCENE_AMPLITUDE,
    gradient_share: float = 1.0,
) -> NDArray[np.float32]:
    """(h, w, 3) float canvas at build size: vertical gradient + smooth colour noise."""
    build_w, build_h = _build_size(width, height)
    scene = np.array(_SCENES[int(rng.integers(len(_SCENES)))], dtype=np.float32)
    scene = scene[0] + (scene - scene[0]) * gradient_share
    rows = np.linspace(0.0, 1.0, build_h, dtype=np.float32)[:, None, None]
    split = float(rng.uniform(0.3, 0.7))
    upper = scene[0] + (scene[1] - scene[0]) * np.clip(rows / split, 0.0, 1.0)
    lower = scene[1] + (scene[2] - scene[1]) * np.clip((rows - split) / (1.0 - split), 0.0, 1.0)
    gradient = np.where(rows < split, upper, lower)
    canvas = np.broadcast_to(gradient, (build_h, build_w, 3)).copy()
    canvas += _smooth_noise(rng, build_w, build_h, BACKGROUND_GRID_CELLS, amplitude=noise_amplitude)
    if not is_blurred:
        canvas += _smooth_noise(rng, build_w, build_h, build_w // 12, amplitude=26.0)
    return canvas


def _smooth_noise(
    rng: np.random.Generator, width: int, height: int, cells: int, *, amplitude: float
) -> NDArray[np.float32]:
    """Mostly-luminance noise with about `cells` blobs along the long side, bicubic-upscaled."""
    cells = max(2, cells)
    grid_w = max(2, round(cells * width / max(width, height)))
    grid_h = max(2, round(cells * height / max(width, height)))
    luma = rng.normal(0.0, amplitude, (grid_h, grid_w, 1))
    chroma = rng.normal(0.0, amplitude * CHROMA_SHARE, (grid_h, grid_w, 3))
    grid = (luma + chroma).astype(np.float32)
    offset = np.clip(grid + 128.0, 0.0, 255.0).astype(np.uint8)
    big = Image.fromarray(offset).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) - 128.0


def _draw_bird(canvas: NDArray[np.float32], box: BirdBox, rng: np.random.Generator) -> None:
    """Paint a textured bird whose silhouette spans `box` (normalized), clipped to the frame."""
    build_h, build_w = canvas.shape[:2]
    x0, y0 = box[0] * build_w, box[1] * build_h
    box_w, box_h = max(box[2] * build_w, 2.0), max(box[3] * build_h, 2.0)
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right = min(build_w, int(np.ceil(x0 + box_w)))
    bottom = min(build_h, int(np.ceil(y0 + box_h)))
    if right <= left or bottom <= top:
        return
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    u, v = (xs + 0.5 - x0) / box_w, (ys + 0.5 - y0) / box_h
    if rng.random() < 0.5:
        u = 1.0 - u
    body, wing = _bird_masks(u, v)
    region = canvas[top:bottom, left:right]
    colour = _pick_bird_colour(region, rng)
    stripes = 18.0 * np.sin((u * 31.0 + v * 17.0) * np.pi)[..., None]
    speckle = rng.normal(0.0, 14.0, (*u.shape, 1)).astype(np.float32)
    paint = colour[None, None, :] + stripes + speckle
    paint = np.where(wing[..., None], paint * 0.6, paint)
    region[body] = paint[body]


def _bird_masks(
    u: NDArray[np.float32], v: NDArray[np.float32]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Silhouette and wing masks in box coordinates (u, v in 0-1 span the whole bird)."""
    body = ((u - 0.55) / 0.33) ** 2 + ((v - 0.6) / 0.3) ** 2 <= 1.0
    head = ((u - 0.8) / 0.12) ** 2 + ((v - 0.2) / 0.2) ** 2 <= 1.0
    beak = (u >= 0.9) & (u <= 1.0) & (np.abs(v - 0.2) <= 0.07 * (1.0 - (u - 0.9) / 0.1))
    tail = (u >= 0.0) & (u <= 0.3) & (v >= 0.5 + 0.05 * u / 0.3) & (v <= 0.72)
    legs = (v >= 0.85) & (v <= 1.0) & ((np.abs(u - 0.5) <= 0.015) | (np.abs(u - 0.62) <= 0.015))
    wing = ((u - 0.5) / 0.22) ** 2 + ((v - 0.55) / 0.14) ** 2 <= 1.0
    silhouette = body | head | beak | tail | legs
    return silhouette, wing & silhouette


def _pick_bird_colour(region: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """A plumage colour far from the local background (random among the two farthest)."""
    local = region.reshape(-1, 3).mean(axis=0)
    colours = np.array(_BIRD_COLOURS, dtype=np.float32)
    order = np.argsort(-np.linalg.norm(colours - local, axis=1))
    chosen: NDArray[np.float32] = colours[order[int(rng.integers(2))]]
    return chosen


def _finish(
    canvas: NDArray[np.float32],
    rng: np.random.Generator,
    width: int,
    height: int,
    brightness: float,
    fmt: str,
    quality: int,
) -> bytes:
    """Upscale to the final size, add grain, apply brightness, encode."""
    small = Image.fromarray(np.clip(canvas, 0.0, 255.0).astype(np.uint8))
    pixels = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), np.int16)
    tile = rng.normal(0.0, GRAIN_SIGMA, (GRAIN_TILE_PX, GRAIN_TILE_PX, 1)).astype(np.int16)
    reps = (-(-height // GRAIN_TILE_PX), -(-width // GRAIN_TILE_PX), 1)
    pixels = pixels + np.tile(tile, reps)[:height, :width]
    if brightness != 1.0:
        pixels = (pixels * brightness).astype(np.int16)
    final = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG", "WEBP"):
        final.save(buffer, format=fmt.upper().replace("JPG", "JPEG"), quality=quality)
    else:
        final.save(buffer, format=fmt.upper())
    return buffer.getvalue()
