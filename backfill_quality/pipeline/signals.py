"""SIGINT and SIGTERM during a run: the first asks it to stop cleanly, the second exits at once."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

EXIT_SIGNALS = {"SIGINT": 130, "SIGTERM": 143}
"""The exit code after each signal (128 + its number), as shells report it."""
HOW_TO_EXIT_AT_ONCE = {
    "SIGINT": "press Ctrl+C again to exit at once",
    "SIGTERM": "a second SIGTERM exits at once",
}
"""After the first signal, said in its own terms: Ctrl+C is a person at a terminal, SIGTERM is
more often a process manager (systemd, Kubernetes, `kill`)."""


def stopping_message(name: str) -> str:
    """What the user is told when the first signal `name` arrives."""
    return f"{name} received: stopping after saving the checkpoint ({HOW_TO_EXIT_AT_ONCE[name]})"


class StopSignals:
    """Handlers on the running loop: `on_first(name)` for the first signal, `os._exit` for the
    second (the last checkpoint on disk is whole, so nothing is lost by not waiting)."""

    def __init__(self, on_first: Callable[[str], None]) -> None:
        self._on_first = on_first
        self._received: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def received(self) -> str | None:
        """The name of the first signal received, if any."""
        return self._received

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for name in EXIT_SIGNALS:
            signum = getattr(signal, name)
            self._previous[signum] = signal.getsignal(signum)
            loop.add_signal_handler(signum, self._handle, name)

    def remove(self) -> None:
        """Put back the handlers found at start, so a caller that runs several cycles (watch) is
        never left without its own. Where those were the defaults (which kill the process or
        raise KeyboardInterrupt), a signal from now on finds the run over, its checkpoint
        saved: the first is ignored so the summary still prints and the exit code still says
        how the run ended; a second exits at once."""
        loop = asyncio.get_running_loop()
        for signum, previous in self._previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, _after_the_run if _is_default(previous) else previous)
        self._previous.clear()

    def _handle(self, name: str) -> None:
        if self._received is not None:
            os._exit(EXIT_SIGNALS[name])
        self._received = name
        self._on_first(name)


_late_signals: list[str] = []


def _is_default(handler: Any) -> bool:
    """Python's own handling: the defaults, or the SIGINT handler `asyncio.run` installs in
    their place for as long as it runs (it puts `default_int_handler` back when it returns,
    unless another handler replaced its own: a Ctrl+C after the run would raise
    KeyboardInterrupt and exit 130 with the run finished)."""
    if handler in (signal.SIG_DFL, signal.default_int_handler):
        return True
    method = handler.func if isinstance(handler, functools.partial) else handler
    return isinstance(getattr(method, "__self__", None), asyncio.Runner)


def _after_the_run(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if _late_signals:
        os._exit(EXIT_SIGNALS.get(name, 128 + signum))
    _late_signals.append(name)
