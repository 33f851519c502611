"""`migrate`: plan every step against the catalog, then run the plans (or print them as SQL).

Every step is planned before anything runs, so a step that cannot complete (rows that break
the CHECK) stops `migrate` before it changes anything. A step then either completes or leaves
the table as it found it: each batch is one transaction, and the CHECK step, whose two
transactions keep the strong lock brief (ADD ... NOT VALID, then VALIDATE, which lets reads and
writes go on), drops its constraint again if the validation fails. A statement that needs a
strong lock waits for it at most 2 s; the step is then planned and run again after each of
`lock_retry_delays_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import psycopg

from backfill_quality.config import OrderBy, Target
from backfill_quality.db.connection import _translate, _translated, describe_database
from backfill_quality.db.migration_steps import (
    Batch,
    MigrationStep,
    StepPlan,
    Subject,
    plan_category_function,
    plan_score_check,
    plan_score_column,
    plan_score_index,
    plan_shard_plan,
    plan_table,
    plan_unscored_index,
    refuse_rows_outside_range,
    resolve_subject,
)
from backfill_quality.db.order import ORDER_INDEX_STEP, plan_order_index
from backfill_quality.db.results import plan_results_table
from backfill_quality.db.watch_triggers import plan_watch_triggers
from backfill_quality.errors import BackfillError, DatabaseError

STEPS: tuple[MigrationStep, ...] = (
    MigrationStep("table", plan_table),
    MigrationStep("score-column", plan_score_column),
    MigrationStep("score-check", plan_score_check),
    MigrationStep("score-index", plan_score_index),
    MigrationStep("category-function", plan_category_function),
    MigrationStep("unscored-index", plan_unscored_index),
    MigrationStep("watch-triggers", plan_watch_triggers),
    MigrationStep("shard-plan", plan_shard_plan),
    MigrationStep("results-table", plan_results_table),
)
ORDER_INDEX = MigrationStep(ORDER_INDEX_STEP, plan_order_index)
"""The step of `migrate --order-by` only: without the option it is not planned nor listed."""
MIGRATIONS_LOCK_KEY = 0x6266_7175_616C  # pg_advisory_lock key: two `migrate` runs never race
LOCK_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
"""Pauses before running a step again after a statement gave up waiting for a lock (2 s each
time): about half a minute in all for another session's transaction to end."""


class _LockWaitExpired(Exception):
    """A statement gave up waiting for its lock (lock_timeout)."""


class _CheckFailed(Exception):
    """A row broke a constraint while it was validated (written after the rows were counted)."""


def plan_migration(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    may_create_table: bool = False,
    with_watch: bool = False,
    only: Collection[str] | None = None,
    order_by: OrderBy | None = None,
) -> list[StepPlan]:
    """What every step (or the steps named in `only`) would do, read from the catalog; nothing
    is changed. Raises ConfigError (the table or a column cannot be used) or
    MigrationBlockedError (rows break the CHECK)."""
    steps = _steps(order_by)
    unknown = set(only or ()) - {step.name for step in (*STEPS, ORDER_INDEX)}
    if unknown:
        raise ValueError(f"no migration step named {', '.join(sorted(unknown))}")
    with _translated(f"reading the catalog for {target.label!r}"):
        subject = resolve_subject(
            conn,
            target,
            may_create_table=may_create_table,
            with_watch=with_watch,
            order_by=order_by,
        )
        return [step.plan(conn, subject) for step in steps if only is None or step.name in only]


def _steps(order_by: OrderBy | None) -> tuple[MigrationStep, ...]:
    return (*STEPS, ORDER_INDEX) if order_by is not None else STEPS


def migrate(
    conn: psycopg.Connection[Any],
    target: Target,
    *,
    may_create_table: bool = False,
    with_watch: bool = False,
    lock_retry_delays_s: Sequence[float] = LOCK_RETRY_DELAYS_S,
    on_lock_wait: Callable[[str], None] = lambda message: None,
    only: Collection[str] | None = None,
    order_by: OrderBy | None = None,
) -> list[StepPlan]:
    """Run every step for `target` (or the steps named in `only`); return the plans (what each
    step found and did).

    `may_create_table`: no table was named, so the demo's `images` is created when no table of
    that name exists in any schema. `with_watch`: install the triggers `watch` listens to.
    `order_by`: create the partial index a run with this `--order-by` reads (step order-index).
    """
    if not conn.autocommit:
        raise DatabaseError("migrate needs an autocommit connection (use db.connect)")
    with _translated("preparing the migration"):
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,))
    try:
        plans = plan_migration(
            conn,
            target,
            may_create_table=may_create_table,
            with_watch=with_watch,
            only=only,
            order_by=order_by,
        )

        def resolve() -> Subject:
            return resolve_subject(
                conn,
                target,
                may_create_table=may_create_table,
                with_watch=with_watch,
                order_by=order_by,
            )

        for plan in plans:
            if plan.batches:
                _carry_out(conn, plan, resolve, lock_retry_delays_s, on_lock_wait)
    finally:
        if not conn.closed:
            conn.execute("RESET lock_timeout")
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))
    return plans


