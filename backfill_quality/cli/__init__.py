"""The command line: `backfill-quality run | score | status | migrate | demo | watch | report`.

The only importer of typer. Each command is a thin client of the library; our errors become exit
codes and one clear message here (a traceback only with --verbose).
"""

from __future__ import annotations

from backfill_quality.cli import (
    demo_cmd,
    migrate_cmd,
    report_cmd,
    run_cmd,
    score_cmd,
    status_cmd,
    watch_cmd,
)
from backfill_quality.cli.app import app, main

_COMMANDS = (
    run_cmd,
    score_cmd,
    status_cmd,
    migrate_cmd,
    demo_cmd,
    watch_cmd,
    report_cmd,
)  # registered on import

__all__ = ["app", "main"]
