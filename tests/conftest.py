"""Shared fixtures: a real PostgreSQL and a real HTTP server on 127.0.0.1."""

import os
from collections.abc import Iterator

import pytest

from tests.support.faults import reap_background_runs
from tests.support.http import blackhole_port, image_server
from tests.support.pg import database_url, pg_admin_url

# The tests' image server is on 127.0.0.1: a proxy set for the developer's machine must not
# take those requests (the tool honours these variables; the tests that need one set their own).
for _variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_variable, None)
    os.environ.pop(_variable.lower(), None)

__all__ = ["blackhole_port", "database_url", "image_server", "pg_admin_url"]


@pytest.fixture(autouse=True)
def _no_background_run_outlives_its_test() -> Iterator[None]:
    yield
    reap_background_runs()
