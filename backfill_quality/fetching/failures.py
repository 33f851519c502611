"""Why an attempt failed: httpx errors and HTTP statuses -> a short reason, and whether to retry."""

from __future__ import annotations

import email.utils
import re
import socket
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx

from backfill_quality.errors import FetchError

_TRUNCATED_RE = re.compile(r"received (\d+) bytes, expected (\d+)")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PUSHBACK_STATUSES = frozenset({429, 503})
"""Statuses by which a host says "too much": `--concurrency auto` backs off on them."""


class AttemptError(Exception):
    """One failed attempt; `what` and `detail` become the user-facing message."""

    def __init__(
        self,
        what: str,
        detail: str | None = None,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        pushback: str | None = None,
    ) -> None:
        super().__init__(what)
        self.what = what
        self.detail = detail
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.pushback = pushback
        """Set when the host pushed back (429, 503, timeout, connection error): a short name."""

    def to_fetch_error(self, attempts: int) -> FetchError:
        message = self.what
        if attempts > 1:
            message += f" after {attempts} attempts"
        if self.detail:
            message += f" ({self.detail})"
        return FetchError(
            message,
            retryable=self.retryable,
            retry_after_s=self.retry_after_s,
            attempts=attempts,
        )


def status_error(response: httpx.Response) -> AttemptError:
    status = response.status_code
    reason = response.reason_phrase or _standard_reason(status)
    if status in REDIRECT_STATUSES:
        return AttemptError(f"HTTP {status} {reason} without a Location header", retryable=False)
    is_retryable = status in (408, 429) or 500 <= status <= 599
    header = response.headers.get("retry-after")
    retry_after_s = parse_retry_after(header) if header and is_retryable else None
    return AttemptError(
        f"HTTP {status} {reason}",
        retryable=is_retryable,
        retry_after_s=retry_after_s,
        pushback=f"HTTP {status}" if status in PUSHBACK_STATUSES else None,
    )


def _standard_reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unexpected status"


def translate_httpx_error(exc: httpx.HTTPError, url: str, timeout_s: float) -> AttemptError:
    """One httpx error -> a short, user-facing reason and whether retrying may help."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    address = f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    text = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connect",
            httpx.ReadTimeout: "read",
            httpx.WriteTimeout: "write",
            httpx.PoolTimeout: "pool",
        }.get(type(exc), "")
        detail = f"{phase} timeout {timeout_s:g}s".strip()
        return AttemptError("timed out", detail, retryable=True, pushback="timeout")
    if isinstance(exc, httpx.ConnectError):
        causes = list(_exception_chain(exc))
        lowered = " ".join(str(cause) for cause in causes).lower()
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return AttemptError(
                "connection refused", address, retryable=True, pushback="connection refused"
            )
        if (
            any(isinstance(cause, socket.gaierror) for cause in causes)
            or "name or service" in lowered
            or "name resolution" in lowered
            or "nodename" in lowered
        ):
            return AttemptError("could not resolve host", host, retryable=True)
        if "certificate" in lowered:
            return AttemptError("TLS certificate verification failed", host, retryable=False)
        return AttemptError(
            "could not connect", f"{address}: {text}", retryable=True, pushback="connection error"
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        match = _TRUNCATED_RE.search(text)
        detail = f"got {match[1]} of {match[2]} bytes" if match else text
        return AttemptError(
            "connection closed mid-response", detail, retryable=True, pushback="connection error"
        )
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        causes = _exception_chain(exc)
        if any(isinstance(cause, ConnectionResetError | BrokenPipeError) for cause in causes):
            return AttemptError(
                "connection reset", address, retryable=True, pushback="connection reset"
            )
        reason = next((str(cause) for cause in causes if str(cause)), type(exc).__name__)
        return AttemptError(
            "connection error", f"{address}: {reason}", retryable=True, pushback="connection error"
        )
    if isinstance(exc, httpx.DecodingError):
        return AttemptError("could not decode the response body", text, retryable=False)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return AttemptError("invalid URL", text, retryable=False)
    return AttemptError(
        "HTTP error",
        f"{type(exc).__name__}: {text}",
        retryable=isinstance(exc, httpx.TransportError),
    )


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if invalid."""
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
