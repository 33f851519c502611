"""The five quality checks of SPEC section 5, each a pure function of measurements and thresholds.

Every check returns an integer score 0-100, whether it passed, and a reason a person can read.
`CHECKS` is the one explicit registry of checks with their weights (which sum to 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backfill_quality.config import Thresholds
from backfill_quality.models import Analysis, Category, CheckResult, Measurements, Subject

HIGH_MIN_SCORE = 80
MEDIUM_MIN_SCORE = 60
MULTIPLE_BIRDS_SCORE = 75
SUBJECT_OUT_OF_RANGE_SCORE = 50
NEAR_EDGE_SCORE = 50


def round_half_up(value: float) -> int:
    """Round like the original (JavaScript Math.round): halves go up."""
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def clamp_score(value: float) -> int:
    """Round to an integer and clamp to 0-100."""
    return max(0, min(100, round_half_up(value)))


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def check_bird_size(m: Measurements, t: Thresholds) -> CheckResult:
    """birdSize: area a of the bird box; a < min: 100*a/min; a > max: 100*(1-(a-max)/(1-max))."""
    if m.subject is None:
        return CheckResult("birdSize", 0, False, "no bird detected")
    area = m.subject.bbox.area
    if area < t.min_bird_area:
        return CheckResult(
            "birdSize",
            clamp_score(100 * area / t.min_bird_area),
            False,
            f"bird covers {_pct(area)} of the image, less than {_pct(t.min_bird_area)}: too small",
        )
    if area > t.max_bird_area:
        return CheckResult(
            "birdSize",
            clamp_score(100 * (1 - (area - t.max_bird_area) / (1 - t.max_bird_area))),
            False,
            f"bird covers {_pct(area)} of the image, more than {_pct(t.max_bird_area)}: too large",
        )
    return CheckResult("birdSize", 100, True, f"bird covers {_pct(area)} of the image")


def is_near_edge(subject: Subject, margin: float) -> bool:
    """Whether the subject's box comes within `margin` (fraction of the frame) of any edge."""
    box = subject.bbox
    eps = 1e-9  # a box exactly at the margin is not within it, whatever float rounding says
    return (
        box.x < margin - eps
        or box.y < margin - eps
        or box.x + box.width > 1 - margin + eps
        or box.y + box.height > 1 - margin + eps
    )


def check_positioning(m: Measurements, t: Thresholds) -> CheckResult:
    """positioning: visible ratio v < min: 100*v/min; box within the edge margin: 50; else 100."""
    if m.subject is None:
        return CheckResult("positioning", 100, True, "no bird detected: nothing is cut off")
    visible = m.subject.visible_ratio
    if visible < t.min_visible_ratio:
        return CheckResult(
            "positioning",
            clamp_score(100 * visible / t.min_visible_ratio),
            False,
            f"only {_pct(visible)} of the bird is visible, less than {_pct(t.min_visible_ratio)}",
        )
    if is_near_edge(m.subject, t.edge_margin):
        return CheckResult(
            "positioning",
            NEAR_EDGE_SCORE,
            False,
            f"bird is within {_pct(t.edge_margin)} of the image edge",
        )
    return CheckResult("positioning", 100, True, "bird is fully visible and away from the edges")


def check_resolution(m: Measurements, t: Thresholds) -> CheckResult:
    """resolution: pixels < min or short side < min: 100*pixels/min_pixels, capped at 100.

    The original's formula: a short side under the minimum fails the check, but the score only
    counts pixels, so a 500x375 photo fails at 100 points; the reason says both, so a reader of
    "failed, 100" is not left guessing.
    """
    pixels = m.width * m.height
    short_side = min(m.width, m.height)
    size = f"{m.width}x{m.height} ({pixels:,} pixels)"
    is_few_pixels = pixels < t.min_pixels
    is_short = short_side < t.min_short_side
    if not (is_few_pixels or is_short):
        return CheckResult("resolution", 100, True, f"{size} is enough detail")
    short = f"short side {short_side} px is under {t.min_short_side} px"
    if not is_few_pixels:
        reason = (
            f"{size}: {short}, so the check fails; but {pixels:,} pixels are at least "
            f"{t.min_pixels:,}, so it scores 100"
        )
    else:
        few = f"fewer than {t.min_pixels:,} pixels"
        reason = f"{size}: {few}, and {short}" if is_short else f"{size}: {few}"
    return CheckResult("resolution", clamp_score(100 * pixels / t.min_pixels), False, reason)


def check_contrast(m: Measurements, t: Thresholds) -> CheckResult:
    """contrast: brightness b < min: 100*b/min; b > max: 100*(1-(b-max)/35); else 100."""
    b = m.brightness
    if b < t.min_brightness:
        return CheckResult(
            "contrast",
            clamp_score(100 * b / t.min_brightness),
            False,
            f"brightness {b:.0f} is under {t.min_brightness:.0f}: too dark",
        )
    if b > t.max_brightness:
        return CheckResult(
            "contrast",
            clamp_score(100 * (1 - (b - t.max_brightness) / (255 - t.max_brightness))),
            False,
            f"brightness {b:.0f} is over {t.max_brightness:.0f}: overexposed",
        )
    return CheckResult("contrast", 100, True, f"brightness {b:.0f} is well exposed")


def check_primary_subject(m: Measurements, t: Thresholds) -> CheckResult:
    """primarySubject: no bird 0; area outside [min, max] 50; several birds 75; else 100."""
    if m.subject is None:
        return CheckResult("primarySubject", 0, False, "no bird detected")
    area = m.subject.bbox.area
    if not t.min_bird_area <= area <= t.max_bird_area:
        return CheckResult(
            "primarySubject",
            SUBJECT_OUT_OF_RANGE_SCORE,
            False,
            f"bird size {_pct(area)} is outside {_pct(t.min_bird_area)}-{_pct(t.max_bird_area)}",
        )
    if m.subject.count > 1:
        return CheckResult(
            "primarySubject",
            MULTIPLE_BIRDS_SCORE,
            False,
            f"{m.subject.count} birds: no single primary subject",
        )
    return CheckResult("primarySubject", 100, True, "one bird is clearly the main subject")


@dataclass(frozen=True, slots=True)
class Check:
    """A registered check: its output name, weight in percent, and function."""

    name: str
    weight_pct: int
    run: Callable[[Measurements, Thresholds], CheckResult]

    @property
    def weight(self) -> float:
        return self.weight_pct / 100


CHECKS: tuple[Check, ...] = (
    Check("birdSize", 25, check_bird_size),
    Check("positioning", 20, check_positioning),
    Check("resolution", 20, check_resolution),
    Check("contrast", 15, check_contrast),
    Check("primarySubject", 20, check_primary_subject),
)


def category_for(score: int) -> Category:
    """high >= 80, medium >= 60, else low."""
    if score >= HIGH_MIN_SCORE:
        return "high"
    if score >= MEDIUM_MIN_SCORE:
        return "medium"
    return "low"


def evaluate(m: Measurements, t: Thresholds) -> Analysis:
    """Run every check; overall = round(sum of weight * score), in exact integer arithmetic."""
    results = tuple(check.run(m, t) for check in CHECKS)
    weighted_pct = sum(c.weight_pct * r.score for c, r in zip(CHECKS, results, strict=True))
    score = (weighted_pct + 50) // 100
    return Analysis(measurements=m, checks=results, score=score, category=category_for(score))
