"""The completion webhook: against a real HTTP endpoint on 127.0.0.1 that records what it gets."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.errors import ConfigError
from backfill_quality.pipeline.notify import NotifySettings, Webhook, describe_url
from tests.support.cli import run_cli
from tests.support.http import closed_port
from tests.support.table import UserTable, apply_migrations, serve_valid_images

FAST = ("--retries", "0", "--timeout", "5", "--workers", "1")


class HookRecorder:
    """A webhook endpoint chosen by path: `/ok/...` 204; `/status/<code>` that code;
    `/flaky/<n>/...` 503 for the first n hits, then 204; `/slow/<ms>` waits, then 204.
    Every POST body is recorded (parsed JSON) with its path."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, Any]] = []
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with recorder._lock:
                    recorder.hits[self.path] += 1
                    hits = recorder.hits[self.path]
                    recorder.bodies.append((self.path, body))
                self._answer(recorder.status_for(self.path, hits))

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def status_for(path: str, hits: int) -> int:
        parts = urlsplit(path).path.strip("/").split("/")
        if parts[0] == "status":
            return int(parts[1])
        if parts[0] == "flaky":
            return 503 if hits <= int(parts[1]) else 204
        if parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000)
        return 204

    def url(self, path: str) -> str:
        return self.base_url + path

    def payloads(self, path: str) -> list[Any]:
        with self._lock:
            return [body for p, body in self.bodies if p == path]

    def __enter__(self) -> HookRecorder:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hooks() -> Iterator[HookRecorder]:
    with HookRecorder() as recorder:
        yield recorder


def webhook(url: str, warnings: list[str], **kwargs: Any) -> Webhook:
    settings = NotifySettings(url, **kwargs)
    return Webhook(settings, warn=warnings.append, sleep=lambda _: None)


# --- the client ---------------------------------------------------------------------------------


def test_a_flaky_endpoint_is_retried_until_it_answers(hooks: HookRecorder) -> None:
    warnings: list[str] = []
    assert webhook(hooks.url("/flaky/2/x"), warnings).send({"n": 1}) is True
    assert hooks.payloads("/flaky/2/x") == [{"n": 1}] * 3 and warnings == []


def test_a_refusal_is_not_retried_and_only_warns(hooks: HookRecorder) -> None:
    warnings: list[str] = []
    assert webhook(hooks.url("/status/400?token=T0pSecret"), warnings).send({}) is False
    assert hooks.hits["/status/400?token=T0pSecret"] == 1
    assert len(warnings) == 1 and "HTTP 400" in warnings[0] and "1 attempt" in warnings[0]
    assert "T0pSecret" not in warnings[0] and "127.0.0.1" in warnings[0]


def test_a_slow_or_absent_endpoint_times_out_and_only_warns(hooks: HookRecorder) -> None:
    warnings: list[str] = []
    started = time.monotonic()
    slow = webhook(hooks.url("/slow/3000"), warnings, timeout_s=0.3, retries=1)
    assert slow.send({}) is False
    assert time.monotonic() - started < 2.5
    refused = webhook(f"http://127.0.0.1:{closed_port()}/hook/S3cretPath", warnings, retries=2)
    assert refused.send({}) is False
    assert "no answer within 0.3 s" in warnings[0] and "2 attempt" in warnings[0]
    assert "cannot connect" in warnings[1] and "3 attempt" in warnings[1]
    assert "S3cretPath" not in warnings[1]


@pytest.mark.parametrize("url", ["ftp://h/x", "hooks.example.com/x", "http://"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError, match="--notify-url"):
        NotifySettings(url)


def test_messages_never_show_the_path_of_the_url() -> None:
    assert describe_url("https://hooks.slack.com/services/T0/B0/XyZ") == "https://hooks.slack.com/…"
    assert describe_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


# --- `run --notify-url` --------------------------------------------------------------------------


def test_run_posts_its_summary_when_it_ends(
    tmp_path: Path, database_url: str, image_server: ImageServer, hooks: HookRecorder
) -> None:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    table.insert(list(serve_valid_images(image_server, 5)))
    broken = table.insert([image_server.url("/status/404")])

    result = run_cli(
        "run",
        *FAST,
        "--notify-url",
        hooks.url("/flaky/1/done"),
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 3, result.output
    [body] = hooks.payloads("/flaky/1/done")[1:]
    assert body["event"] == "run.finished" and body["outcome"] == "some_failed"
    assert (body["exitStatus"], body["total"], body["processed"]) == (3, 6, 6)
    assert (body["succeeded"], body["failed"], body["failedIds"]) == (5, 1, [broken[0].id])
    assert body["dryRun"] is False and body["shard"] is None and body["durationS"] > 0
    assert body["checkpointPath"].endswith(".backfill-progress.json")
    assert "url" not in json.dumps(body).lower()  # image URLs may carry credentials


def test_a_failing_webhook_never_changes_the_exit_code(
    tmp_path: Path, database_url: str, image_server: ImageServer, hooks: HookRecorder
) -> None:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    table.insert(list(serve_valid_images(image_server, 3)))

    result = run_cli(
        "run",
        *FAST,
        "--dry-run",
        "--notify-url",
        hooks.url("/status/400"),
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 0, result.output
    assert hooks.payloads("/status/400")[0]["dryRun"] is True
    assert "webhook http://127.0.0.1" in result.stderr and "HTTP 400" in result.stderr


def test_a_run_that_cannot_start_still_notifies(
    tmp_path: Path, database_url: str, hooks: HookRecorder
) -> None:
    result = run_cli(
        "run",
        "--table",
        "nope",
        "--shard",
        "1/2",
        "--notify-url",
        hooks.url("/ok"),
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 2, result.output
    [body] = hooks.payloads("/ok")
    assert body["event"] == "run.failed" and body["exitStatus"] == 2
    assert "'nope' does not exist" in body["error"] and body["shard"] == "1/2"
    assert body["checkpointPath"].endswith(".backfill-progress.nope.shard-1-of-2.json")


def test_a_bad_notify_url_is_a_usage_error_before_anything_runs(
    tmp_path: Path, database_url: str
) -> None:
    result = run_cli("run", "--notify-url", "ftp://x/y", cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 2 and "--notify-url" in result.stderr
    assert not (tmp_path / ".backfill-progress.json").exists()
