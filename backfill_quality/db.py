"""Every SQL statement of the tool, as named functions; identifiers quoted with psycopg.sql.

The only importer of psycopg. Library errors are translated here into `DatabaseError`
(`retryable=True` when reconnecting and trying again may succeed) or `ConfigError`.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from backfill_quality.config import Shard, Target
from backfill_quality.errors import ConfigError, DatabaseError
from backfill_quality.migration_files import migration_files, split_statements
from backfill_quality.models import ImageRow, RowId
from backfill_quality.redaction import has_unparsable_password

INTEGER_ID_TYPES = frozenset({"smallint", "integer", "bigint"})
TEXT_ID_TYPES = frozenset({"text", "character varying"})
SUPPORTED_ID_TYPES = INTEGER_ID_TYPES | TEXT_ID_TYPES | {"uuid"}
SCORE_TYPES = frozenset({"smallint", "integer", "bigint"})
URL_TYPES = frozenset({"text", "character varying", "character"})
MIGRATIONS_TABLE = "backfill_quality_migrations"
MIGRATIONS_LOCK_KEY = 0x6266_7175_616C  # pg_advisory_lock key: two `migrate` runs never race
EXACT_COUNT_LIMIT = 2_000_000
EXACT_COUNT_TIMEOUT_MS = 3000
UUID_SPACE = 1 << 128

IdRange = tuple[RowId | None, RowId | None]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of one score written by `write_score_results`."""

    row_id: RowId
    is_written: bool
    error: str | None = None


# --- connecting ------------------------------------------------------------------------------

_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(database_url: str) -> str:
    """The URL (URI or key=value form) with any password replaced by ***."""
    if "://" not in database_url:
        return _KV_PASSWORD.sub(r"\1***", database_url)
    parts = urlsplit(database_url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    netloc = f"{userinfo}{at}{hostport}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query, flags=re.IGNORECASE)
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"  # urlunsplit would drop an empty //


def _passwords(database_url: str) -> list[str]:
    """Every password the URL or the environment may hand to libpq (to scrub from messages)."""
    found = [os.environ.get("PGPASSWORD", "")]
    with suppress(psycopg.Error):
        found.append(str(psycopg.conninfo.conninfo_to_dict(database_url).get("password") or ""))
    if "://" in database_url:
        userinfo = urlsplit(database_url).netloc.rpartition("@")[0]
        found.append(userinfo.partition(":")[2])
    return [p for p in found if p]


def _scrub(message: str, database_url: str) -> str:
    for password in _passwords(database_url):
        message = message.replace(password, "***")
    return _KV_PASSWORD.sub(r"\1***", message)


def _where(database_url: str) -> str:
    """host:port/dbname as libpq would resolve it, without the password."""
    if has_unparsable_password(database_url):
        return "the --database-url given (its password must be percent-encoded)"
    try:
        params: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(database_url))
    except psycopg.Error:
        return redact_url(database_url) or "the default database"
    host = str(params.get("host") or os.environ.get("PGHOST") or "local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or "(default)")
    return f"{host}:{port}/{dbname}"


def connect(
    database_url: str,
    *,
    application_name: str = "backfill-quality",
    connect_timeout_s: int = 10,
) -> psycopg.Connection[Any]:
    """An autocommit connection.

    An unreachable server becomes DatabaseError(retryable=True), a malformed URL ConfigError;
    neither message contains the password.
    """
    try:
        return psycopg.connect(
            database_url,
            autocommit=True,
            application_name=application_name,
            connect_timeout=connect_timeout_s,
        )
    except psycopg.Error as exc:
        detail = _scrub(" ".join(str(exc).split()), database_url)
        if has_unparsable_password(database_url):  # libpq's message quotes pieces of it
            detail = "percent-encode '/', '?', '#', '@' and ':' in the password"
        message = (
            f"could not connect to the database at {_where(database_url)}: {detail}"
            " — check DATABASE_URL / --database-url or the PG* environment variables"
        )
        error: DatabaseError | ConfigError
        if isinstance(exc, psycopg.OperationalError):
            error = DatabaseError(message, retryable=True)
        else:  # a malformed URL or an unknown option: a usage error, retrying cannot help
            error = ConfigError(f"--database-url: {message}")
        if any(p in str(exc) for p in _passwords(database_url)):
            raise error from None  # the libpq message echoes the password: do not chain it
        raise error from exc


def describe_database(conn: psycopg.Connection[Any]) -> str:
    """'host:port/dbname', or 'socket DIR:port/dbname' for a Unix socket (no password)."""
    info = conn.info
    if info.host.startswith("/"):
        return f"socket {info.host}:{info.port}/{info.dbname}"
    return f"{info.host}:{info.port}/{info.dbname}"


def is_retryable(exc: psycopg.Error) -> bool:
    """True when a new connection / another attempt may succeed."""
    return isinstance(
        exc,
        psycopg.OperationalError | psycopg.InterfaceError | psycopg.errors.TransactionRollback,
    )


def _translate(exc: psycopg.Error, action: str) -> DatabaseError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_retryable(exc):
        return DatabaseError(
            f"database connection problem while {action}: {first_line}"
            " — the database may be restarting or unreachable; retry or check it is up",
            retryable=True,
        )
    return DatabaseError(
        f"database error while {action}: {first_line}"
        " — check --table / --id-column / --score-column and that `migrate` was run",
        retryable=False,
    )


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise _translate(exc, action) from exc


def _raw(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any]
) -> psycopg.RawCursor[Any]:
    """Execute with PostgreSQL's own $n placeholders: psycopg does not escape a '%' inside an
    sql.Identifier, so a '%'-style query breaks on a column named like "u%s"."""
    cur = psycopg.RawCursor(conn)
    cur.execute(query, params)
    return cur


