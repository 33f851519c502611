"""Render the report's one HTML file from its Jinja2 template (shipped in the package).

Autoescaping is on: every value from the database or a checkpoint (URLs, reasons, ids) is
escaped, so a hostile URL cannot inject markup into the page.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from backfill_quality.db import GalleryRow
from backfill_quality.results import CHECK_NAMES

TEMPLATE = "report.html.j2"


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("backfill_quality.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def card_view(row: GalleryRow) -> dict[str, Any]:
    """What one card shows: the box in percent of the picture, the count, the failed checks."""
    subject = row.subject or {}
    bbox = subject.get("bbox")
    box = None
    if isinstance(bbox, dict):
        box = {k: round(100.0 * float(bbox[k]), 3) for k in ("x", "y", "width", "height")}
    checks = [
        {
            "name": name,
            "score": row.checks.get(name, {}).get("score"),
            "passed": bool(row.checks.get(name, {}).get("passed")),
            "reason": row.checks.get(name, {}).get("reason") or "",
        }
        for name in CHECK_NAMES
    ]
    return {
        "row": row,
        "box": box,
        "count": int(subject.get("count") or 0),
        "checks": checks,
        "failed": [c["name"] for c in checks if not c["passed"]],
    }


def render_page(**context: Any) -> str:
    """The page as text; `context` is what build.py gathered."""
    template = _environment().get_template(TEMPLATE)
    return template.render(card_view=card_view, check_names=CHECK_NAMES, **context)
