"""The report's charts as geometry for the template's SVG: bars with their numbers written on
them, so a chart reads without colour (and without the picture, from its table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

HISTOGRAM_WIDTH = 420
HISTOGRAM_HEIGHT = 160
HISTOGRAM_TOP_PAD = 16
"""Room above the tallest bar for its count."""
BAR_GAP = 4


@dataclass(frozen=True, slots=True)
class Bar:
    """One vertical bar: its box in SVG units, its label and the number it stands for."""

    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True, slots=True)
class Share:
    """One horizontal bar: a part of a whole, as a width in percent and the numbers."""

    label: str
    value: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.value / self.total if self.total else 0.0


def histogram_bars(counts: list[int]) -> list[Bar]:
    """Deciles 0-9 … 90-100 as bars scaled to the tallest; an empty histogram draws flat."""
    tallest = max(counts, default=0) or 1
    slot = HISTOGRAM_WIDTH / max(len(counts), 1)
    usable = HISTOGRAM_HEIGHT - HISTOGRAM_TOP_PAD
    bars = []
    for index, count in enumerate(counts):
        height = usable * count / tallest
        low = index * 10
        label = f"{low}-{low + 9}" if index < len(counts) - 1 else f"{low}-100"
        bars.append(
            Bar(
                x=round(index * slot + BAR_GAP / 2, 2),
                y=round(HISTOGRAM_HEIGHT - height, 2),
                width=round(slot - BAR_GAP, 2),
                height=round(height, 2),
                label=label,
                value=count,
            )
        )
    return bars


def shares(values: dict[str, int], total: int) -> list[Share]:
    """Each value as a share of `total` (categories of the rows, passes of each check)."""
    return [Share(label, value, total) for label, value in values.items()]


class _Period(Protocol):
    @property
    def rows(self) -> int: ...
    @property
    def mean_score(self) -> float: ...


TREND_WIDTH = 420
TREND_HEIGHT = 140
TREND_MAX_BAR_WIDTH = 36


def trend_bars(periods: Sequence[_Period]) -> list[Bar]:
    """The mean score of each period (oldest first) as bars on a fixed 0-100 scale."""
    slot = min(TREND_WIDTH / max(len(periods), 1), TREND_MAX_BAR_WIDTH + BAR_GAP)
    bars = []
    for index, period in enumerate(periods):
        height = TREND_HEIGHT * max(0.0, min(period.mean_score, 100.0)) / 100.0
        bars.append(
            Bar(
                x=round(index * slot + min(BAR_GAP, slot / 4) / 2, 2),
                y=round(TREND_HEIGHT - height, 2),
                width=round(max(slot - min(BAR_GAP, slot / 4), 1.0), 2),
                height=round(height, 2),
                label=f"{period.mean_score:.1f}",
                value=period.rows,
            )
        )
    return bars