# --- the target table --------------------------------------------------------------------------


def _table(target: Target) -> sql.Identifier:
    if target.schema:
        return sql.Identifier(target.schema, target.table)
    return sql.Identifier(target.table)


def _table_label(target: Target) -> str:
    return f"{target.schema}.{target.table}" if target.schema else target.table


def _columns(conn: psycopg.Connection[Any], table_oid: int) -> dict[str, tuple[int, str]]:
    rows = conn.execute(
        "SELECT attname, attnum, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table_oid,),
    ).fetchall()
    return {name: (num, type_name) for name, num, type_name in rows}


def _is_unique_column(conn: psycopg.Connection[Any], table_oid: int, attnum: int) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %s AND indisunique"
        " AND indisvalid AND indnkeyatts = 1 AND indkey[0] = %s AND indpred IS NULL"
        " AND indexprs IS NULL)",
        (table_oid, attnum),
    ).fetchone()
    return bool(row and row[0])


def _find_table(conn: psycopg.Connection[Any], target: Target) -> int:
    qualified = _table(target).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s)::oid", (qualified,)).fetchone()
    if row is None or row[0] is None:
        names = conn.execute(
            "SELECT string_agg(quote_ident(relname), ', ' ORDER BY relname) FROM"
            " (SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY c.relname LIMIT 20) t"
        ).fetchone()
        existing = names[0] if names and names[0] else "none"
        raise ConfigError(
            f"--table: table {_table_label(target)!r} does not exist in"
            f" {describe_database(conn)} (tables found: {existing}); check --table,"
            " or run `backfill-quality migrate` to create the default `images` table"
        )
    return int(row[0])


def _require_column(
    columns: dict[str, tuple[int, str]], name: str, option: str, target: Target
) -> tuple[int, str]:
    if name not in columns:
        raise ConfigError(
            f"{option}: column {name!r} does not exist in table {_table_label(target)!r}"
            f" (columns: {', '.join(columns) or 'none'})"
        )
    return columns[name]


def check_target(conn: psycopg.Connection[Any], target: Target) -> str:
    """Verify table and columns; return the id column's type name ('uuid', 'integer', …)."""
    with _translated(f"checking table {_table_label(target)!r}"):
        table_oid = _find_table(conn, target)
        columns = _columns(conn, table_oid)
        id_num, id_type = _require_column(columns, target.id_column, "--id-column", target)
        _, url_type = _require_column(columns, target.url_column, "--url-column", target)
        _, score_type = _require_column(columns, target.score_column, "--score-column", target)
        is_unique = _is_unique_column(conn, table_oid, id_num)
    if id_type not in SUPPORTED_ID_TYPES:
        raise ConfigError(
            f"--id-column: column {target.id_column!r} has type {id_type}; supported key types"
            f" are {', '.join(sorted(SUPPORTED_ID_TYPES))}"
        )
    if not is_unique:
        raise ConfigError(
            f"--id-column: column {target.id_column!r} is not a primary key or unique column of"
            f" {_table_label(target)!r}; keyset paging needs a unique key"
        )
    if score_type not in SCORE_TYPES:
        raise ConfigError(
            f"--score-column: column {target.score_column!r} has type {score_type};"
            " it must be an integer column (run `backfill-quality migrate` for the default)"
        )
    if url_type not in URL_TYPES:
        raise ConfigError(
            f"--url-column: column {target.url_column!r} has type {url_type}; it must be text"
        )
    return id_type


