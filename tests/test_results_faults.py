"""A result is written with its score or not at all: SIGKILL at random moments of a real run, and
at a chosen point (inside the statement that writes them), with a check of both tables after each.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import run_cli
from tests.support.faults import dbname_of, start_run, wait_until
from tests.support.table import UserTable, serve_valid_images
from tests.test_results import assert_every_score_has_its_result

LATENCY_MS = 100
RUN_ARGS = (
    "--batch-size",
    "3",
    "--concurrency",
    "4",
    "--retries",
    "0",
    "--timeout",
    "5",
    "--detector",
    "heuristic",
    "--log-format",
    "json",
)
KILLS = 6


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_score_without_its_result(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(13)
    with ImageServer(latency_ms=LATENCY_MS) as server:
        table = UserTable(database_url, id_type="integer").create().install_audit()
        rows = table.insert(list(serve_valid_images(server, 150)))
        kills = 0
        for trial in range(KILLS):
            context = f"SIGKILL {trial + 1}"
            written_before = len(table.results())
            resume = ("--resume",) if trial else ()
            run = start_run(
                *RUN_ARGS, *resume, cwd=tmp_path, database_url=database_url, label=f"kill{trial}"
            )
            # wait for this run's first writes, then a random moment among its next ones
            wait_until(
                lambda n=written_before, r=run: len(table.results()) > n or not r.is_running(),  # type: ignore[misc]
                timeout_s=60,
                what=f"{context}: the run to write",
            )
            time.sleep(rng.uniform(0.0, 0.4))
            if run.is_running():
                run.kill_session()
                kills += 1
            assert_every_score_has_its_result(table, context)
        assert kills >= KILLS - 1, "the runs ended before they could be killed: too few rows"

        done = run_cli("run", "--resume", *RUN_ARGS, cwd=tmp_path, database_url=database_url)
        assert done.exit_code == 0, done.output
    results = assert_every_score_has_its_result(table, "after --resume")
    assert set(results) == {row.id for row in rows}
    assert table.audit_writes() == Counter(str(row.id) for row in rows)  # each score once


def test_a_kill_inside_the_writing_statement_leaves_neither_score_nor_result(
    database_url: str, pg_admin_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    """The chosen point: the row's UPDATE has run and its result's INSERT is under way (held by a
    trigger) when the tool is SIGKILLed and its database session ends."""
    table = UserTable(database_url, id_type="uuid").create()
    rows = table.insert(list(serve_valid_images(image_server, 6)))
    held = rows[3]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION hold_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.source = '{held.url}' THEN PERFORM pg_sleep(60); END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            f'CREATE TRIGGER hold_one BEFORE INSERT ON "{table.results_table()}"'
            " FOR EACH ROW EXECUTE FUNCTION hold_one()"
        )
    run = start_run(*RUN_ARGS, cwd=tmp_path, database_url=database_url, label="held")
    dbname = dbname_of(database_url)

    def held_backends() -> list[int]:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            found = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event = 'PgSleep'",
                (dbname,),
            ).fetchall()
        return [pid for (pid,) in found]

    try:
        wait_until(lambda: bool(held_backends()), timeout_s=60, what="the held statement")
    finally:
        if not held_backends():
            run.kill_session()
    with psycopg.connect(database_url, autocommit=True) as conn:  # the UPDATE is done, uncommitted
        [(locked,)] = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE a.wait_event = 'PgSleep' AND l.locktype = 'transactionid'"
        ).fetchall()
        assert locked >= 1
    run.kill_session()
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        for pid in held_backends():
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: not held_backends(), timeout_s=30, what="the session to end")

    assert table.scores()[held.id] is None
    assert held.id not in table.results()
    assert_every_score_has_its_result(table, "after the kill")

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP TRIGGER hold_one ON "{table.results_table()}"')
    done = run_cli("run", "--resume", *RUN_ARGS, cwd=tmp_path, database_url=database_url)
    assert done.exit_code == 0, done.output
    results = assert_every_score_has_its_result(table, "after --resume")
    assert set(results) == {row.id for row in rows}
