"""A database connection that survives: reconnects with backoff when the server drops us.

All calls run on one dedicated thread (psycopg connections are not shared across threads here),
so the async pipeline awaits them without blocking its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from backfill_quality import db
from backfill_quality.errors import DatabaseError

T = TypeVar("T")

RECONNECT_BASE_S = 0.25
RECONNECT_CAP_S = 8.0
RECONNECT_BUDGET_S = 60.0


class DatabaseSession:
    """One connection, used from one thread, reconnected on retryable errors."""

    def __init__(
        self,
        database_url: str,
        *,
        on_reconnect: Callable[[str], None] | None = None,
        reconnect_budget_s: float = RECONNECT_BUDGET_S,
    ) -> None:
        self._url = database_url
        self._conn: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bq-db")
        self._on_reconnect = on_reconnect
        self._budget_s = reconnect_budget_s

    def open(self) -> None:
        """Connect now (synchronously) so a bad URL fails before any work starts."""
        self._conn = db.connect(self._url)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
        self._executor.shutdown(wait=True)

    @property
    def connection(self) -> Any:
        """The live connection, for synchronous use before the pipeline starts."""
        if self._conn is None:
            self._conn = db.connect(self._url)
        return self._conn

    def call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, *args) and retry it on a fresh connection after a retryable error."""
        deadline = time.monotonic() + self._budget_s
        attempt = 0
        while True:
            try:
                return fn(self.connection, *args, **kwargs)
            except DatabaseError as exc:
                if not exc.retryable or time.monotonic() >= deadline:
                    raise
                self._drop()
                attempt += 1
                delay = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**attempt) * random.uniform(0.5, 1)
                if self._on_reconnect is not None:
                    self._on_reconnect(f"{exc}; reconnecting in {delay:.1f}s (attempt {attempt})")
                time.sleep(delay)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """call_sync on the session's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: self.call_sync(fn, *args, **kwargs)
        )

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to save
                conn.close()
