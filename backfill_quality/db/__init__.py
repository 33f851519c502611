"""Every SQL statement of the tool, as named functions; identifiers quoted with psycopg.sql.

The only package that imports psycopg. Library errors are translated here into `DatabaseError`
(`retryable=True` when reconnecting and trying again may succeed) or `ConfigError`.
Callers use `from backfill_quality import db` and `db.<name>`; the submodules own:

- `connection`: connecting, password redaction, psycopg errors translated (`_translate`)
- `schema`: the target table (quoted name, column and key checks) and the migrations
- `pages`: keyset page queries, counts and estimates of the rows left
- `shards`: shard key ranges (integer keys: from the shard plan table, migration 005)
- `writes`: the pipelined per-row score UPDATEs, and the demo's seed rows
- `status`: monitoring SQL for `status` (categories, histograms, exact counts, estimates)
- `watch`: LISTEN/NOTIFY for watch mode
- `locks`: the advisory locks that keep two runs off one target, and who holds them

Submodules import downwards only: connection <- schema <- pages <- status, pages <- shards;
writes, watch and locks use connection and schema.
"""

from backfill_quality.db.connection import connect, describe_database, is_retryable, redact_url
from backfill_quality.db.locks import (
    LockHolder,
    advisory_lock_holders,
    advisory_unlock,
    table_identity,
    try_advisory_lock,
)
from backfill_quality.db.pages import (
    EXACT_COUNT_LIMIT,
    EXACT_COUNT_TIMEOUT_MS,
    IdRange,
    count_unscored,
    estimate_unscored,
    explain_ids_after,
    explain_page_query,
    fetch_page,
    ids_after,
)
from backfill_quality.db.schema import (
    INTEGER_ID_TYPES,
    MIGRATIONS_LOCK_KEY,
    MIGRATIONS_TABLE,
    SCORE_TYPES,
    SUPPORTED_ID_TYPES,
    TEXT_ID_TYPES,
    URL_TYPES,
    applied_migrations,
    apply_migrations,
    check_target,
)
from backfill_quality.db.shards import (
    SHARD_PLAN_TABLE,
    UUID_SPACE,
    key_range_for_shard,
    plan_target,
    shard_plan_bounds,
)
from backfill_quality.db.status import (
    ScoreBuckets,
    count_score_buckets,
    estimate_score_buckets,
    estimate_table_rows,
    score_distribution,
    score_histogram,
)
from backfill_quality.db.watch import has_notify_trigger, listen, wait_for_notifications
from backfill_quality.db.writes import (
    WriteResult,
    replace_demo_rows,
    write_score_results,
    write_scores,
)

__all__ = [
    "EXACT_COUNT_LIMIT",
    "EXACT_COUNT_TIMEOUT_MS",
    "INTEGER_ID_TYPES",
    "MIGRATIONS_LOCK_KEY",
    "MIGRATIONS_TABLE",
    "SCORE_TYPES",
    "SHARD_PLAN_TABLE",
    "SUPPORTED_ID_TYPES",
    "TEXT_ID_TYPES",
    "URL_TYPES",
    "UUID_SPACE",
    "IdRange",
    "LockHolder",
    "ScoreBuckets",
    "WriteResult",
    "advisory_lock_holders",
    "advisory_unlock",
    "applied_migrations",
    "apply_migrations",
    "check_target",
    "connect",
    "count_score_buckets",
    "count_unscored",
    "describe_database",
    "estimate_score_buckets",
    "estimate_table_rows",
    "estimate_unscored",
    "explain_ids_after",
    "explain_page_query",
    "fetch_page",
    "has_notify_trigger",
    "ids_after",
    "is_retryable",
    "key_range_for_shard",
    "listen",
    "plan_target",
    "redact_url",
    "replace_demo_rows",
    "score_distribution",
    "score_histogram",
    "shard_plan_bounds",
    "table_identity",
    "try_advisory_lock",
    "wait_for_notifications",
    "write_score_results",
    "write_scores",
]
