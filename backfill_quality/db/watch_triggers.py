"""Step `watch-triggers` (only with `migrate --watch`): tell `watch` about rows to score.

After an INSERT of a row without a score, and after an UPDATE of the url, the trigger sends
`NOTIFY <channel>` with the row's id as the payload; each table has its own channel (the
trigger's fourth argument, which `watch` reads back), so a watch wakes only for its table.
NOTIFY is transactional: watch hears of a row only once its transaction has committed.

A changed url makes the old score stale, so an UPDATE that changes the url and leaves the score
as it was also resets the score to NULL (the row is scored again). An UPDATE that sets the url
and a new score together keeps that score: the writer knows best.

The two functions are generic (the column names and the channel are trigger arguments; without
arguments they fall back to images' defaults, as the triggers of older versions had none), one
pair in each table's schema. Cheap: a catalog change under a brief lock, no scan, no rewrite.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from backfill_quality.db.migration_steps import (
    LEGACY_CHANNEL,
    NOTIFY_TRIGGER,
    RESET_TRIGGER,
    Batch,
    Statement,
    StepPlan,
    Subject,
    lock_timeout,
    watch_channel,
)

_RESET_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    url_column text := coalesce(TG_ARGV[1], 'url');
    score_column text := coalesce(TG_ARGV[2], 'quality_score');
    new_row jsonb := to_jsonb(NEW);
    old_row jsonb := to_jsonb(OLD);
BEGIN
    IF new_row -> url_column IS DISTINCT FROM old_row -> url_column
       AND new_row -> score_column IS NOT DISTINCT FROM old_row -> score_column THEN
        NEW := jsonb_populate_record(NEW, jsonb_build_object(score_column, NULL));
    END IF;
    RETURN NEW;
END
$$"""

_NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    id_column text := coalesce(TG_ARGV[0], 'id');
    url_column text := coalesce(TG_ARGV[1], 'url');
    score_column text := coalesce(TG_ARGV[2], 'quality_score');
    channel text := coalesce(TG_ARGV[3], '{legacy}');
    new_row jsonb := to_jsonb(NEW);
BEGIN
    IF new_row ->> score_column IS NULL
       AND (TG_OP = 'INSERT' OR new_row -> url_column IS DISTINCT FROM to_jsonb(OLD) -> url_column)
    THEN
        PERFORM pg_notify(channel, new_row ->> id_column);
    END IF;
    RETURN NULL;
END
$$"""

_WHEN = {
    RESET_TRIGGER: "BEFORE UPDATE OF {url} ON {table}",
    NOTIFY_TRIGGER: "AFTER INSERT OR UPDATE OF {url} ON {table}",
}


def _present_triggers(conn: psycopg.Connection[Any], subject: Subject) -> set[str]:
    if subject.table_oid is None:
        return set()
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND tgname = ANY(%s)",
        (subject.table_oid, [RESET_TRIGGER, NOTIFY_TRIGGER]),
    ).fetchall()
    return {str(name) for (name,) in rows}


def plan_watch_triggers(conn: psycopg.Connection[Any], subject: Subject) -> StepPlan:
    present = _present_triggers(conn, subject)
    names = f"{RESET_TRIGGER}, {NOTIFY_TRIGGER}"
    if len(present) == len(_WHEN):
        return StepPlan("watch-triggers", "already present", names)
    if not subject.with_watch:
        command = " ".join(["backfill-quality migrate --watch", *subject.target.cli_options()])
        return StepPlan(
            "watch-triggers",
            "skipped",
            f"only `watch` needs them (NOTIFY on insert, score reset on url change): `{command}`"
            " installs them",
        )
    t = subject.target
    channel = watch_channel(subject.schema, t.table)
    arguments = sql.SQL(", ").join(
        sql.Literal(value) for value in (t.id_column, t.url_column, t.score_column, channel)
    )
    statements: list[Statement] = [lock_timeout()]
    for template, trigger in ((_RESET_FUNCTION, RESET_TRIGGER), (_NOTIFY_FUNCTION, NOTIFY_TRIGGER)):
        function = subject.in_schema(trigger)
        text = template.strip().replace("{legacy}", LEGACY_CHANNEL)
        statements.append(sql.SQL(text).format(function=function))
        if trigger in present:
            continue
        when = sql.SQL(_WHEN[trigger]).format(url=sql.Identifier(t.url_column), table=subject.table)
        statements.append(
            sql.SQL("CREATE TRIGGER {} {} FOR EACH ROW EXECUTE FUNCTION {}({})").format(
                sql.Identifier(trigger), when, function, arguments
            )
        )
    detail = f"{names} (NOTIFY {channel})"
    return StepPlan("watch-triggers", "created", detail, (Batch(tuple(statements)),))
