"""The command line's manners, walked over every command: -h and --version everywhere, help
that wraps to the terminal, no type placeholders, help text on every option, one spelling of
`--json`, `--quiet` wherever progress is printed, and a `--help` that imports nothing heavy."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from backfill_quality import __version__
from backfill_quality.cli import app
from tests.support.cli import cli_env, invoke_in_process, run_cli

GROUP: Any = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)
PROGRESS_COMMANDS = ("run", "rescore", "watch", "demo", "migrate")
"""The commands that print progress as they work (so they take --quiet)."""
JSON_COMMANDS = ("run", "rescore", "watch", "demo", "status", "score")
"""The commands with a machine-readable output."""
HEAVY_LIBRARIES = ("numpy", "onnxruntime", "PIL", "psycopg", "httpx")
PLACEHOLDER = re.compile(r"<[\w\[\], |]+>")  # Typer's <bool>, <str>, <int range>, <list[str]>


def _help(*args: str, columns: int = 200) -> str:
    result = invoke_in_process(*args, "--help", env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def _params(command: str) -> list[Any]:
    return [p for p in GROUP.commands[command].params if not getattr(p, "hidden", False)]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_h_is_help_and_version_prints_the_version_everywhere(command: str) -> None:
    args = [command] if command else []

    short = invoke_in_process(*args, "-h", env={"COLUMNS": "200"})
    version = invoke_in_process(*args, "--version")

    assert short.exit_code == 0, short.output
    assert "Usage:" in short.stdout and short.stdout == _help(*args)
    assert version.exit_code == 0, version.output
    assert version.stdout.strip() == f"backfill-quality {__version__}"


def test_version_answers_before_any_other_option_is_checked() -> None:
    result = invoke_in_process("run", "--batch-size", "999", "--version")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"backfill-quality {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_and_argument_has_help_text(command: str) -> None:
    missing = [p.name for p in _params(command) if not (getattr(p, "help", None) or "").strip()]

    assert missing == [], f"{command}: no help for {missing}"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_no_type_placeholders_in_help(command: str) -> None:
    """A flag shows nothing after its name; a value shows a readable metavar (N, URL, PATH)."""
    out = _help(*([command] if command else []))

    assert PLACEHOLDER.findall(out) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source(command: str) -> None:
    """Each paragraph of a command's description is one line on a wide terminal (no hard break
    left over from the docstring) and fits a narrow one."""
    docstring = inspect.getdoc(GROUP.commands[command].callback) or ""
    paragraphs = [" ".join(p.split()) for p in docstring.split("\n\n")]

    wide = [" ".join(line.split()) for line in _help(command, columns=400).splitlines()]
    narrow = _help(command, columns=60).splitlines()

    for paragraph in paragraphs:
        assert paragraph in wide, f"broken in the middle: {paragraph[:60]}..."
    assert max(len(line.rstrip()) for line in narrow) <= 60


@pytest.mark.parametrize("command", PROGRESS_COMMANDS)
def test_every_command_that_prints_progress_takes_quiet(command: str) -> None:
    opts = {opt for p in _params(command) for opt in getattr(p, "opts", [])}

    assert {"--quiet", "-q"} <= opts


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_one_spelling_for_json_output(command: str) -> None:
    """`--json` everywhere; `--log-format` is a hidden older spelling where it existed."""
    visible = {opt for p in _params(command) for opt in getattr(p, "opts", [])}
    every = {opt for p in GROUP.commands[command].params for opt in getattr(p, "opts", [])}

    assert "--json" in visible
    assert "--log-format" not in visible
    if command in ("run", "watch", "demo"):
        assert "--log-format" in every, "the older spelling keeps working"


@pytest.mark.parametrize(
    "spelling", [("--json",), ("--log-format", "json")], ids=["json", "log-format-json"]
)
def test_both_spellings_give_json_errors(spelling: tuple[str, ...]) -> None:
    url = "postgresql//app@127.0.0.1/db"

    result = invoke_in_process("run", *spelling, env={"DATABASE_URL": url})

    assert result.exit_code == 2, result.output
    [event] = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert event["event"] == "error" and "--database-url" in event["message"]


def test_json_and_log_format_text_together_is_a_usage_error() -> None:
    result = invoke_in_process("run", "--json", "--log-format", "text")

    assert result.exit_code == 2
    assert "--json" in result.output and "--log-format" in result.output


@pytest.mark.parametrize("command", ["status", "score"])
def test_a_fatal_error_is_a_json_event_with_json(command: str, tmp_path: Path) -> None:
    bad = ("--table", "") if command == "status" else ("photo.jpg", "--threshold", "nope=1")

    result = run_cli(command, "--json", *bad, cwd=tmp_path, database_url="postgresql://a@h/db")

    assert result.exit_code == 2, result.output
    [event] = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert event["event"] == "error" and event["exitCode"] == 2


_IMPORTS_SCRIPT = """
import json, runpy, sys
sys.argv = ["backfill-quality", *json.loads(sys.argv[1])]
try:
    runpy.run_module("backfill_quality", run_name="__main__", alter_sys=True)
finally:
    print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_imported_by(args: list[str], cwd: Path) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORTS_SCRIPT, json.dumps(args)],
        cwd=cwd,
        env=cli_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    [line] = [x for x in completed.stderr.splitlines() if x.startswith("MODULES ")]
    return set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h"], ["--version"], *([command, "--help"] for command in COMMANDS)],
    ids=lambda args: " ".join(args),
)
def test_help_imports_none_of_the_heavy_libraries(args: list[str], tmp_path: Path) -> None:
    """`--help` used to take 1.5 s importing psycopg, httpx and the pipeline; each command now
    imports them when it runs (checked in sys.modules, not with a clock)."""
    modules = _modules_imported_by(args, tmp_path)

    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY_LIBRARIES)
    assert "backfill_quality.cli" in modules, "the command line was loaded"
    assert heavy == []
