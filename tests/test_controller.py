"""The level of `--concurrency auto` (pure, on a fake clock) and the slots that apply it."""

from __future__ import annotations

import asyncio

from backfill_quality.fetching.controller import LevelController
from backfill_quality.fetching.gate import Slots


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def window(
    controller: LevelController,
    clock: Clock,
    latency_s: float,
    *,
    idle_share: float = 0.5,
    full: bool = True,
) -> int:
    """One window: answers at `latency_s`, then the window's end; the level after it."""
    for _ in range(5):
        controller.on_answer("h:80", latency_s)
    clock.now_s += 1.0
    assert controller.is_window_due()
    peak = controller.level if full else controller.level - 1
    controller.end_window(idle_share=idle_share, peak_in_flight=peak)
    return controller.level


def test_grows_by_doubling_while_scorers_wait_and_hosts_answer_fast() -> None:
    clock = Clock()
    controller = LevelController(maximum=64, initial=4, clock=clock)
    levels = [window(controller, clock, 0.1) for _ in range(5)]
    assert levels == [8, 16, 32, 64, 64]  # slow start, bounded by the maximum


def test_holds_when_the_scorers_are_busy_or_the_slots_were_not_all_used() -> None:
    clock = Clock()
    controller = LevelController(maximum=64, initial=8, clock=clock)
    assert window(controller, clock, 0.1, idle_share=0.0) == 8
    assert window(controller, clock, 0.1, full=False) == 8


def test_latency_well_above_unloaded_cuts_and_ends_slow_start() -> None:
    clock = Clock()
    controller = LevelController(maximum=64, initial=16, clock=clock)
    window(controller, clock, 0.1, idle_share=0.0)  # the unloaded latency: 100 ms
    assert window(controller, clock, 0.3) == 12  # 3x: cut by a quarter
    assert window(controller, clock, 0.1) == 13  # then additive growth (+1/8), no doubling


def test_pushback_halves_once_per_round_trip() -> None:
    clock = Clock()
    controller = LevelController(maximum=64, initial=32, clock=clock)
    sent_before_cut = clock.now_s
    clock.now_s += 0.1
    change = controller.on_pushback("h:80", "HTTP 429", sent_before_cut)
    assert change is not None and (change.old, change.new) == (32, 16)
    assert "HTTP 429" in change.reason
    # answers to requests sent before the cut do not cut again
    assert controller.on_pushback("h:80", "HTTP 429", sent_before_cut) is None
    clock.now_s += 0.5
    assert controller.on_pushback("h:80", "timeout", clock.now_s) is not None
    assert controller.level == 8


def test_slots_follow_a_changing_limit_first_come_first_served() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        await slots.acquire()

        async def wait(name: str) -> None:
            await slots.acquire()
            order.append(name)

        waiters = [asyncio.create_task(wait(name)) for name in "abc"]
        await asyncio.sleep(0)
        slots.set_limit(3)  # two more may go now, in arrival order
        await asyncio.sleep(0)
        order.append("|")
        slots.release()
        await asyncio.gather(*waiters)
        assert slots.take_peak() == 3
        return order

    assert asyncio.run(scenario()) == ["a", "b", "|", "c"]


def test_a_waiter_cancelled_while_the_slots_grow_neither_fails_nor_keeps_a_slot() -> None:
    async def scenario() -> tuple[int, int]:
        slots = Slots(1)
        await slots.acquire()
        waiters = [asyncio.create_task(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # a row stopped by Ctrl+C while it waited for a slot...
        slots.set_limit(3)  # ...just as the level grew and woke the waiters
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:] == [None, None]
        slots.release()
        slots.release()
        slots.release()
        return slots.in_use, len(slots._waiters)

    assert asyncio.run(scenario()) == (0, 0)
