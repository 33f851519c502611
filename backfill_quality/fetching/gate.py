"""Who may start a download now: the level in flight, a limit per host, pauses and rates.

`FetchGate` is what `ImageFetcher.fetch` passes through. A download first takes a slot of its
host (at most `FetchSettings.per_host_limit` per host, so one slow host among many cannot take
every slot), then one of the run's slots (the level: fixed with `--concurrency N`, moved by
`controller.LevelController` with `auto`). Before each attempt it waits while its host asked
for a pause (`Retry-After`) and, with `auto`, for the host's learnt rate ceiling. A 429 or 503
remembers 0.95 x the rate the host was getting as its last good maximum and cuts the ceiling to
0.7 x that; the ceiling then grows back along a cubic curve (CUBIC's, as the AWS SDKs'
adaptive retry mode uses): fast while far below the last maximum, flat near it, probing above it
ever faster if the host keeps answering. So a host that limits requests per second is used
close to its limit (the 0.7 cut only lasts the few seconds the curve takes to climb back), not at
a fraction of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from backfill_quality.config import FetchSettings
from backfill_quality.fetching.controller import LevelChange, LevelController

RATE_CUT_FACTOR = 0.7
"""A pushback cuts the rate ceiling to this share of the last good maximum (CUBIC's beta)."""
RATE_CUBIC_SCALE = 0.4
"""CUBIC's C, in requests/s per s^3: how fast the ceiling climbs back (the AWS SDKs' value)."""
RATE_SETTLE_FACTOR = 0.95
"""The curve flattens at this share of the rate that was pushed back: a step under the limit, so
a host that counts requests in a sliding second is not pushed again as soon as the curve is back
(measured against 20 requests/s: 15.0 requests/s with it, 13.2 at 1.0; 9.6 with the old linear
5 % a second)."""
MIN_RATE_RPS = 0.2
RATE_WINDOW_S = 2.0
"""Requests sent in this window are the host's measured rate when it pushes back."""

DemandProbe = Callable[[], float]
"""Seconds the consumers of the images have waited for input so far (averaged over them)."""


class Slots:
    """Slots whose number may change while tasks hold or wait for them; first come, first
    served. `take_peak` tells the most held at once since its last call."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # woken and cancelled at once: pass the slot on
            elif waiter in self._waiters:  # `_wake` drops cancelled waiters itself
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def take_peak(self) -> int:
        peak, self._peak = self._peak, self.in_use
        return peak

    def _take(self) -> None:
        self.in_use += 1
        self._peak = max(self._peak, self.in_use)

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)


class _Host:
    """What the gate knows of one host: its slots, a pause it asked for, its rate ceiling."""

    __slots__ = (
        "ceiling_rps",
        "last_cut_s",
        "last_max_rps",
        "next_send_s",
        "paused_until_s",
        "sent_s",
        "slots",
        "users",
    )

    def __init__(self, limit: int) -> None:
        self.slots = Slots(limit)
        self.users = 0
        self.paused_until_s = 0.0
        self.ceiling_rps: float | None = None
        self.next_send_s = 0.0
        self.last_cut_s = 0.0
        self.last_max_rps = 0.0
        self.sent_s: deque[float] = deque()


def _ceiling_at(state: _Host, now_s: float) -> float | None:
    """The host's rate ceiling at `now_s`: CUBIC's window curve in requests/s,
    C (t - K)^3 + max with K = cbrt(max (1 - beta) / C), t the seconds since the last cut:
    0.7 x max at the cut, max again after K seconds (about 2.5 s for 20 requests/s), then
    probing above it."""
    if state.ceiling_rps is None:
        return None
    last_max = state.last_max_rps
    k_s = math.cbrt(last_max * (1 - RATE_CUT_FACTOR) / RATE_CUBIC_SCALE)
    elapsed_s = max(0.0, now_s - state.last_cut_s)
    return max(MIN_RATE_RPS, RATE_CUBIC_SCALE * (elapsed_s - k_s) ** 3 + last_max)


def host_of(url: str) -> str:
    """`host:port` of a URL, the key of its limits."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"


class FetchGate:
    """Slots (per host, then for the run), Retry-After pauses, rate ceilings, and the adaptive
    level when `settings.is_adaptive`. `on_change` is told every move of the level."""

    def __init__(
        self,
        settings: FetchSettings,
        *,
        demand: DemandProbe | None = None,
        on_change: Callable[[LevelChange], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._demand = demand
        self._on_change = on_change
        self.controller = (
            LevelController(maximum=settings.max_concurrency, clock=clock)
            if settings.is_adaptive
            else None
        )
        self.slots = Slots(self.controller.level if self.controller else settings.ceiling)
        self._hosts: dict[str, _Host] = {}
        self._sending = 0  # attempts on the wire (not waiting for a pause or a rate slot)
        self._peak_sending = 0
        self._window_demand_s = demand() if demand is not None else 0.0
        self._window_started_s = clock()

    @property
    def level(self) -> int:
        return self.slots.limit

    @contextlib.asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        """A slot of `host`, then one of the run, for one download (all its attempts)."""
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(self._settings.per_host_limit)
        state.users += 1
        try:
            await state.slots.acquire()
            try:
                await self.slots.acquire()
                try:
                    yield
                finally:
                    self.slots.release()
            finally:
                state.slots.release()
        finally:
            state.users -= 1
            if (
                state.users == 0
                and state.paused_until_s <= self._clock()
                and state.ceiling_rps is None
                and self._hosts.get(host) is state
            ):
                del self._hosts[host]

    @contextlib.asynccontextmanager
    async def attempt(self, host: str) -> AsyncIterator[float]:
        """One attempt inside `hold`: waits out the host's pause and rate ceiling, then counts
        as sending until it ends; yields the time it was sent."""
        state = self._hosts.get(host)
        if state is not None:
            while (wait_s := state.paused_until_s - self._clock()) > 0:
                await asyncio.sleep(wait_s)
            if state.ceiling_rps is not None:
                await self._pace(state)
        now_s = self._clock()
        if state is not None and self.controller is not None:
            state.sent_s.append(now_s)
            while now_s - state.sent_s[0] > RATE_WINDOW_S:
                state.sent_s.popleft()
        self._sending += 1
        self._peak_sending = max(self._peak_sending, self._sending)
        try:
            yield now_s
        finally:
            self._sending -= 1

    def answered(self, host: str, latency_s: float) -> None:
        """The host answered without pushing back; `latency_s` until the response head."""
        if self.controller is not None:
            self.controller.on_answer(host, latency_s)
            self._end_window_if_due()

    def pushed_back(
        self, host: str, what: str, sent_s: float, retry_after_s: float | None = None
    ) -> None:
        """A 429/503/timeout/connection error for an attempt sent at `sent_s`."""
        state = self._hosts.get(host)
        if state is None:
            return
        now_s = self._clock()
        if retry_after_s is not None:
            pause_s = min(retry_after_s, self._settings.retry_after_cap_s)
            state.paused_until_s = max(state.paused_until_s, now_s + pause_s)
        if self.controller is None:
            return
        if what.startswith("HTTP") and sent_s >= state.last_cut_s:
            sent = len(state.sent_s)
            span_s = now_s - state.sent_s[0] if sent else RATE_WINDOW_S
            measured_rps = sent / max(1.0, span_s)
            # the rate it was getting: the ceiling it was paced at, unless it sent less
            last_max = min(_ceiling_at(state, now_s) or measured_rps, measured_rps)
            state.last_max_rps = max(MIN_RATE_RPS / RATE_CUT_FACTOR, RATE_SETTLE_FACTOR * last_max)
            state.ceiling_rps = RATE_CUT_FACTOR * state.last_max_rps
            state.last_cut_s = now_s
        self._apply(self.controller.on_pushback(host, what, sent_s))

    async def _pace(self, state: _Host) -> None:
        """One request per 1/ceiling for this host, the ceiling on its curve since the last cut."""
        now_s = self._clock()
        ceiling = _ceiling_at(state, now_s)
        assert ceiling is not None
        state.ceiling_rps = ceiling
        send_s = max(now_s, state.next_send_s)
        state.next_send_s = send_s + 1.0 / ceiling
        if send_s > now_s:
            await asyncio.sleep(send_s - now_s)

    def _end_window_if_due(self) -> None:
        controller = self.controller
        if controller is None or not controller.is_window_due():
            return
        now_s = self._clock()
        elapsed_s = max(1e-6, now_s - self._window_started_s)
        demand_s = self._demand() if self._demand is not None else 0.0
        idle_share = (demand_s - self._window_demand_s) / elapsed_s
        self._window_demand_s, self._window_started_s = demand_s, now_s
        peak, self._peak_sending = self._peak_sending, self._sending
        self._apply(controller.end_window(idle_share=idle_share, peak_in_flight=peak))

    def _apply(self, change: LevelChange | None) -> None:
        if change is None:
            return
        if change.new < change.old:  # a cut starts a new window here too
            self._window_demand_s = self._demand() if self._demand is not None else 0.0
            self._window_started_s = self._clock()
            self._peak_sending = self._sending
        self.slots.set_limit(change.new)
        if self._on_change is not None:
            self._on_change(change)
