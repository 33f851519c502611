"""The newcomer's first command: `backfill-quality demo` on its own embedded database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import run_cli


def test_demo_scores_every_good_row_and_lists_the_broken_ones(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = run_cli(
        "demo", "--rows", "120", "--workdir", str(workdir), cwd=tmp_path, timeout_s=180
    )

    assert result.exit_code == 0, result.output  # broken URLs are part of the show
    checkpoint = json.loads((workdir / ".backfill-progress.json").read_text())
    # rows 59 and 119 point at broken URLs on purpose; everything else is a generated photo
    assert (checkpoint["processed"], checkpoint["succeeded"], checkpoint["failed"]) == (120, 118, 2)
    assert checkpoint["finished"] is True
    assert "Score distribution" in result.output
    assert "Progress Summary" in result.output
