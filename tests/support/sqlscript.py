"""Splitting a SQL script (such as `migrate --sql` prints) into statements, to run them one by one
as psql would."""

from __future__ import annotations

import re


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
