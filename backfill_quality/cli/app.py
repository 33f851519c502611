"""The Typer application and the error boundary shared by every command."""

from __future__ import annotations

import inspect
import json
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any

import typer
import typer.core

from backfill_quality import __version__
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

HELP_OPTION_NAMES = ["-h", "--help"]


def reflow(text: str | None) -> str | None:
    """Help text with each paragraph on one line, so the terminal (not the source file's line
    length) decides where it wraps; a paragraph that starts with \\b keeps its line breaks."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _no_type(ctx: Any) -> None:
    return None


def _without_type_placeholders(params: list[Any]) -> list[Any]:
    """A flag takes no value: show no `<bool>` after it in the help; an argument with a metavar
    already says what it takes: no `<list[str]>` beside it."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
        elif isinstance(param, typer.core.TyperArgument) and param.metavar:
            param.display_type_rich = _no_type  # type: ignore[method-assign]
    return params


class Command(typer.core.TyperCommand):
    """Every command: help paragraphs that wrap to the terminal, flags without a placeholder."""

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        kwargs["help"] = reflow(kwargs.get("help"))
        super().__init__(name, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_type_placeholders(super().get_params(ctx))


class Group(typer.core.TyperGroup):
    """The top level, drawn like the commands."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_type_placeholders(super().get_params(ctx))


class App(typer.Typer):
    """A Typer whose commands are `Command`s by default. (-h comes from the context settings,
    --version from each command's `Version` parameter; tests/test_cli_help.py walks every
    command for both.)"""

    def command(  # type: ignore[override]
        self,
        name: str | None = None,
        *,
        cls: type[typer.core.TyperCommand] | None = None,
        **kwargs: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or Command, **kwargs)


def show_version(value: bool) -> None:
    """--version: print the version and stop (an eager option, before any other is checked)."""
    if value:
        print(f"backfill-quality {__version__}")
        raise typer.Exit(EXIT_OK)


Version = Annotated[
    bool,
    typer.Option(
        "--version",
        is_eager=True,
        expose_value=False,
        callback=show_version,
        help="Print the version and exit.",
    ),
]


app = App(
    cls=Group,
    context_settings={"help_option_names": HELP_OPTION_NAMES},
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


@app.callback()
def _top_level(version: Version = False) -> None:
    # no docstring: the help of the top level is the one given to App() above
    pass


def _print_uncaught(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """The last net: an exception no boundary caught is printed redacted, like everything."""
    text = "".join(traceback.format_exception(kind, exc, tb))
    print(redact(text), file=sys.stderr, end="")


def _print_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _print_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def main() -> None:
    """Console-script entry point."""
    threading.excepthook = _print_uncaught_in_thread
    try:
        app()
    except Exception as exc:  # a bug no error boundary caught (Typer resets sys.excepthook)
        _print_uncaught(type(exc), exc, exc.__traceback__)
        sys.exit(EXIT_FATAL)
    finally:
        # Everything is done and reported: a Ctrl+C now would only land in the interpreter's
        # exit handlers (multiprocessing's), which print it as a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
