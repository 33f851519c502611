"""A database connection that survives: reconnects with backoff when the server drops us.

All calls run on one dedicated thread (psycopg connections are not shared across threads here),
so the async pipeline awaits them without blocking its event loop, and a signal can cancel the
statement that is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.errors import DatabaseError

T = TypeVar("T")
W = TypeVar("W")  # a row to write, as the write function takes it

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
        application_name: str = "backfill-quality",
        on_connect: Callable[[Any], None] | None = None,
    ) -> None:
        """`on_connect(conn)` runs on every new connection before its first use (the run
        takes its lock there, again after each reconnect); what it raises reaches the caller,
        retried like a statement when it is a retryable DatabaseError."""
        self._url = database_url
        self._application_name = application_name
        self._on_connect = on_connect
        self._conn: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bq-db")
        self._on_reconnect = on_reconnect
        self._budget_s = reconnect_budget_s
        self._closing = threading.Event()

    async def open(self) -> None:
        """Connect now, without retrying, so a wrong URL fails before any work starts."""
        await self._on_thread(self._connect)

    def close(self) -> None:
        """Stop reconnecting, wait for the session's thread, close the connection."""
        self._closing.set()
        self._executor.shutdown(wait=True)
        self._drop()

    def cancel(self) -> None:
        """Cancel the statement running now (from any thread); it fails on its own thread."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # nothing running, or the server is gone
                conn.cancel_safe(timeout=2.0)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(conn, *args, **kwargs) on the session's thread, retried after a reconnect."""
        return await self._on_thread(lambda: self._call_sync(fn, *args, **kwargs))

    async def write_scores(
        self, target: Target, rows: Sequence[db.ScoreWrite]
    ) -> list[db.WriteResult]:
        """Write a batch of scores with their results (`db.write_score_results`)."""
        return await self.write_rows(db.write_score_results, target, rows)

    async def write_rows(
        self,
        write: Callable[[Any, Target, Sequence[W]], list[db.WriteResult]],
        target: Target,
        rows: Sequence[W],
    ) -> list[db.WriteResult]:
        """`write(conn, target, rows)`, each row its own transaction; after a reconnect only the
        rows not yet confirmed are sent again, so a row committed before the loss is not mistaken
        for someone else's write."""
        done: list[db.WriteResult] = []
        remaining = list(rows)

        def attempt(conn: Any) -> list[db.WriteResult]:
            nonlocal remaining
            try:
                results = write(conn, target, remaining)
            except DatabaseError as exc:
                confirmed = [r for r in exc.confirmed if isinstance(r, db.WriteResult)]
                done.extend(confirmed)
                remaining = remaining[len(confirmed) :]
                raise
            done.extend(results)
            return done

        return await self.call(attempt)

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connect(self) -> Any:
        if self._conn is None:
            conn = db.connect(self._url, application_name=self._application_name)
            if self._on_connect is not None:
                try:
                    self._on_connect(conn)
                except BaseException:
                    with contextlib.suppress(Exception):  # the error below says what matters
                        conn.close()
                    raise
            self._conn = conn
        return self._conn

    def _call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        budget_end = time.monotonic() + self._budget_s
        attempt = 0
        while True:
            try:
                return fn(self._connect(), *args, **kwargs)
            except DatabaseError as exc:
                if not exc.retryable or time.monotonic() >= budget_end or self._closing.is_set():
                    raise
                self._drop()
                attempt += 1
                delay = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2**attempt) * random.uniform(0.5, 1)
                if self._on_reconnect is not None:
                    self._on_reconnect(f"{exc}; reconnecting in {delay:.1f}s (attempt {attempt})")
                if self._closing.wait(delay):
                    raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to save
                conn.close()
