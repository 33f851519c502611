"""Running the real command line in a subprocess, as a user would, and reading what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_TIMEOUT_S = 60.0
CHECKPOINT_NAME = ".backfill-progress.json"
DRY_RUN_CHECKPOINT_NAME = ".backfill-progress.dry-run.json"
SPEC_CHECKPOINT_KEYS = frozenset(
    {"total", "processed", "succeeded", "failed", "startTime", "lastProcessedId"}
    | {"estimatedTimeRemaining", "failedImages", "version", "updatedAt", "dryRun", "fingerprint"}
)
_INHERITED_PREFIXES = ("PG", "BACKFILL_")
_INHERITED_NAMES = ("DATABASE_URL",)


class CliResult(NamedTuple):
    """What one invocation returned and printed."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together (for messages that may go to either)."""
        return self.stdout + self.stderr


def console_script() -> Path:
    """The installed `backfill-quality` script of the interpreter running the tests."""
    return Path(sys.executable).parent / "backfill-quality"


def cli_env(database_url: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment without the caller's PG*/BACKFILL_* settings, plus ours."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_INHERITED_PREFIXES) and name not in _INHERITED_NAMES
    }
    env |= {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env | (extra or {})


def run_cli(
    *args: str,
    cwd: Path,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    use_console_script: bool = False,
) -> CliResult:
    """Run `backfill-quality ARGS` in `cwd` (where the checkpoint lands) and wait for it.

    By default through `python -m backfill_quality` with the test interpreter (always the right
    one); `use_console_script` runs the installed `backfill-quality` script instead.
    """
    program = (
        [str(console_script())]
        if use_console_script
        else [sys.executable, "-m", "backfill_quality"]
    )
    completed = subprocess.run(
        [*program, *args],
        cwd=cwd,
        env=cli_env(database_url, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout_s,
        check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def invoke_in_process(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """Run the Typer app in this process (for parsing, --help and errors found before any work).

    Much faster than a subprocess; the end-to-end tests use `run_cli`. `env` adds variables
    for the time of the call.
    """
    from typer.testing import CliRunner

    from backfill_quality.cli import app

    variables = {"COLUMNS": "200", "NO_COLOR": "1"} | (env or {})
    result = CliRunner().invoke(app, list(args), env=variables)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The parsed checkpoint file (fails the test if it is missing or not a JSON object)."""
    assert path.exists(), f"no checkpoint at {path}"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"checkpoint {path} is not a JSON object"
    return data


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as a JSON object (fails the test on any other line)."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:  # pragma: no cover - the assertion is the report
            raise AssertionError(f"not a JSON line: {line!r}") from exc
        assert isinstance(record, dict), f"not a JSON object: {line!r}"
        records.append(record)
    return records
