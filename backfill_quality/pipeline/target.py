"""The target's identity: which database, table, columns and shard a checkpoint belongs to."""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import parse_qs, unquote, urlsplit

from backfill_quality.config import DEFAULT_SCORE_COLUMN, DEFAULT_TABLE, OrderBy, Shard, Target
from backfill_quality.redaction import redact

_CONNINFO_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_-]+")
MAX_TAG_CHARS = 100
DEFAULT_SCHEMAS = (None, "", "public")


def database_identity(database: str) -> str:
    """host:port/dbname of a libpq URI or key=value string — never the user or the password."""
    if not database.strip():
        return "(libpq defaults)"
    if "=" not in database and "://" not in database:
        return redact(database.strip())  # already an identity, e.g. from the live connection
    if re.match(r"postgres(ql)?://", database):
        parts = urlsplit(database)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        hostport = parts.netloc.rpartition("@")[2]
        match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d+))?", hostport)
        host, port = (match.group(1), match.group(2) or "5432") if match else (hostport, "")
        host = query.get("host", unquote(host)) or "localhost"
        port = query.get("port", port)
        dbname = query.get("dbname", unquote(parts.path.lstrip("/")))
    else:
        pairs = {k: v.strip("'") for k, v in _CONNINFO_PAIR.findall(database)}
        host = pairs.get("host") or pairs.get("hostaddr") or "localhost"
        port = pairs.get("port") or "5432"
        dbname = pairs.get("dbname", "")
    host = host if host.startswith("/") else host.lower()
    return f"{host}{':' if port else ''}{port}/{dbname}"


def describe_target(
    *, database: str, target: Target, shard: Shard | None, order_by: OrderBy | None = None
) -> str:
    """A readable, secret-free description, e.g. 'db:5432/app images(id,url→quality_score)';
    the table as SQL names it (`media.photos`, `"My Schema"."photos.v2"`); then the shard and
    the --order-by, when given."""
    text = (
        f"{database_identity(database)} "
        f"{target.label}({target.id_column},{target.url_column}→{target.score_column})"
    )
    text = f"{text} shard {shard}" if shard else text
    return f"{text} {describe_order(order_by)}" if order_by else text


def describe_order(order_by: OrderBy | None) -> str:
    """'order by created_at descending', or 'no --order-by (key order)'."""
    return f"order by {order_by}" if order_by else "no --order-by (key order)"


def make_fingerprint(
    *, database: str, target: Target, shard: Shard | None, order_by: OrderBy | None = None
) -> str:
    """A stable hash of the database identity, table, columns, shard and --order-by (sha256
    hex, 16 chars); without --order-by the same as before the option existed."""
    identity = {
        "database": database_identity(database),
        "schema": target.schema,
        "table": target.table,
        "id": target.id_column,
        "url": target.url_column,
        "score": target.score_column,
        "shard": str(shard) if shard else None,
    }
    if order_by is not None:
        identity["order"] = f"{order_by.column} {'desc' if order_by.descending else 'asc'}"
    payload = json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def target_tag(target: Target) -> str | None:
    """What tells this target's checkpoint file apart from the default one's, or None.

    None for the default target (`images`, scored into `quality_score`), which keeps the
    SPEC's `.backfill-progress.json`; else the schema outside `public`, the table, and the score
    column when it is not the default, each made safe for a file name and joined by dots:
    `photos`, `media.photos`, `images.score_v2`.
    """
    schema = None if target.schema in DEFAULT_SCHEMAS else target.schema
    is_default_table = schema is None and target.table == DEFAULT_TABLE
    if is_default_table and target.score_column == DEFAULT_SCORE_COLUMN:
        return None
    parts = [schema, target.table] + (
        [target.score_column] if target.score_column != DEFAULT_SCORE_COLUMN else []
    )
    safe = [_UNSAFE_IN_FILE_NAME.sub("_", part) for part in parts if part is not None]
    return ".".join(safe)[:MAX_TAG_CHARS]


def lock_keys(table: str, score_column: str, shard: Shard | None) -> tuple[int, int | None]:
    """The advisory lock keys of a target (signed 64-bit): (the table's, the shard's or None).

    `table` is the server's `schema.table`, so every spelling of one table gives one key; the
    score column is part of the target (two scores of one table are two jobs). The database is
    not: PostgreSQL keeps advisory locks per database already.
    """
    table_key = _key64("backfill-quality run", table, score_column)
    shard_key = _key64("backfill-quality shard", table, score_column, str(shard)) if shard else None
    return table_key, shard_key


def _key64(*parts: str) -> int:
    payload = json.dumps(parts, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big", signed=True)
