"""StopSignals under `asyncio.run`, as the runner uses them: what handles a signal afterwards."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from backfill_quality.pipeline import signals
from backfill_quality.pipeline.signals import StopSignals


@pytest.fixture
def python_handlers() -> Iterator[None]:
    """Python's own handlers before, and back after (this test changes the process's)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
    signals._late_signals.clear()


def test_after_a_run_under_asyncio_run_a_first_late_signal_is_ignored(
    python_handlers: None,
) -> None:
    async def run() -> None:
        stop = StopSignals(lambda name: None)
        stop.install()
        stop.remove()  # the run is over; asyncio.run has not returned yet

    asyncio.run(run())
    # asyncio.run put its own SIGINT handler in place while it ran: it must not come back as
    # default_int_handler (KeyboardInterrupt, exit 130 after a run that finished)
    assert signal.getsignal(signal.SIGINT) is signals._after_the_run
    assert signal.getsignal(signal.SIGTERM) is signals._after_the_run
    signal.raise_signal(signal.SIGINT)  # the first late one: noted, nothing else
    assert signals._late_signals == ["SIGINT"]
