"""Client-side bounded concurrency: per-target slots, FIFO queues, deadlines, retry budgets.

* :class:`Limiter` — ``model`` and ``tool`` pools with separate caps (:mod:`.core`).
* :class:`RetryBudget` — retries limited to a ratio of requests (:mod:`.budget`).
* :class:`LimiterRegistry` — limiters per ``redline.yaml`` target (:mod:`.registry`).
* :mod:`.wiring` — what the SDK instrumentation calls; :func:`configure` sets it up.

Example:
    >>> import redline.limiter as rl
    >>> rl.configure(config="redline.yaml")  # doctest: +SKIP
"""

from redline.limiter.budget import RetryBudget
from redline.limiter.core import (
    POOLS,
    DeadlineExceeded,
    Limiter,
    PoolStats,
    QueueFull,
    Rejected,
    Slot,
)
from redline.limiter.registry import LimiterRegistry
from redline.limiter.wiring import call_deadline, configure, reset

__all__ = [
    "Limiter",
    "RetryBudget",
    "LimiterRegistry",
    "Slot",
    "PoolStats",
    "Rejected",
    "QueueFull",
    "DeadlineExceeded",
    "POOLS",
    "configure",
    "reset",
    "call_deadline",
]