# --- reading pages ---------------------------------------------------------------------------


def _unscored_filter(
    target: Target, after_id: RowId | None, id_range: IdRange | None
) -> tuple[sql.Composed, list[RowId]]:
    """WHERE clause (and its parameters) of the rows still to score after the cursor."""
    parts = [sql.SQL("{} IS NULL").format(sql.Identifier(target.score_column))]
    params: list[RowId] = []
    lo, hi = id_range if id_range is not None else (None, None)
    for operator, value in ((">", after_id), (">=", lo), ("<", hi)):
        if value is not None:
            params.append(value)
            condition = f"{{}} {operator} ${len(params)}"
            parts.append(sql.SQL(condition).format(sql.Identifier(target.id_column)))
    return sql.SQL(" AND ").join(parts), params


def _page_query(
    target: Target, after_id: RowId | None, limit: int, id_range: IdRange | None
) -> tuple[sql.Composed, list[RowId]]:
    where, params = _unscored_filter(target, after_id, id_range)
    limit_param = sql.SQL(f"${len(params) + 1}")
    query = sql.SQL(
        "SELECT {id}, {url} FROM {table} WHERE {where} ORDER BY {id} LIMIT {limit}"
    ).format(
        id=sql.Identifier(target.id_column),
        url=sql.Identifier(target.url_column),
        table=_table(target),
        where=where,
        limit=limit_param,
    )
    return query, [*params, limit]


def _row_id(value: Any) -> RowId:
    if isinstance(value, int):
        return value
    return str(value)


def ids_after(
    conn: psycopg.Connection[Any], target: Target, ids: Sequence[RowId], after_id: RowId
) -> set[RowId]:
    """Which of `ids` sort after `after_id` in the table's key order (the database decides:
    text keys follow its collation, not Python's)."""
    if not ids:
        return set()
    key = sql.Identifier(target.id_column)
    query = sql.SQL("SELECT {key} FROM {table} WHERE {key}::text = ANY($1) AND {key} > $2").format(
        key=key, table=_table(target)
    )
    with _translated(f"reading failed rows of {_table_label(target)!r}"):
        rows = _raw(conn, query, [[str(i) for i in ids], after_id]).fetchall()
    return {_row_id(row_id) for (row_id,) in rows}


def fetch_page(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None,
    limit: int,
    id_range: IdRange | None = None,
) -> list[ImageRow]:
    """The next `limit` unscored rows after `after_id`, in key order (keyset, never OFFSET).

    A NULL url comes back as '' so the caller records the row as failed with a clear reason.
    """
    query, params = _page_query(target, after_id, limit, id_range)
    with _translated(f"reading the next page of {_table_label(target)!r}"):
        rows = _raw(conn, query, params).fetchall()
    return [ImageRow(id=_row_id(row_id), url=url or "") for row_id, url in rows]


