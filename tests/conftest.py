"""Shared fixtures: a real PostgreSQL and a real HTTP server on 127.0.0.1."""

from tests.support.http import blackhole_port, image_server
from tests.support.pg import database_url, pg_admin_url

__all__ = ["blackhole_port", "database_url", "image_server", "pg_admin_url"]
