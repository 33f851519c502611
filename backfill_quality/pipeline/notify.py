"""The completion webhook: POST a JSON summary of a run (or a watch cycle) to a URL.

Best effort by design: a webhook that is down, slow or refuses the request is retried a few
times with a timeout, then reported as a warning; it never changes the run's outcome or exit
code. The URL often carries a secret (Slack, Teams and most chat hooks put a token in the path),
so messages name only its scheme and host.

Standard library HTTP (urllib): fetch.py stays the only user of httpx, tuned for images.
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from backfill_quality import __version__
from backfill_quality.config import RunSettings, Shard
from backfill_quality.errors import BackfillError, ConfigError
from backfill_quality.models import RunSummary
from backfill_quality.pipeline.checkpoint import run_checkpoint_path
from backfill_quality.redaction import redact

DEFAULT_NOTIFY_TIMEOUT_S = 10.0
DEFAULT_NOTIFY_RETRIES = 3
MAX_FAILED_IDS = 100
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Where and how to POST the summary."""

    url: str
    timeout_s: float = DEFAULT_NOTIFY_TIMEOUT_S
    retries: int = DEFAULT_NOTIFY_RETRIES
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 8.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"--notify-url: {describe_url(self.url)!r} is not an http(s) URL; "
                "give one like https://hooks.example.com/backfill"
            )
        if not self.timeout_s > 0:
            raise ConfigError("--notify-timeout must be greater than 0 seconds")
        if not 0 <= self.retries <= 10:
            raise ConfigError("--notify-retries must be between 0 and 10")


def describe_url(url: str) -> str:
    """scheme://host[:port]/… — the path and query may hold a token, so they are not shown."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "(not a URL)"
    port = f":{parts.port}" if parts.port else ""
    tail = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname}{port}{tail}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outcome(exit_code: int) -> str:
    return {0: "succeeded", 3: "some_failed", 130: "interrupted", 143: "interrupted"}.get(
        exit_code, "failed"
    )


def summary_payload(
    summary: RunSummary,
    *,
    exit_code: int,
    shard: Shard | None,
    event: str = "run.finished",
    cycle: int | None = None,
) -> dict[str, Any]:
    """The JSON body for a finished run or watch cycle (camelCase, like the checkpoint)."""
    failed_ids = [row_id for row_id, _, _ in summary.failed_images]
    payload: dict[str, Any] = {
        "event": event,
        "outcome": _outcome(exit_code),
        "exitStatus": exit_code,
        "total": summary.total,
        "processed": summary.processed,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "durationS": round(summary.elapsed_s, 3),
        "ratePerS": round(summary.rate_per_s, 2),
        "dryRun": summary.dry_run,
        "interrupted": summary.interrupted,
        "shard": str(shard) if shard else None,
        "checkpointPath": summary.checkpoint_path,
        "failedIds": failed_ids[:MAX_FAILED_IDS],
        "failedIdsOmitted": max(0, len(failed_ids) - MAX_FAILED_IDS),
    }
    if cycle is not None:
        payload["cycle"] = cycle
    return payload | _origin()


def failure_payload(
    message: str,
    *,
    exit_code: int,
    elapsed_s: float,
    shard: Shard | None,
    dry_run: bool,
    checkpoint_path: str,
) -> dict[str, Any]:
    """The JSON body when a run stopped on a fatal error (no summary exists)."""
    return {
        "event": "run.failed",
        "outcome": "failed",
        "exitStatus": exit_code,
        "error": redact(message),
        "durationS": round(elapsed_s, 3),
        "dryRun": dry_run,
        "shard": str(shard) if shard else None,
        "checkpointPath": checkpoint_path,
    } | _origin()


def _origin() -> dict[str, Any]:
    return {"host": socket.gethostname(), "version": __version__, "sentAt": _now_iso()}


class Webhook:
    """POSTs JSON bodies to one URL with retries; `send` never raises."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        warn: Warn,
        run: RunSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._warn = warn
        self._sleep = sleep
        self.shard = run.shard if run else None
        self.dry_run = run.dry_run if run else False
        self.checkpoint_path = str(run_checkpoint_path(run)) if run else ""

    def send(self, payload: dict[str, Any]) -> bool:
        """POST `payload`; True when the endpoint answered 2xx, else False after a warning."""
        s = self.settings
        body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
        problem = ""
        for attempt in range(s.retries + 1):
            if attempt:
                delay_s = min(s.backoff_cap_s, s.backoff_base_s * 2 ** (attempt - 1))
                self._sleep(delay_s * random.uniform(0.5, 1.0))
            problem, is_retryable = self._post_once(body)
            if not problem:
                return True
            if not is_retryable:
                break
        self._warn(
            f"webhook {describe_url(s.url)} was not notified after {attempt + 1} attempt(s): "
            f"{problem} — the run's result is unchanged; check --notify-url"
        )
        return False

    def _post_once(self, body: bytes) -> tuple[str, bool]:
        """('', _) on success, else (what went wrong, whether another attempt may help)."""
        request = urllib.request.Request(
            self.settings.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"backfill-quality/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                response.read(65536)
                return "", False
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}", exc.code in RETRYABLE_STATUSES
        except urllib.error.URLError as exc:
            return f"cannot connect: {_reason(exc.reason)}", True
        except TimeoutError:
            return f"no answer within {self.settings.timeout_s:g} s", True
        except OSError as exc:
            return f"connection failed: {_reason(exc)}", True

    def __repr__(self) -> str:
        return f"Webhook({describe_url(self.settings.url)})"


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return redact(str(reason))[:200]


def notify_run_end(webhook: Webhook | None, summary: RunSummary, *, exit_code: int) -> None:
    """Send the summary of a finished (or interrupted) run, if a webhook is configured."""
    if webhook is not None:
        webhook.send(summary_payload(summary, exit_code=exit_code, shard=webhook.shard))


def notify_run_failure(webhook: Webhook | None, error: BackfillError, *, elapsed_s: float) -> None:
    """Tell the webhook that the run stopped on a fatal error, if one is configured."""
    if webhook is None:
        return
    payload = failure_payload(
        str(error),
        exit_code=error.exit_code,
        elapsed_s=elapsed_s,
        shard=webhook.shard,
        dry_run=webhook.dry_run,
        checkpoint_path=webhook.checkpoint_path,
    )
    webhook.send(payload)
