"""What the limiter raises when it refuses a request: meant for the app to handle."""

from __future__ import annotations

__all__ = ["Rejected", "QueueFull", "DeadlineExceeded"]


class Rejected(Exception):
    """The limiter refused or shed a request; it never held a slot.

    Attributes:
        target: the limiter's name.
        pool: ``model`` or ``tool``.
        reason: ``queue_full`` or ``deadline``.
    """

    reason = "rejected"

    def __init__(self, message: str, *, target: str, pool: str) -> None:
        super().__init__(message)
        self.target, self.pool = target, pool


class QueueFull(Rejected):
    """The pool's queue already held ``queue_limit`` requests."""

    reason = "queue_full"


class DeadlineExceeded(Rejected, TimeoutError):
    """The request's deadline passed while it waited in the queue (or before it arrived)."""

    reason = "deadline"
