"""Every SQL statement of the tool, as named functions; identifiers quoted with psycopg.sql.

The only package that imports psycopg. Library errors are translated here into `DatabaseError`
(`retryable=True` when reconnecting and trying again may succeed) or `ConfigError`.
Callers use `from backfill_quality import db` and `db.<name>`; the submodules own:

- `connection`: connecting, password redaction, psycopg errors translated (`_translate`)
- `schema`: the target table (quoted name, found through the search_path, column and key checks)
- `migration_steps`, `watch_triggers`: the named steps of `migrate`, each planned from the catalog
- `migrate`: planning and running the steps (or printing them as SQL)
- `pages`: keyset page queries (in key order, or in an `--order-by` order), counts and
  estimates of the rows left
- `order`: `--order-by` checked in the catalog, the EXPLAIN that finds its index, and the
  `migrate` step `order-index`
- `shards`: shard key ranges (integer keys: from the shard plan table, `migrate` step `shard-plan`)
- `results`: the results table (what each score was made of): its `migrate` step
  `results-table`, the guarded statement that writes a score with its result, reading results back
- `writes`: the pipelined per-row score UPDATEs with their results, and the demo's seed rows
- `report`: the review report's aggregates and galleries over the results table
- `rescore`: the scored rows a rescore takes (stale versions, `--where`), their stored results,
  results by content hash, and the guarded rewrite of a score with its result
- `status`: monitoring SQL for `status` (categories, histograms, exact counts, estimates)
- `trend`: quality per day, week or month from the results table (`status --trend`, `report`)
- `watch`: LISTEN/NOTIFY for watch mode
- `locks`: the advisory locks that keep two runs off one target, and who holds them

Submodules import downwards only: connection <- schema <- pages <- status, pages <- shards;
shards <- migration_steps <- watch_triggers <- migrate; pages and migration_steps <- order <-
migrate; results uses connection, schema and migration_steps, and migrate lists its step; writes
and trend use results; rescore uses pages, results and writes; watch and locks use connection and
schema (watch also migration_steps, for the trigger's name).
"""

from backfill_quality.db.connection import connect, describe_database, is_retryable, redact_url
from backfill_quality.db.locks import (
    LockHolder,
    advisory_lock_holders,
    advisory_unlock,
    table_identity,
    try_advisory_lock,
)
from backfill_quality.db.migrate import (
    MIGRATIONS_LOCK_KEY,
    STEPS,
    migrate,
    plan_migration,
    render_sql,
)
from backfill_quality.db.migration_steps import NOTIFY_TRIGGER, StepPlan
from backfill_quality.db.order import (
    SORTABLE_TYPES,
    check_order,
    has_order_index,
    slow_order_warning,
)
from backfill_quality.db.pages import (
    EXACT_COUNT_LIMIT,
    EXACT_COUNT_TIMEOUT_MS,
    IdRange,
    PageOrder,
    count_unscored,
    estimate_unscored,
    explain_ids_after,
    explain_page_query,
    fetch_page,
    ids_after,
)
from backfill_quality.db.report import (
    GalleryRow,
    ResultFigures,
    category_sample,
    failed_check_sample,
    lowest_scored,
    result_figures,
)
from backfill_quality.db.rescore import (
    RescoreWrite,
    Selection,
    StoredRow,
    check_where,
    count_to_rescore,
    database_now,
    fetch_rescore_page,
    find_current_measurements,
    write_rescores,
)
from backfill_quality.db.results import (
    has_results_table,
    read_results,
    require_results_table,
    results_label,
    results_table_name,
)
from backfill_quality.db.schema import (
    INTEGER_ID_TYPES,
    SCORE_TYPES,
    SUPPORTED_ID_TYPES,
    TEXT_ID_TYPES,
    URL_TYPES,
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
    count_results_by_version,
    count_score_buckets,
    count_scored_without_result,
    estimate_results_rows,
    estimate_score_buckets,
    estimate_table_rows,
    score_distribution,
    score_histogram,
)
from backfill_quality.db.trend import (
    EVERY_CHOICES,
    SCORED_AT,
    TrendPeriod,
    check_every,
    quality_trend,
    trend_query,
)
from backfill_quality.db.watch import listen, notify_channel, wait_for_notifications
from backfill_quality.db.writes import (
    ScoreWrite,
    WriteResult,
    replace_demo_rows,
    write_score_results,
    write_scores,
)

__all__ = [
    "EVERY_CHOICES",
    "EXACT_COUNT_LIMIT",
    "EXACT_COUNT_TIMEOUT_MS",
    "INTEGER_ID_TYPES",
    "MIGRATIONS_LOCK_KEY",
    "NOTIFY_TRIGGER",
    "SCORED_AT",
    "SCORE_TYPES",
    "SHARD_PLAN_TABLE",
    "SORTABLE_TYPES",
    "STEPS",
    "SUPPORTED_ID_TYPES",
    "TEXT_ID_TYPES",
    "URL_TYPES",
    "UUID_SPACE",
    "GalleryRow",
    "IdRange",
    "LockHolder",
    "PageOrder",
    "RescoreWrite",
    "ResultFigures",
    "ScoreBuckets",
    "ScoreWrite",
    "Selection",
    "StepPlan",
    "StoredRow",
    "TrendPeriod",
    "WriteResult",
    "advisory_lock_holders",
    "advisory_unlock",
    "category_sample",
    "check_every",
    "check_order",
    "check_target",
    "check_where",
    "connect",
    "count_results_by_version",
    "count_score_buckets",
    "count_scored_without_result",
    "count_to_rescore",
    "count_unscored",
    "database_now",
    "describe_database",
    "estimate_results_rows",
    "estimate_score_buckets",
    "estimate_table_rows",
    "estimate_unscored",
    "explain_ids_after",
    "explain_page_query",
    "failed_check_sample",
    "fetch_page",
    "fetch_rescore_page",
    "find_current_measurements",
    "has_order_index",
    "has_results_table",
    "ids_after",
    "is_retryable",
    "key_range_for_shard",
    "listen",
    "lowest_scored",
    "migrate",
    "notify_channel",
    "plan_migration",
    "plan_target",
    "quality_trend",
    "read_results",
    "redact_url",
    "render_sql",
    "replace_demo_rows",
    "require_results_table",
    "result_figures",
    "results_label",
    "results_table_name",
    "score_distribution",
    "score_histogram",
    "shard_plan_bounds",
    "slow_order_warning",
    "table_identity",
    "trend_query",
    "try_advisory_lock",
    "wait_for_notifications",
    "write_rescores",
    "write_score_results",
    "write_scores",
]
