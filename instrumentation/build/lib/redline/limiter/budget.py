"""A retry budget: retries may be at most ``ratio`` × requests over a sliding window.

A fixed per-request retry count (the SDK's ``max_retries``) multiplies load exactly when
the server is overloaded: every 429 turns one request into three. A budget caps retries
as a fraction of recent traffic instead, so a transient blip is retried and a sustained
overload is not amplified (the idea of Finagle's ``RetryBudget`` and Envoy's retry budgets).

Example:
    >>> budget = RetryBudget(ratio=0.1, window_seconds=10.0, min_retries=0)
    >>> for _ in range(20):
    ...     budget.record_request()
    >>> [budget.try_retry() for _ in range(3)]
    [True, True, False]
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RetryBudget"]

_SLICES = 20  # the window slides in steps of window/_SLICES


class RetryBudget:
    """Allows a retry while retries in the window stay within ``ratio`` × requests.

    The window is kept as ``20`` time slices of counts, so memory and cost are constant
    whatever the request rate; the window slides in steps of ``window_seconds / 20``.
    Thread-safe: one lock, held for a few integer operations.

    Args:
        ratio: retries allowed per request over the window (0.1: one retry per ten requests).
        window_seconds: length of the sliding window.
        min_retries: retries allowed per window whatever the traffic, so a quiet service can
            still retry an isolated failure.
        clock: monotonic clock in seconds (tests may pass their own).
    """

    def __init__(self, ratio: float = 0.1, window_seconds: float = 10.0, *,
                 min_retries: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"RetryBudget ratio must be within 0..1, got {ratio!r}")
        if window_seconds <= 0:
            raise ValueError(f"RetryBudget window_seconds must be > 0, got {window_seconds!r}")
        if min_retries < 0:
            raise ValueError(f"RetryBudget min_retries must be >= 0, got {min_retries!r}")
        self.ratio = ratio
        self.window_seconds = window_seconds
        self.min_retries = min_retries
        self._clock = clock
        self._slice = window_seconds / _SLICES
        self._requests = [0] * _SLICES
        self._retries = [0] * _SLICES
        self._epoch = math.floor(clock() / self._slice)  # index of the newest slice
        self._lock = threading.Lock()
        self.denied = 0  # retries refused since creation

    def _advance(self) -> None:
        """Zero the slices that fell out of the window (call with the lock held)."""
        epoch = math.floor(self._clock() / self._slice)
        gap = epoch - self._epoch
        if gap <= 0:
            return
        for step in range(1, min(gap, _SLICES) + 1):
            i = (self._epoch + step) % _SLICES
            self._requests[i] = 0
            self._retries[i] = 0
        self._epoch = epoch

    def record_request(self, n: int = 1) -> None:
        """Count ``n`` requests (first attempts) toward the budget."""
        with self._lock:
            self._advance()
            self._requests[self._epoch % _SLICES] += n

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it.

        Returns:
            True (and the retry is counted) when retries in the window stay within
            ``max(min_retries, ratio × requests)``; False otherwise.
        """
        with self._lock:
            self._advance()
            allowed = max(self.min_retries, self.ratio * sum(self._requests))
            if sum(self._retries) + 1 > allowed:
                self.denied += 1
                return False
            self._retries[self._epoch % _SLICES] += 1
            return True

    def available(self) -> float:
        """Retries the budget would still allow in the current window."""
        with self._lock:
            self._advance()
            allowed = max(self.min_retries, self.ratio * sum(self._requests))
            return max(0.0, allowed - sum(self._retries))

    def __repr__(self) -> str:
        return (f"RetryBudget(ratio={self.ratio}, window_seconds={self.window_seconds}, "
                f"min_retries={self.min_retries})")
