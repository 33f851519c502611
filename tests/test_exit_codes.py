"""One exit code for one kind of error, whichever command meets it (README, "Exit codes").

2: the user must fix an option (a connection string that cannot be used, an unknown table or
column); 1: a failure at run time (the database cannot be reached). Through the real program.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.http import closed_port
from tests.support.table import UserTable

DATABASE_COMMANDS = ("run", "watch", "status", "migrate")
TARGET_COMMANDS = ("run", "watch", "status")  # the commands with --table and the column options


def _setup_url(template: str) -> Callable[[str], tuple[str, list[str]]]:
    return lambda _good_url: (template.format(port=closed_port()), [])


def _setup_target(*options: str) -> Callable[[str], tuple[str, list[str]]]:
    return lambda good_url: (good_url, list(options))


ERRORS: dict[str, tuple[int, tuple[str, ...], Callable[[str], tuple[str, list[str]]]]] = {
    # name: (exit code, the commands that can meet it, (database url -> url, extra options))
    "malformed-url": (2, DATABASE_COMMANDS, _setup_url("postgresql//app@127.0.0.1:{port}/db")),
    "bad-port": (2, DATABASE_COMMANDS, _setup_url("postgresql://app@127.0.0.1:notaport/db")),
    "port-out-of-range": (2, DATABASE_COMMANDS, _setup_url("postgresql://app@127.0.0.1:70000/db")),
    "refused-option-value": (
        2,
        DATABASE_COMMANDS,
        _setup_url("postgresql://app@127.0.0.1:{port}/db?sslmode=sometimes"),
    ),
    "unknown-table": (2, TARGET_COMMANDS, _setup_target("--table", "no_such_table")),
    "unknown-column": (2, TARGET_COMMANDS, _setup_target("--score-column", "no_such_column")),
    "unreachable-database": (
        1,
        DATABASE_COMMANDS,
        _setup_url("postgresql://app@127.0.0.1:{port}/db"),
    ),
}
CASES = [
    pytest.param(command, error, id=f"{command}-{error}")
    for error, (_, commands, _) in ERRORS.items()
    for command in commands
]


@pytest.mark.parametrize(("command", "error"), CASES)
def test_the_same_error_has_the_same_exit_code_in_every_command(
    database_url: str, tmp_path: Path, command: str, error: str
) -> None:
    UserTable(database_url).create()
    expected, _, setup = ERRORS[error]
    url, options = setup(database_url)

    result = run_cli(command, *options, cwd=tmp_path, database_url=url, timeout_s=90)

    assert result.exit_code == expected, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip(), "the reason is printed"
