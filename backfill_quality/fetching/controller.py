"""`--concurrency auto`: how many downloads run at once, decided from what was measured. Pure.

The level moves once per window (about one round trip, at least `MIN_WINDOW_S`):
- it **grows** while the consumers (the scoring processes) waited for images during the window,
  every slot was in use (more slots could have been used), and the hosts answered near their
  unloaded latency: doubling at first ("slow start", until the first sign of load), then by an
  eighth;
- it **holds** when the consumers were busy: more downloads would only queue;
- it is **cut** by a quarter when the median latency of the window, each response against its
  own host's unloaded latency, rises above `LATENCY_CUT_RATIO`; and **halved** at once on 429,
  503, timeouts and connection errors (once per round trip: the answers to requests sent before
  the cut do not cut again).

AIMD, not a gradient, by measurement (`bench/controller.py`, docs/concurrency.md): against a
host whose latency grows with the load both keep it under 2x unloaded, but a gradient step
(level x unloaded/measured + sqrt(level)) grows by sqrt(level) per window, so at 1 s of latency
it took several times longer to reach the level that feeds the cores, and it has no answer to
"the cores are busy" other than latency, which a fast host never shows.

The unloaded latency of a host is the lowest smoothed latency seen in the last 30 to 60 s (a
minimum over two buckets), so a host that becomes slower for reasons of its own is re-learnt
instead of starving the run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

INITIAL_LEVEL = 4
MIN_WINDOW_S = 0.25
"""The shortest window: decisions at most 4 times a second, each on enough answers."""
MAX_WINDOW_S = 5.0
LATENCY_CUT_RATIO = 1.5
"""Cut when the window's median latency is this many times the unloaded one (issue 15: keep
it under 2x)."""
SLOW_START_EXIT_RATIO = 1.25
"""Leave slow start (doubling) once latency rises this much: the host starts to feel it."""
LATENCY_CUT_FACTOR = 0.75
PUSHBACK_CUT_FACTOR = 0.5
HUNGRY_IDLE_SHARE = 0.05
"""The consumers waited for images at least this share of the window: more would help."""
MIN_LATENCY_SAMPLES = 3
LATENCY_SMOOTHING = 0.3
BASELINE_BUCKET_S = 30.0
MAX_TRACKED_HOSTS = 4096


class Policy(StrEnum):
    """How the level moves on latency: AIMD (the default, chosen by measurement) or a gradient
    (Netflix concurrency-limits' Gradient2 step), kept for the comparison in bench/."""

    aimd = "aimd"
    gradient = "gradient"


@dataclass(frozen=True, slots=True)
class LevelChange:
    """The level moved from `old` to `new` because of `reason` (a sentence for the log)."""

    old: int
    new: int
    reason: str


class _Baseline:
    """The unloaded latency of one host: the minimum of its smoothed latency over 30-60 s."""

    __slots__ = ("bucket_started_s", "current_min_s", "previous_min_s", "smoothed_s")

    def __init__(self, now_s: float) -> None:
        self.smoothed_s: float | None = None
        self.current_min_s = math.inf
        self.previous_min_s = math.inf
        self.bucket_started_s = now_s

    def add(self, latency_s: float, now_s: float) -> float:
        """Take one latency; the ratio of it to the unloaded latency."""
        if self.smoothed_s is None:
            self.smoothed_s = latency_s
        else:
            self.smoothed_s += LATENCY_SMOOTHING * (latency_s - self.smoothed_s)
        if now_s - self.bucket_started_s >= BASELINE_BUCKET_S:
            self.previous_min_s, self.current_min_s = self.current_min_s, math.inf
            self.bucket_started_s = now_s
        self.current_min_s = min(self.current_min_s, self.smoothed_s)
        unloaded_s = min(self.current_min_s, self.previous_min_s)
        return latency_s / unloaded_s if unloaded_s > 0 else 1.0


class LevelController:
    """The adaptive level. Feed it answers (`on_answer`, `on_pushback`) and, when a window is
    due (`is_window_due`), what the window saw (`end_window`); each returns a LevelChange or
    None. The caller applies the level to its slots."""

    def __init__(
        self,
        *,
        maximum: int,
        initial: int = INITIAL_LEVEL,
        policy: Policy = Policy.aimd,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maximum = max(1, maximum)
        self.level = max(1, min(initial, self.maximum))
        self.policy = policy
        self._clock = clock
        self._is_slow_start = True
        self._last_cut_s = -math.inf
        self._window_started_s = clock()
        self._ratios: list[float] = []
        self._smoothed_latency_s = 0.0
        self._baselines: dict[str, _Baseline] = {}

    # -- events ---------------------------------------------------------------------------------

    def on_answer(self, host: str, latency_s: float) -> None:
        """A host answered (any status that is not pushback) after `latency_s` (to the head)."""
        now_s = self._clock()
        baseline = self._baselines.get(host)
        if baseline is None:
            if len(self._baselines) >= MAX_TRACKED_HOSTS:
                self._baselines.clear()
            baseline = self._baselines[host] = _Baseline(now_s)
        self._ratios.append(baseline.add(latency_s, now_s))
        self._smoothed_latency_s += LATENCY_SMOOTHING * (latency_s - self._smoothed_latency_s)

    def on_pushback(self, host: str, what: str, sent_s: float) -> LevelChange | None:
        """A 429, 503, timeout or connection error for a request sent at `sent_s`: halve the
        level, unless it was already cut after that request was sent."""
        if sent_s < self._last_cut_s:
            return None
        return self._cut(PUSHBACK_CUT_FACTOR, f"{what} from {host}")

    def is_window_due(self) -> bool:
        elapsed_s = self._clock() - self._window_started_s
        window_s = min(MAX_WINDOW_S, max(MIN_WINDOW_S, self._smoothed_latency_s))
        return elapsed_s >= window_s and (bool(self._ratios) or elapsed_s >= MAX_WINDOW_S)

    def end_window(self, *, idle_share: float, peak_in_flight: int) -> LevelChange | None:
        """Close the window: the consumers were idle `idle_share` (0-1) of it, and at most
        `peak_in_flight` downloads ran at once during it."""
        ratios, self._ratios = self._ratios, []
        self._window_started_s = self._clock()
        latency_ratio = statistics.median(ratios) if len(ratios) >= MIN_LATENCY_SAMPLES else None
        if self.policy is Policy.gradient:
            return self._gradient_step(latency_ratio, idle_share, peak_in_flight)
        if latency_ratio is not None and latency_ratio > LATENCY_CUT_RATIO:
            return self._cut(LATENCY_CUT_FACTOR, _latency_words(latency_ratio))
        if latency_ratio is not None and latency_ratio > SLOW_START_EXIT_RATIO:
            self._is_slow_start = False
        if idle_share < HUNGRY_IDLE_SHARE or peak_in_flight < self.level:
            return None  # the consumers are busy, or the slots were not the limit
        if self.level >= self.maximum:
            return None
        grown = self.level * 2 if self._is_slow_start else self.level + max(1, self.level // 8)
        words = _latency_words(latency_ratio) if latency_ratio is not None else "no answers yet"
        reason = f"scorers waited for images {idle_share:.0%} of the time; {words}"
        return self._move(min(self.maximum, grown), reason)

    # -- moves ----------------------------------------------------------------------------------

    def _gradient_step(
        self, latency_ratio: float | None, idle_share: float, peak_in_flight: int
    ) -> LevelChange | None:
        ratio = latency_ratio or 1.0
        gradient = max(0.5, min(1.0, SLOW_START_EXIT_RATIO / ratio))
        if gradient >= 1.0 and (idle_share < HUNGRY_IDLE_SHARE or peak_in_flight < self.level):
            return None
        target = self.level * gradient + (math.sqrt(self.level) if gradient >= 1.0 else 0.0)
        new = max(1, min(self.maximum, math.floor(target)))
        words = _latency_words(ratio)
        if new < self.level:
            self._last_cut_s = self._clock()
            return self._move(new, words)
        return self._move(new, f"scorers waited for images {idle_share:.0%} of the time; {words}")

    def _cut(self, factor: float, reason: str) -> LevelChange | None:
        self._is_slow_start = False
        self._last_cut_s = self._clock()
        self._ratios = []
        self._window_started_s = self._last_cut_s
        return self._move(max(1, math.floor(self.level * factor)), reason)

    def _move(self, new: int, reason: str) -> LevelChange | None:
        old, self.level = self.level, new
        return LevelChange(old, new, reason) if new != old else None


def _latency_words(ratio: float) -> str:
    return f"latency {ratio:.2f}x unloaded"
