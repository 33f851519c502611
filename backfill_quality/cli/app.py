"""The Typer application and the error boundary shared by every command."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from backfill_quality.errors import BackfillError
from backfill_quality.redaction import redact

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3

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


def fail(message: str, code: int = EXIT_FATAL) -> typer.Exit:
    """Print an error for the user and return the Exit to raise."""
    print(f"error: {redact(message)}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def error_boundary(*, verbose: bool = False) -> Iterator[None]:
    """Turn our errors into a message and an exit code; anything else into an 'internal error'."""
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except BackfillError as exc:
        if verbose:
            traceback.print_exc()
        raise fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        raise fail(
            f"internal error: {type(exc).__name__}: {exc} (run again with --verbose for details)"
        ) from None


def main() -> None:
    """Console-script entry point."""
    app()
