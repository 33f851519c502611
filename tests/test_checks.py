"""The five checks of SPEC section 5: exact examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill_quality.config import Thresholds
from backfill_quality.models import BBox, Measurements, Subject
from backfill_quality.scoring.checks import (
    CHECKS,
    category_for,
    check_bird_size,
    check_contrast,
    check_positioning,
    check_primary_subject,
    check_resolution,
    evaluate,
    round_half_up,
)

T = Thresholds()


def bird(
    x: float = 0.3, y: float = 0.3, w: float = 0.4, h: float = 0.5, count: int = 1, v: float = 1.0
) -> Subject:
    return Subject(bbox=BBox(x, y, w, h), count=count, visible_ratio=v, confidence=0.9)


def m(
    subject: Subject | None = None, width: int = 1600, height: int = 1200, brightness: float = 128
) -> Measurements:
    return Measurements(width=width, height=height, brightness=brightness, subject=subject)


def test_weights_sum_to_one_and_names_are_the_contract() -> None:
    assert sum(c.weight_pct for c in CHECKS) == 100
    assert [c.name for c in CHECKS] == [
        "birdSize",
        "positioning",
        "resolution",
        "contrast",
        "primarySubject",
    ]
    assert [c.weight for c in CHECKS] == [0.25, 0.20, 0.20, 0.15, 0.20]


@pytest.mark.parametrize(
    ("w", "h", "expected", "passed"),
    [
        pytest.param(0.3, 0.25, 50, False, id="area-0.075-half-of-min"),
        pytest.param(0.3, 0.5, 100, True, id="area-0.15-at-min-passes"),
        pytest.param(0.8, 1.0, 100, True, id="area-0.80-at-max-passes"),
        pytest.param(0.9, 1.0, 50, False, id="area-0.90-halfway-past-max"),
        pytest.param(1.0, 1.0, 0, False, id="area-1.0-fills-frame"),
        pytest.param(0.1, 0.1, 7, False, id="area-0.01-rounds-6.67-up"),
    ],
)
def test_bird_size(w: float, h: float, expected: int, passed: bool) -> None:
    result = check_bird_size(m(bird(0, 0, w, h)), T)
    assert (result.score, result.passed) == (expected, passed)


def test_no_bird_scores_zero_on_both_subject_checks_like_the_original() -> None:
    assert check_bird_size(m(None), T).score == 0
    assert check_primary_subject(m(None), T).score == 0
    # The original's ceiling when no bird is found: 20 + 20 + 15 = 55, always "low".
    analysis = evaluate(m(None), T)
    assert (analysis.score, analysis.category) == (55, "low")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        pytest.param(bird(v=0.3), 50, id="visible-0.3-of-0.6"),
        pytest.param(bird(v=0.59), 98, id="visible-just-under"),
        pytest.param(bird(x=0.02, v=1.0), 50, id="near-left-edge"),
        pytest.param(bird(x=0.3, w=0.68), 50, id="near-right-edge"),
        pytest.param(bird(x=0.05, y=0.05, w=0.9, h=0.9), 100, id="exactly-at-margin"),
        pytest.param(bird(), 100, id="centred"),
    ],
)
def test_positioning(subject: Subject, expected: int) -> None:
    assert check_positioning(m(subject), T).score == expected


@pytest.mark.parametrize(
    ("width", "height", "expected", "passed"),
    [
        pytest.param(400, 300, 100, False, id="400x300-min-pixels-but-short-side-300"),
        pytest.param(300, 200, 50, False, id="300x200-half"),
        pytest.param(1000, 300, 100, False, id="wide-short-capped-at-100"),
        pytest.param(2000, 100, 100, False, id="very-wide-original-gave-167"),
        pytest.param(500, 500, 100, True, id="500x500"),
        pytest.param(346, 346, 100, False, id="just-under-short-side"),
        pytest.param(100, 100, 8, False, id="tiny"),
    ],
)
def test_resolution(width: int, height: int, expected: int, passed: bool) -> None:
    result = check_resolution(m(width=width, height=height), T)
    assert (result.score, result.passed) == (expected, passed)


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        pytest.param(
            500,
            375,
            "500x375 (187,500 pixels): short side 375 px is under 400 px, so the check fails; "
            "but 187,500 pixels are at least 120,000, so it scores 100",
            id="the-originals-500x375",
        ),
        pytest.param(
            300,
            200,
            "300x200 (60,000 pixels): fewer than 120,000 pixels, and short side 200 px is under "
            "400 px",
            id="both-short",
        ),
        pytest.param(500, 500, "500x500 (250,000 pixels) is enough detail", id="enough"),
    ],
)
def test_the_resolution_reason_says_why_it_fails_and_why_it_scores_what_it_does(
    width: int, height: int, reason: str
) -> None:
    assert check_resolution(m(width=width, height=height), T).reason == reason


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_the_resolution_reason_names_every_rule_broken_and_a_full_score_despite_them(
    width: int, height: int
) -> None:
    result = check_resolution(m(width=width, height=height), T)
    pixels, short_side = width * height, min(width, height)
    assert (f"short side {short_side} px is under 400 px" in result.reason) == (short_side < 400)
    assert ("fewer than 120,000 pixels" in result.reason) == (pixels < 120_000)
    if not result.passed and pixels >= 120_000:  # failed on the short side alone
        assert result.score == 100
        assert result.reason.endswith("so it scores 100")


@pytest.mark.parametrize(
    ("brightness", "expected"),
    [
        pytest.param(0, 0, id="black"),
        pytest.param(20, 50, id="dark-half"),
        pytest.param(40, 100, id="at-min"),
        pytest.param(220, 100, id="at-max"),
        pytest.param(237.5, 50, id="halfway-to-white"),
        pytest.param(255, 0, id="white"),
    ],
)
def test_contrast(brightness: float, expected: int) -> None:
    assert check_contrast(m(brightness=brightness), T).score == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        pytest.param(None, 0, id="none"),
        pytest.param(bird(w=0.1, h=0.1), 50, id="too-small"),
        pytest.param(bird(0, 0, 0.95, 0.95), 50, id="too-large"),
        pytest.param(bird(count=2), 75, id="two-birds"),
        pytest.param(bird(), 100, id="one-bird"),
    ],
)
def test_primary_subject(subject: Subject | None, expected: int) -> None:
    assert check_primary_subject(m(subject), T).score == expected


def test_overall_is_weighted_sum_rounded_half_up() -> None:
    # birdSize 50 (area 0.075), positioning 100, resolution 100, contrast 100, primarySubject 50:
    # 12.5 + 20 + 20 + 15 + 10 = 77.5 -> 78 (Math.round), medium.
    analysis = evaluate(m(bird(0.3, 0.3, 0.3, 0.25)), T)
    assert [c.score for c in analysis.checks] == [50, 100, 100, 100, 50]
    assert (analysis.score, analysis.category) == (78, "medium")


def test_perfect_image_is_high() -> None:
    analysis = evaluate(m(bird()), T)
    assert (analysis.score, analysis.category) == (100, "high")
    assert all(c.passed for c in analysis.checks)


def test_thresholds_are_configurable() -> None:
    strict = Thresholds(min_bird_area=0.3)
    assert check_bird_size(m(bird(w=0.4, h=0.5)), strict).score == 67


@pytest.mark.parametrize(
    ("score", "category"),
    [(100, "high"), (80, "high"), (79, "medium"), (60, "medium"), (59, "low"), (0, "low")],
)
def test_category_boundaries(score: int, category: str) -> None:
    assert category_for(score) == category


def test_round_half_up_matches_math_round() -> None:
    assert [round_half_up(v) for v in (0.5, 1.5, 2.5, 2.4999, 77.5)] == [1, 2, 3, 2, 78]


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
subjects = st.one_of(
    st.none(),
    st.builds(
        lambda x, y, w, h, c, v: bird(x * (1 - w), y * (1 - h), max(w, 1e-3), max(h, 1e-3), c, v),
        unit,
        unit,
        unit,
        unit,
        st.integers(1, 5),
        unit,
    ),
)
measurements = st.builds(
    m,
    subjects,
    st.integers(1, 8000),
    st.integers(1, 8000),
    st.floats(min_value=0, max_value=255, allow_nan=False),
)


@given(measurements)
def test_scores_are_integers_in_range_and_category_agrees(meas: Measurements) -> None:
    analysis = evaluate(meas, T)
    for result in analysis.checks:
        assert isinstance(result.score, int)
        assert 0 <= result.score <= 100
        assert result.reason
    assert isinstance(analysis.score, int)
    assert 0 <= analysis.score <= 100
    assert analysis.category == category_for(analysis.score)


@given(
    st.floats(min_value=0, max_value=40, allow_nan=False),
    st.floats(min_value=0, max_value=40, allow_nan=False),
)
def test_contrast_monotone_in_the_dark(b1: float, b2: float) -> None:
    lo, hi = sorted((b1, b2))
    assert check_contrast(m(brightness=lo), T).score <= check_contrast(m(brightness=hi), T).score


@given(
    st.floats(min_value=220, max_value=255, allow_nan=False),
    st.floats(min_value=220, max_value=255, allow_nan=False),
)
def test_contrast_falls_as_it_overexposes(b1: float, b2: float) -> None:
    lo, hi = sorted((b1, b2))
    assert check_contrast(m(brightness=lo), T).score >= check_contrast(m(brightness=hi), T).score


@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(0, 200))
def test_resolution_monotone_in_size(width: int, height: int, grow: int) -> None:
    small = check_resolution(m(width=width, height=height), T).score
    large = check_resolution(m(width=width + grow, height=height + grow), T).score
    assert small <= large


@given(unit, unit)
def test_bird_size_monotone_below_min(a1: float, a2: float) -> None:
    lo, hi = sorted((a1 * 0.15, a2 * 0.15))
    s_lo = check_bird_size(m(bird(0, 0, 1.0, max(lo, 1e-6))), T).score
    s_hi = check_bird_size(m(bird(0, 0, 1.0, max(hi, 1e-6))), T).score
    assert s_lo <= s_hi


@given(unit, unit)
def test_visible_ratio_monotone(v1: float, v2: float) -> None:
    lo, hi = sorted((v1, v2))
    assert check_positioning(m(bird(v=lo)), T).score <= check_positioning(m(bird(v=hi)), T).score