def explain_page_query(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    limit: int = 50,
    id_range: IdRange | None = None,
    analyze: bool = False,
) -> str:
    """EXPLAIN text of the page query with these values (for tests and the benchmark)."""
    query, params = _page_query(target, after_id, limit, id_range)
    options = sql.SQL("(ANALYZE, BUFFERS) ") if analyze else sql.SQL("")
    with _translated("explaining the page query"):
        rows = _raw(conn, sql.SQL("EXPLAIN {}{}").format(options, query), params).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def estimate_unscored(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    id_range: IdRange | None = None,
) -> int:
    """The planner's row estimate of the unscored rows (instant, approximate)."""
    where, params = _unscored_filter(target, after_id, id_range)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(_table(target), where)
    with _translated("estimating the rows left"):
        row = _raw(conn, query, params).fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def count_unscored(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    after_id: RowId | None = None,
    id_range: IdRange | None = None,
) -> int:
    """Rows left to score: exact when cheap, else the planner's estimate.

    The exact count reads the partial index of unscored rows. It is skipped when the planner
    expects more than EXACT_COUNT_LIMIT rows, and abandoned after EXACT_COUNT_TIMEOUT_MS, so a
    huge table never stalls the start; the estimate is then returned instead.
    """
    estimate = estimate_unscored(conn, target, after_id=after_id, id_range=id_range)
    if estimate > EXACT_COUNT_LIMIT:
        return estimate
    where, params = _unscored_filter(target, after_id, id_range)
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_table(target), where)
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {EXACT_COUNT_TIMEOUT_MS}")
            row = _raw(conn, query, params).fetchone()
    except psycopg.errors.QueryCanceled:
        return estimate
    except psycopg.Error as exc:
        raise _translate(exc, "counting the rows left") from exc
    return int(row[0]) if row else 0


# --- writing scores --------------------------------------------------------------------------


def _update_statement(target: Target) -> sql.Composed:
    return sql.SQL("UPDATE {table} SET {score} = $1 WHERE {id} = $2 AND {score} IS NULL").format(
        table=_table(target),
        score=sql.Identifier(target.score_column),
        id=sql.Identifier(target.id_column),
    )


def write_score_results(
    conn: psycopg.Connection[Any], target: Target, scores: Sequence[tuple[RowId, int]]
) -> list[WriteResult]:
    """Write each score in its own transaction, pipelined; report per row what happened.

    In pipeline mode every statement up to a protocol Sync shares one implicit transaction, so
    each UPDATE is followed by `Pipeline.sync()`: the row commits (or fails) alone, and a failed
    row (say a CHECK violation) leaves the others untouched. A row already scored by someone
    else, or deleted, is not written (`is_written=False`, no error). Losing the connection
    raises a retryable DatabaseError; rows before it are committed, and retrying is harmless
    because the UPDATE only fills NULL scores. Cost: `Pipeline.sync()` waits for its row's
    result (psycopg has no public Sync that does not wait), so this is one round trip and one
    commit per row; on a local socket about 2 000 rows/s, bounded by the per-commit WAL flush.
    """
    statement = _update_statement(target)
    results: list[WriteResult] = []
    try:
        with conn.pipeline() as pipeline, psycopg.RawCursor(conn) as cur:
            for row_id, score in scores:
                try:
                    cur.execute(statement, (score, row_id))
                    pipeline.sync()
                except (psycopg.IntegrityError, psycopg.DataError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    error = f"the database refused score {score} for row {row_id}: {reason}"
                    results.append(WriteResult(row_id, False, error))
                    continue
                results.append(WriteResult(row_id, cur.rowcount == 1))
    except psycopg.Error as exc:
        failure = _translate(exc, f"writing scores to {_table_label(target)!r}")
        failure.confirmed = list(results)  # committed (or refused) before the loss: not to redo
        raise failure from exc
    return results


def write_scores(
    conn: psycopg.Connection[Any], target: Target, scores: Sequence[tuple[RowId, int]]
) -> list[bool]:
    """Per row: True if this call wrote the score, False if not (already scored, gone, failed)."""
    return [result.is_written for result in write_score_results(conn, target, scores)]


# --- monitoring --------------------------------------------------------------------------------


def score_distribution(conn: psycopg.Connection[Any], target: Target) -> dict[str, int]:
    """Rows per category (the original's monitoring SQL): high, medium, low, unscored."""
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE {s} >= 80), count(*) FILTER (WHERE {s} >= 60 AND {s} < 80),"
        " count(*) FILTER (WHERE {s} < 60), count(*) FILTER (WHERE {s} IS NULL) FROM {table}"
    ).format(s=sql.Identifier(target.score_column), table=_table(target))
    with _translated(f"reading the score distribution of {_table_label(target)!r}"):
        row = conn.execute(query).fetchone()
    high, medium, low, unscored = (int(n) for n in row) if row else (0, 0, 0, 0)
    return {"high": high, "medium": medium, "low": low, "unscored": unscored}


