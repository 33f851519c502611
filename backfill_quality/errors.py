"""The project's exceptions: one family, each translated from the library error at the boundary."""

from __future__ import annotations


class BackfillError(Exception):
    """Base of every error this tool raises on purpose; its message is meant for the user."""

    exit_code = 1


class ConfigError(BackfillError):
    """A setting or an option is wrong (bad value, unknown table or column)."""

    exit_code = 2


class DatabaseError(BackfillError):
    """The database could not be reached or a statement failed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.confirmed: list[object] = []  # a batch's results known before the failure


class TargetLockedError(BackfillError):
    """Another process runs on this target (its advisory lock is held): nothing was done, or,
    after a reconnect, this run stopped with its checkpoint saved. Exit code 4."""

    exit_code = 4


class MigrationBlockedError(BackfillError):
    """A migration step cannot complete because of what the table holds (rows whose score breaks
    the CHECK it adds); nothing was changed. The command was right, the data must be fixed: a
    fatal error (1), like a table that stays locked, not a usage error (2)."""


class CheckpointError(BackfillError):
    """The checkpoint file is unreadable, malformed, or from another target or kind of run: the
    user must choose (--restart, another --checkpoint), so it is a usage error."""

    exit_code = 2


class CheckpointWriteError(CheckpointError):
    """The checkpoint cannot be written (folder missing or read-only, disk full)."""

    exit_code = 1


class FetchError(BackfillError):
    """An image could not be downloaded; `retryable` says whether another attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.attempts = attempts


class DecodeError(BackfillError):
    """The bytes are not an image we can decode (not an image, truncated, too many pixels)."""


class ModelError(BackfillError):
    """A model file of the detector is missing, unreadable or not a usable model: the
    installation is broken (or --detector onnx:PATH names a bad file), so nothing can be scored."""
