"""Redaction by shape: a password is masked in any text, whatever the connection string looks like.

These tests start with no registered secret, so they test the patterns alone (the net that does
not depend on parsing); the literal net (the registered password, PGPASSWORD) has its own tests.
The same strings through the real command line are in test_security.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from backfill_quality import redaction
from backfill_quality.redaction import MASK, redact, register_database_secrets

SECRET = "Pw-9xQ7z"

MALFORMED = {
    "no-colon-after-scheme": "postgresql//app:{pw}@db.example.com/prod",
    "one-slash": "postgresql:/app:{pw}@db.example.com/prod",
    "no-slashes": "postgresql:app:{pw}@db.example.com/prod",
    "no-scheme": "app:{pw}@db.example.com/prod",
    "jdbc": "jdbc:postgresql://app:{pw}@db.example.com/prod",
    "misspelt-scheme": "postgresq://app:{pw}@db.example.com/prod",
    "bad-port": "postgresql://app:{pw}@db.example.com:notaport/prod",
    "port-out-of-range": "postgresql://app:{pw}@db.example.com:99999/prod",
    "single-quotes": "'postgresql://app:{pw}@db.example.com/prod'",
    "double-quotes": '"postgresql://app:{pw}@db.example.com/prod"',
    "misspelt-option": "postgresql://app:{pw}@db.example.com/prod?sslmod=require",
    "unterminated-ipv6": "postgresql://app:{pw}@[::1/prod",
    "trailing-words": "postgresql://app:{pw}@db.example.com/prod and more",
    "keyvalue-spaced-quoted": "host=db.example.com password = '{pw} x' sslmod=require",
    "keyvalue-uppercase": "host=db.example.com PASSWORD={pw} dbname=prod",
    "keyvalue-unterminated": "host=db.example.com password='{pw}",
    "keyvalue-sslpassword": "host=db.example.com sslpassword={pw}",
    "query-password": "postgresql:///prod?host=/run&password={pw}&sslmod=x",
}
"""Connection strings libpq refuses (or that are not connection strings at all), by shape."""

LIBPQ_ECHOES = (
    "{s}",
    'missing "=" after "{s}" in connection info string',
    'invalid connection option "{s}"',
    "could not connect to the database at {s}: connection is bad",
    "error: --database-url: {s} — check DATABASE_URL",
    '{{"event": "error", "message": "{s}"}}',
)
"""Ways an error message may quote the string back."""


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(redaction, "_secrets", set())
    monkeypatch.delenv("PGPASSWORD", raising=False)
    yield


@pytest.mark.parametrize("echo", LIBPQ_ECHOES)
@pytest.mark.parametrize("shape", sorted(MALFORMED))
def test_the_patterns_mask_the_password_of_every_shape(shape: str, echo: str) -> None:
    text = echo.format(s=MALFORMED[shape].format(pw=SECRET))

    redacted = redact(text)

    assert SECRET not in redacted
    assert MASK in redacted


@pytest.mark.parametrize(
    "password", ["p@ss@w:rd", "a/b?c#d", "semi;colon", "quote'in", 'dq"in', "100%", "trail@"]
)
def test_everything_after_user_up_to_the_last_at_is_masked(password: str) -> None:
    text = f"postgresql://app:{password}@db.example.com:5432/prod"

    assert redact(text) == f"postgresql://app:{MASK}@db.example.com:5432/prod"


def test_a_percent_encoded_password_is_masked_in_both_forms() -> None:
    encoded = quote("p@ss/w:rd", safe="")
    text = f"postgresql://app:{encoded}@db/prod?foo=1"

    assert redact(text) == f"postgresql://app:{MASK}@db/prod?foo=1"


def test_password_values_are_masked_with_any_spacing_case_and_quoting() -> None:
    text = (
        "password=a1 PASSWORD = 'b 2' Password= 'c\\'3' sslpassword=d4 "
        "postgresql:///x?user=u&password=e5&host=h"
    )

    redacted = redact(text)

    for secret in ("a1", "b 2", "c\\'3", "d4", "e5"):
        assert secret not in redacted
    assert "host=h" in redacted, "a URL query value ends at the next '&'"


def test_ordinary_text_and_urls_are_left_alone() -> None:
    text = (
        "could not connect to the database at 127.0.0.1:5432/prod: connection refused; "
        "https://cdn.example.com/img/bird@2x.jpg at 10:42:07, mail ops@example.com"
    )

    assert redact(text) == text


def test_registered_secrets_and_pgpassword_are_masked_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", "EnvS3cret-k2W")
    register_database_secrets("postgresql://app:p%40ss%2Fword@db/prod")

    text = "db 'EnvS3cret-k2W' said: password for p@ss/word and p%40ss%2Fword, host 'word'"
    redacted = redact(text)

    for secret in ("EnvS3cret-k2W", "p@ss/word", "p%40ss%2Fword", "word"):
        assert secret not in redacted


@pytest.mark.parametrize("shape", sorted(MALFORMED))
def test_registration_finds_the_password_of_every_shape(shape: str) -> None:
    register_database_secrets(MALFORMED[shape].format(pw=SECRET))

    assert SECRET not in redact(f"libpq echoed a fragment: {SECRET}.")


_URL_SHAPES = [s for s in MALFORMED.values() if "password" not in s.lower()]
_PASSWORDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=4,
    max_size=24,
)


@given(password=_PASSWORDS, shape=st.sampled_from(_URL_SHAPES), echo=st.sampled_from(LIBPQ_ECHOES))
def test_property_a_random_url_password_never_survives(
    password: str, shape: str, echo: str
) -> None:
    text = echo.format(s=shape.format(pw=password))
    assume(password not in echo.format(s=shape.format(pw="")))  # not part of the rest
    assume(not any(char.isspace() for char in password))  # a URL cannot hold a blank
    assume("***" not in password)  # the mask itself: found in any masked text, leaking nothing

    assert password not in redact(text)


@given(password=st.text(min_size=4, max_size=24), echo=st.sampled_from(LIBPQ_ECHOES))
def test_property_a_random_quoted_keyvalue_password_never_survives(
    password: str, echo: str
) -> None:
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    text = echo.format(s=f"host=db port=5432 password = '{escaped}' sslmod=x")
    assume(password not in echo.format(s="host=db port=5432 password = '' sslmod=x"))

    assert password not in redact(text)
    assert escaped not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1/" + "a" * 100_000,  # an over-long image URL (they are logged too)
        "a:" * 50_000 + "@x",
        "http://h:1/" + "a@" * 50_000,
        "?password=" + "b" * 100_000,
    ],
    ids=["long-url", "many-colons", "many-ats", "long-query"],
)
def test_redaction_takes_linear_time_on_long_text(text: str) -> None:
    """Redaction runs on the event loop for every log line and checkpoint save: a pattern that
    backtracks over a 100 KB URL stalled a whole run (quadratic: about 25 s here; linear: ms)."""
    started = time.process_time()

    redact(text)

    assert time.process_time() - started < 2.0