def score_histogram(conn: psycopg.Connection[Any], target: Target) -> list[int]:
    """Scored rows in 10 buckets: 0-9, 10-19, …, 80-89, 90-100."""
    query = sql.SQL(
        "SELECT least({s} / 10, 9) AS bucket, count(*) FROM {table}"
        " WHERE {s} IS NOT NULL GROUP BY bucket"
    ).format(s=sql.Identifier(target.score_column), table=_table(target))
    with _translated(f"reading the score histogram of {_table_label(target)!r}"):
        rows = conn.execute(query).fetchall()
    buckets = [0] * 10
    for bucket, count in rows:
        buckets[max(0, min(9, int(bucket)))] += int(count)
    return buckets


# --- shards ------------------------------------------------------------------------------------


def _slice_bounds(lowest: int, span: int, shard: Shard) -> tuple[int | None, int | None]:
    """Bounds of slice K of N over [lowest, lowest + span): open at both outer ends."""
    lo = None if shard.index == 0 else lowest + shard.index * span // shard.count
    last = shard.index == shard.count - 1
    hi = None if last else lowest + (shard.index + 1) * span // shard.count
    return lo, hi


def key_range_for_shard(
    conn: psycopg.Connection[Any], target: Target, id_type: str, shard: Shard
) -> IdRange:
    """Contiguous [lo, hi) slice of the key space for worker K of N (None: open end).

    uuid keys: equal slices of the 128-bit space (stable, needs no query). Integer keys: equal
    slices of min..max as read now; the first and last slices are open, so rows outside that
    range are still covered. Text keys cannot be split evenly: ConfigError.
    """
    if id_type == "uuid":
        lo, hi = _slice_bounds(0, UUID_SPACE, shard)
        return (
            None if lo is None else str(uuid.UUID(int=lo)),
            None if hi is None else str(uuid.UUID(int=hi)),
        )
    if id_type in INTEGER_ID_TYPES:
        query = sql.SQL("SELECT min({id}), max({id}) FROM {table}").format(
            id=sql.Identifier(target.id_column), table=_table(target)
        )
        with _translated(f"reading the key range of {_table_label(target)!r}"):
            row = conn.execute(query).fetchone()
        lowest = int(row[0]) if row and row[0] is not None else 0
        highest = int(row[1]) if row and row[1] is not None else lowest
        return _slice_bounds(lowest, highest - lowest + 1, shard)
    raise ConfigError(
        f"--shard: the id column {target.id_column!r} has type {id_type}; only uuid and integer"
        " keys can be split into contiguous shards. Run without --shard (one worker), or shard"
        " on a uuid or integer key column with --id-column"
    )


# --- migrations --------------------------------------------------------------------------------


def applied_migrations(conn: psycopg.Connection[Any]) -> set[str]:
    """Names recorded in the migrations table (created if absent)."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(MIGRATIONS_TABLE))
    )
    rows = conn.execute(sql.SQL("SELECT name FROM {}").format(sql.Identifier(MIGRATIONS_TABLE)))
    return {str(name) for (name,) in rows.fetchall()}


def _apply_migration(conn: psycopg.Connection[Any], name: str, script: str) -> None:
    for statement in split_statements(script):
        try:
            conn.execute(statement.encode())  # bytes: the SQL text is sent as is (no % params)
        except psycopg.Error as exc:
            error = _translate(exc, f"applying migration {name}")
            raise DatabaseError(
                f"{error} (the migration is idempotent: fix the cause and run `migrate` again)",
                retryable=error.retryable,
            ) from exc
    conn.execute(
        "INSERT INTO backfill_quality_migrations (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
        (name,),
    )


def apply_migrations(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply pending migration files in order, each statement in autocommit; return their names.

    A file is recorded only once all its statements succeeded, so an interrupted run (say
    during CREATE INDEX CONCURRENTLY) re-runs the whole file, which cleans up after itself.
    """
    if not conn.autocommit:
        raise DatabaseError("apply_migrations needs an autocommit connection (use db.connect)")
    applied: list[str] = []
    with _translated("preparing the migrations"):
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,))
    try:
        with _translated("reading the applied migrations"):
            done = applied_migrations(conn)
        for name, script in migration_files():
            if name not in done:
                _apply_migration(conn, name, script)
                applied.append(name)
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))
    return applied