def _carry_out(
    conn: psycopg.Connection[Any],
    plan: StepPlan,
    resolve: Callable[[], Subject],
    delays_s: Sequence[float],
    on_lock_wait: Callable[[str], None],
) -> None:
    """Run one step's plan; after a lock wait expired, pause, plan the step again and run it."""
    for attempt, delay_s in enumerate((*delays_s, None), start=1):
        try:
            _run_plan(conn, plan)
            return
        except _LockWaitExpired as exc:
            if delay_s is None:
                raise DatabaseError(
                    f"migration step {plan.step}: the table stayed locked by another session"
                    f" ({len(delays_s) + 1} tries, each waiting briefly so as not to hold up its"
                    " queries); run `migrate` again once that session's long transaction has"
                    " ended (the steps done so far are kept, this one changed nothing)",
                    retryable=True,
                ) from exc.__cause__
            on_lock_wait(
                f"{plan.step}: the table is locked by another session; trying again in"
                f" {delay_s:g}s (attempt {attempt + 1} of {len(delays_s) + 1})"
            )
            time.sleep(delay_s)
            with _translated(f"planning migration step {plan.step} again"):
                step = next(s for s in (*STEPS, ORDER_INDEX) if s.name == plan.step)
                plan = step.plan(conn, resolve())
            if not plan.batches:
                return
        except _CheckFailed as exc:  # undone; a row written after the count broke the CHECK
            with _translated("counting the rows that break the CHECK"):
                refuse_rows_outside_range(conn, resolve())
            raise DatabaseError(
                f"migration step {plan.step}: a row broke the constraint while it was validated"
                " (the step was undone); run `migrate` again"
            ) from exc.__cause__


def _run_plan(conn: psycopg.Connection[Any], plan: StepPlan) -> None:
    """Every batch of the plan; if one fails after an earlier one committed, `undo` first."""
    has_committed = False
    try:
        for batch in plan.batches:
            _run_batch(conn, batch, plan.step)
            has_committed = True
    except (_LockWaitExpired, _CheckFailed, BackfillError):
        if has_committed and plan.undo is not None:
            _run_batch(conn, plan.undo, f"{plan.step} (undoing it)")
        raise


def _run_batch(conn: psycopg.Connection[Any], batch: Batch, step: str) -> None:
    try:
        if batch.is_atomic:
            with conn.transaction():
                for statement in batch.statements:
                    conn.execute(statement)
        else:
            for statement in batch.statements:
                conn.execute(statement)
    except psycopg.errors.LockNotAvailable as exc:
        raise _LockWaitExpired(step) from exc
    except psycopg.errors.CheckViolation as exc:
        raise _CheckFailed(step) from exc
    except psycopg.Error as exc:
        error = _translate(exc, f"running migration step {step}")
        raise DatabaseError(
            f"{error} (every step is idempotent: fix the cause and run `migrate` again)",
            retryable=error.retryable,
        ) from exc


def render_sql(conn: psycopg.Connection[Any], target: Target, plans: Sequence[StepPlan]) -> str:
    """The plans as a SQL script that psql can run: what `migrate` would execute."""
    lines = [f"-- backfill-quality migrate --sql: {target.label} in {describe_database(conn)}"]
    has_session_setting = False
    for plan in plans:
        lines.append(f"\n-- {plan.step}: {plan.outcome} — {plan.detail}")
        for batch in plan.batches:
            statements = [f"{s.as_string(conn)};" for s in batch.statements]
            if batch.is_atomic:
                statements = ["BEGIN;", *statements, "COMMIT;"]
            else:
                has_session_setting = True
            lines.extend(statements)
        if plan.undo is not None:
            undo = plan.undo.statements[-1].as_string(conn)
            lines.append(f"-- if the validation fails, `migrate` undoes the step: {undo};")
    if has_session_setting:
        lines.append("\nRESET lock_timeout;")
    return "\n".join(lines) + "\n"


__all__ = [
    "LOCK_RETRY_DELAYS_S",
    "MIGRATIONS_LOCK_KEY",
    "STEPS",
    "migrate",
    "plan_migration",
    "render_sql",
]
