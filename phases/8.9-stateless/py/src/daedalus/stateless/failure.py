"""The handler's failure: a DECODE_REQUEST answered with an errno and a message.

Its own module so that the per-codec stream states (``av1_stream``) and the
handler (``handler``, which re-exports it) share it without importing each other.
"""

from __future__ import annotations


class RequestFailure(Exception):
    """A request answered with *error* (a positive errno) and *message*."""

    def __init__(self, error: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
