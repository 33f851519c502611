"""The shipped migrations (package `backfill_quality.migrations`), split into statements.

Pure text handling; `db.apply_migrations` runs the statements.
"""

from __future__ import annotations

import re
from importlib import resources


def migration_files() -> list[tuple[str, str]]:
    """(name, SQL text) of every shipped migration, in order."""
    package = resources.files("backfill_quality.migrations")
    files = [f for f in package.iterdir() if f.name.endswith(".sql")]
    return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(files, key=lambda f: f.name)]


def split_statements(script: str) -> list[str]:
    """Split SQL text on top-level semicolons (quotes, comments and $tag$ bodies respected)."""
    statements: list[str] = []
    start = i = 0
    while i < len(script):
        ch = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end + 1
            continue
        if script.startswith("/*", i):
            end = script.find("*/", i + 2)
            i = len(script) if end < 0 else end + 2
            continue
        if ch in "'\"":
            end = script.find(ch, i + 1)
            while end >= 0 and script.startswith(ch * 2, end):
                end = script.find(ch, end + 2)
            i = len(script) if end < 0 else end + 1
            continue
        tag = re.match(r"\$[A-Za-z_]*\$", script[i:]) if ch == "$" else None
        if tag:
            end = script.find(tag.group(), i + len(tag.group()))
            i = len(script) if end < 0 else end + len(tag.group())
            continue
        if ch == ";":
            statements.append(script[start:i])
            start = i + 1
        i += 1
    statements.append(script[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    lines = (line.strip() for line in statement.splitlines())
    return any(line and not line.startswith("--") for line in lines)
