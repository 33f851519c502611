"""Which URLs may be fetched: scheme, host and length; private networks refused on request."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from backfill_quality.config import MAX_URL_LENGTH
from backfill_quality.errors import FetchError
from backfill_quality.fetching.failures import (
    AttemptError,
)

ALLOWED_SCHEMES = ("http", "https")


_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


def validate_url(url: str) -> str:
    """The URL, stripped, if it is an absolute http(s) URL with a host; else a FetchError."""
    candidate = url.strip() if url else ""
    if not candidate:
        raise FetchError("empty URL")
    if len(candidate) > MAX_URL_LENGTH:
        raise FetchError(f"URL is too long ({len(candidate)} characters; limit {MAX_URL_LENGTH})")
    try:
        parts = urlsplit(candidate)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise FetchError(f"malformed URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise FetchError("URL has no scheme (only http, https are allowed)")
    if scheme not in ALLOWED_SCHEMES:
        raise FetchError(f"URL scheme '{scheme}' is not allowed (only http, https)")
    if not parts.hostname:
        raise FetchError("URL has no host")
    return candidate


async def ensure_public_host(url: str) -> None:
    """Refuse (not retryable) a URL whose host resolves to any non-public address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise AttemptError("could not resolve host", host, retryable=True) from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if is_blocked_address(address):
            raise AttemptError(
                f"refused: {host} resolves to a private or internal address ({address})",
                "private networks are denied",
                retryable=False,
            )


def is_blocked_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for loopback, private, link-local, reserved, multicast, unspecified, metadata, …"""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address in _METADATA_ADDRESSES
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )
