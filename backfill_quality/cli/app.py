"""The Typer application and the error boundary shared by every command."""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import typer

from backfill_quality.errors import BackfillError
from backfill_quality.redaction import redact

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3
EXIT_LOCKED = 4
"""Another run or watch holds the target's lock (errors.TargetLockedError)."""

# psycopg warns through `logging` when a pipeline ends on a dead connection ("error ignored
# terminating <psycopg.Pipeline [BAD]>"); the tool already reports the loss and reconnects, and
# with no logging configured Python would print that raw line into our text or JSON output.
logging.getLogger("psycopg").setLevel(logging.ERROR)

app = typer.Typer(
    name="backfill-quality",
    help=(
        "Score every unscored image in a PostgreSQL table (0-100, high >= 80, medium 60-79, "
        "low < 60) and write the score back.\n\n"
        "Typical session: `backfill-quality migrate`, `backfill-quality run --dry-run`, "
        "`backfill-quality run`, Ctrl+C, `backfill-quality run --resume`, "
        "`backfill-quality status`. Try `backfill-quality demo` first."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = EXIT_FATAL, *, as_json: bool = False) -> typer.Exit:
    """Print an error for the user (a JSON event with --log-format json); return the Exit."""
    text = redact(message)
    if as_json:
        event = {"event": "error", "ts": datetime.now(UTC).isoformat(), "message": text}
        print(json.dumps(event | {"exitCode": code}), file=sys.stderr)
    else:
        print(f"error: {text}", file=sys.stderr)
    return typer.Exit(code)


def _print_traceback() -> None:
    print(redact(traceback.format_exc()), file=sys.stderr, end="")


@contextmanager
def error_boundary(*, verbose: bool = False, as_json: bool = False) -> Iterator[None]:
    """Turn our errors into a message and an exit code; anything else into an 'internal error'.

    Tracebacks only with --verbose, and redacted like everything else.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except BackfillError as exc:
        if verbose and exc.exit_code != EXIT_USAGE:  # a usage error needs no traceback
            _print_traceback()
        raise fail(str(exc), exc.exit_code, as_json=as_json) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130, as_json=as_json) from None
    except Exception as exc:
        if verbose:
            _print_traceback()
        message = (
            f"internal error: {type(exc).__name__}: {exc} (run again with --verbose for details)"
        )
        raise fail(message, as_json=as_json) from None


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # Everything is done and reported: a Ctrl+C now would only land in the interpreter's
        # exit handlers (multiprocessing's), which print it as a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