# --- demo data -----------------------------------------------------------------------------------


def replace_demo_rows(conn: psycopg.Connection[Any], urls: Sequence[str]) -> None:
    """Empty the demo's `images` table and insert one unscored row per URL (demo only)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("TRUNCATE images")
            cur.executemany("INSERT INTO images (url) VALUES (%s)", [(url,) for url in urls])
    except psycopg.Error as exc:
        raise _translate(exc, "filling the demo table") from exc


# --- status (owned by the status/watch engineer) ------------------------------------------------

ScoreBuckets = tuple[int, list[int]]  # (unscored rows, scored rows per decile 0-9 … 90-100)


def count_score_buckets(
    conn: psycopg.Connection[Any], target: Target, *, timeout_ms: int | None = None
) -> ScoreBuckets | None:
    """Exact unscored count and decile histogram in one scan; None if `timeout_ms` ran out."""
    query = sql.SQL(
        "SELECT CASE WHEN {s} IS NULL THEN -1 ELSE greatest(0, least({s} / 10, 9)) END AS bucket,"
        " count(*) FROM {table} GROUP BY bucket"
    ).format(s=sql.Identifier(target.score_column), table=_table(target))
    try:
        with conn.transaction():
            if timeout_ms is not None:
                conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            rows = conn.execute(query).fetchall()
    except psycopg.errors.QueryCanceled:
        return None
    except psycopg.Error as exc:
        raise _translate(exc, f"counting the scores of {_table_label(target)!r}") from exc
    buckets = [0] * 10
    unscored = 0
    for bucket, count in rows:
        if int(bucket) < 0:
            unscored = int(count)
        else:
            buckets[int(bucket)] += int(count)
    return unscored, buckets


def _estimate_rows(conn: psycopg.Connection[Any], query: sql.Composed, params: list[Any]) -> int:
    row = _raw(conn, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params).fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def estimate_score_buckets(conn: psycopg.Connection[Any], target: Target) -> ScoreBuckets:
    """The planner's estimates (column statistics, instant on any size) of the same figures."""
    score, table = sql.Identifier(target.score_column), _table(target)
    with _translated(f"estimating the scores of {_table_label(target)!r}"):
        unscored = estimate_unscored(conn, target)
        buckets = []
        for decile in range(10):
            upper = sql.SQL("") if decile == 9 else sql.SQL(" AND {} < $2").format(score)
            query = sql.SQL("SELECT 1 FROM {} WHERE {} >= $1{}").format(table, score, upper)
            params = [decile * 10] if decile == 9 else [decile * 10, decile * 10 + 10]
            buckets.append(_estimate_rows(conn, query, params))
    return unscored, buckets


def estimate_table_rows(conn: psycopg.Connection[Any], target: Target) -> int:
    """The planner's estimate of the table's row count (instant)."""
    with _translated(f"estimating the size of {_table_label(target)!r}"):
        return _estimate_rows(conn, sql.SQL("SELECT 1 FROM {}").format(_table(target)), [])


# --- watch mode (owned by the status/watch engineer) --------------------------------------------


def listen(conn: psycopg.Connection[Any], channel: str) -> None:
    """LISTEN on `channel` (the connection must be in autocommit, as `connect` makes it)."""
    with _translated(f"listening on channel {channel!r}"):
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def wait_for_notifications(conn: psycopg.Connection[Any], timeout_s: float) -> list[str]:
    """Payloads of the notifications that arrive within `timeout_s` (plus any queued behind the
    first); [] on timeout. A lost connection raises a retryable DatabaseError."""
    with _translated("waiting for notifications"):
        payloads = [n.payload for n in conn.notifies(timeout=timeout_s, stop_after=1)]
        if payloads:
            payloads += [n.payload for n in conn.notifies(timeout=0.0)]
    return payloads


def has_notify_trigger(conn: psycopg.Connection[Any], target: Target, trigger: str) -> bool:
    """True if the target table has an enabled trigger of that name (migration 004 adds one)."""
    qualified = _table(target).as_string(conn)
    with _translated(f"looking for the notify trigger on {_table_label(target)!r}"):
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
            " AND tgname = %s AND tgenabled <> 'D')",
            (qualified, trigger),
        ).fetchone()
    return bool(row and row[0])
