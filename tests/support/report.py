"""The review report's tests: one real run per module on its own database, the real image server,
and the system's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import run_cli
from tests.support.pg import with_database
from tests.support.table import UserTable, serve_valid_images

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FAST = ("--concurrency", "4", "--retries", "0", "--timeout", "5")
VALID_IMAGES = 14
PER_GALLERY = 6


def chromium_path() -> str:
    """The system's Chromium (the Debian package `chromium`); Playwright's own download is not
    used (browser downloads do not work on these machines)."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(
        "the browser tests need the system's Chromium: `apt-get install chromium` (.ci/run does)"
    )


@dataclass
class ScoredRun:
    """A table scored by a real run (some rows failed), and where its report goes."""

    table: UserTable
    server: ImageServer
    cwd: Path
    broken_url: str
    """A scored image whose URL serves something else since: its thumbnail must fail."""

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.table.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def report(self, out: Path, *extra: str) -> Any:
        return run_cli(
            "report",
            *self.table.cli_options(),
            "--out",
            str(out),
            "--per-gallery",
            str(PER_GALLERY),
            "--retries",
            "0",
            *extra,
            cwd=self.cwd,
            database_url=self.table.database_url,
        )


@pytest.fixture(scope="module")
def scored_run(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoredRun]:
    """14 photos of varied quality and 3 broken URLs, scored by `run` (exit 3: rows failed);
    then the lowest-scored photo's URL starts serving HTML."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(pg_admin_url, name)
    try:
        with ImageServer() as server:
            table = UserTable(url).create()
            expected = serve_valid_images(server, VALID_IMAGES)
            broken = [server.url("/status/404"), server.url("/not-an-image"), server.url("/x/404")]
            table.insert([*expected, *broken])
            cwd = tmp_path_factory.mktemp("report")
            ran = run_cli("run", *table.cli_options(), *FAST, cwd=cwd, database_url=url)
            assert ran.exit_code == 3, ran.output
            run = ScoredRun(table, server, cwd, "")
            (lowest,) = run.sql(
                "SELECT source FROM images_quality_results ORDER BY score, image_id LIMIT 1"
            )[0]
            server.add(lowest.removeprefix(server.base_url), b"<html>moved</html>", "text/html")
            run.broken_url = lowest
            yield run
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
