"""Exceptions a handler raises to choose what happens to a work item."""

from __future__ import annotations


class PermanentError(Exception):
    """The items can never succeed (bad input): fail the job now, no retry."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientError(Exception):
    """Worth retrying (OOM, busy device): nak with backoff, or fail on the last attempt.

    Any exception other than PermanentError is treated the same way.
    `retry_after` (seconds) overrides the backoff for this retry.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
