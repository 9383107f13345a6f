"""The bounded-concurrency limiter: per-target pools of slots with FIFO queues.

A :class:`Limiter` guards one target (a model endpoint). It has two pools, ``model`` and
``tool``, with separate caps, so slow tools cannot take the slots model calls need. A
request that finds its pool full waits in the pool's FIFO queue; it is refused at once
when the queue is at ``queue_limit`` (:class:`QueueFull`) and shed from the queue when its
deadline passes (:class:`DeadlineExceeded`), so a request nobody waits for any more never
occupies a slot. Each passage records ``queued_at``, ``admitted_at`` and ``released_at``.

Sync (threads) and async (any number of event loops) callers share the same pools. A
freed slot is handed directly to the head of the queue, so a newcomer cannot overtake a
waiter. A handed-over slot counts as *pending* until its waiter actually resumes; the time
during which requests wait while fewer than ``cap`` requests run is the work-conserving
violation (``redline.limiter.work_conserving.violation``), measured here at every state
transition.

Example:
    >>> limiter = Limiter("gpt-4o", model_cap=8, tool_cap=4)
    >>> async def call():
    ...     async with limiter.slot("model", timeout=2.0) as ticket:
    ...         ...  # the model call; ticket.queued_at / ticket.admitted_at are set
    >>> with limiter.slot_sync("tool"):
    ...     pass
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redline.limiter.budget import RetryBudget
from redline.limiter.errors import DeadlineExceeded, QueueFull, Rejected
from redline.semconv import Attr

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from redline.config import Target

__all__ = ["Limiter", "Slot", "PoolStats", "Rejected", "QueueFull", "DeadlineExceeded", "POOLS"]

POOLS = ("model", "tool")
REASONS = ("queue_full", "deadline", "cancelled", "retry_budget")
_now = time.monotonic


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one pool, for tests, debugging and the telemetry callbacks."""

    cap: int
    in_flight: int
    queued: int
    admitted: int
    rejected: dict[str, int] = field(default_factory=dict)
    work_conserving_violation_seconds: float = 0.0


class _Waiter:
    """A queued request: a pre-acquired lock (threads) or a future on its loop (async)."""

    __slots__ = ("ticket", "granted", "lock", "loop", "fut")

    def __init__(self, ticket: Slot, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.ticket, self.granted, self.loop = ticket, False, loop
        if loop is None:
            self.lock = threading.Lock()
            self.lock.acquire()
            self.fut = None
        else:
            self.lock = None
            self.fut = loop.create_future()

    def wake(self) -> bool:
        """Resume the waiter; False when its event loop is gone and it never will."""
        if self.loop is None:
            self.lock.release()
            return True
        if asyncio._get_running_loop() is self.loop:
            _resolve(self.fut)
            return True
        try:
            self.loop.call_soon_threadsafe(_resolve, self.fut)
        except RuntimeError:  # loop closed
            return False
        return True


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class _Pool:
    """Slots, queue and counters of one pool. Every field changes under ``lock``."""

    def __init__(self, limiter: Limiter, name: str, cap: int, queue_limit: int) -> None:
        if cap < 1:
            raise ValueError(f"limiter {limiter.name!r}: {name}_cap must be >= 1, got {cap!r}")
        self.limiter, self.name, self.cap, self.queue_limit = limiter, name, cap, queue_limit
        self.attrs = {Attr.TARGET: limiter.name, Attr.POOL: name}
        self.lock = threading.Lock()
        self.queue: deque[_Waiter] = deque()
        self.held = 0  # slots assigned: running + pending
        self.running = 0  # holders that have resumed and are doing their work
        self.pending = 0  # slots handed to a waiter that has not resumed yet
        self.admitted = 0
        self.rejected = dict.fromkeys(REASONS, 0)
        self.wc_seconds = 0.0
        self.wc_since: float | None = None

    # --- state transitions (lock held) -------------------------------------------------
    def _recheck(self, now: float) -> None:
        violating = (self.queue or self.pending) and self.running < self.cap
        if violating:
            if self.wc_since is None:
                self.wc_since = now
        elif self.wc_since is not None:
            self.wc_seconds += now - self.wc_since
            self.wc_since = None

    def _free_one(self, now: float) -> _Waiter | None:
        """One held slot is given up: hand it to the head of the queue, else free it."""
        waiter = None
        if self.queue and self.held <= self.cap:
            waiter = self.queue.popleft()
            waiter.granted = True
            self.pending += 1
        else:
            self.held -= 1
        if self.queue or self.pending or self.wc_since is not None:
            self._recheck(now)
        return waiter

    def _enqueue(self, ticket: Slot, now: float, loop: Any) -> _Waiter:
        if len(self.queue) >= self.queue_limit:
            self.rejected["queue_full"] += 1
            raise QueueFull(
                f"limiter {self.limiter.name!r} pool {self.name!r}: queue full "
                f"({self.queue_limit} waiting, cap {self.cap}); raise limiter.queue_limit "
                f"or the cap in redline.yaml", target=self.limiter.name, pool=self.name)
        waiter = _Waiter(ticket, loop)
        self.queue.append(waiter)
        self._recheck(now)
        return waiter

    def _shed_expired(self, ticket: Slot) -> DeadlineExceeded:
        self.rejected["deadline"] += 1
        return DeadlineExceeded(
            f"limiter {self.limiter.name!r} pool {self.name!r}: deadline passed while queued "
            f"(cap {self.cap}, {len(self.queue)} waiting)",
            target=self.limiter.name, pool=self.name)

    # --- acquire / release ------------------------------------------------------------
    def admit_or_enqueue(self, ticket: Slot, is_async: bool) -> _Waiter | None:
        """Admit at once (``None``) when nobody waits and a slot is free, else queue.

        Raises:
            DeadlineExceeded: the deadline has already passed.
            QueueFull: the queue is at ``queue_limit``.
        """
        now = ticket.queued_at = _now()
        deadline = ticket.deadline
        with self.lock:
            if not self.queue and self.held < self.cap and (deadline is None or now < deadline):
                self.held += 1
                self.running += 1
                self.admitted += 1
                if self.pending:
                    self._recheck(now)
                ticket.admitted_at = now
                return None
            if deadline is not None and now >= deadline:
                raise self._shed_expired(ticket)
            return self._enqueue(ticket, now, asyncio.get_running_loop() if is_async else None)

    def wait_sync(self, waiter: _Waiter) -> None:
        """Block the thread until the waiter is handed a slot or its deadline passes."""
        deadline = waiter.ticket.deadline
        try:
            if deadline is None:
                waiter.lock.acquire()
            else:
                waiter.lock.acquire(timeout=max(0.0, deadline - _now()))
        except BaseException:
            self._give_up(waiter)
            raise
        self._finish_wait(waiter)

    async def wait_async(self, waiter: _Waiter) -> None:
        """Async twin of :meth:`wait_sync`."""
        deadline, loop = waiter.ticket.deadline, waiter.loop
        timer = None
        if deadline is not None:
            timer = loop.call_at(loop.time() + (deadline - _now()), _resolve, waiter.fut)
        try:
            await waiter.fut
        except BaseException:
            self._give_up(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        self._finish_wait(waiter)

    def _finish_wait(self, waiter: _Waiter) -> None:
        """The waiter woke: take the handed-over slot, or leave the queue past its deadline."""
        ticket = waiter.ticket
        now = _now()
        with self.lock:
            if not waiter.granted:
                self.queue.remove(waiter)
                self._recheck(now)
                raise self._shed_expired(ticket)
            self.pending -= 1
            self.running += 1
            self.admitted += 1
            self._recheck(now)
        ticket.admitted_at = now
        telemetry = self.limiter._telemetry
        if telemetry is not None:
            telemetry.record_wait(self, now - ticket.queued_at)

    def _give_up(self, waiter: _Waiter) -> None:
        """Cancelled (or interrupted) while queued: leave, passing on a slot if handed one."""
        now = _now()
        nxt = None
        with self.lock:
            self.rejected["cancelled"] += 1
            if waiter.granted:
                self.pending -= 1
                nxt = self._free_one(now)
            else:
                self.queue.remove(waiter)
                self._recheck(now)
        self._wake(nxt)

    def release(self, ticket: Slot) -> None:
        now = ticket.released_at = _now()
        with self.lock:
            self.running -= 1
            if not self.queue and not self.pending and self.wc_since is None:
                self.held -= 1  # the fast path: nobody to hand the slot to
                return
            nxt = self._free_one(now)
        if nxt is not None:
            self._wake(nxt)

    def _wake(self, waiter: _Waiter | None) -> None:
        while waiter is not None and not waiter.wake():
            # its event loop closed: the slot goes to the next waiter instead
            with self.lock:
                self.pending -= 1
                waiter = self._free_one(_now())

    def set_cap(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap!r}")
        woken = []
        with self.lock:
            self.cap = cap
            while self.queue and self.held < self.cap:
                waiter = self.queue.popleft()
                waiter.granted = True
                self.held += 1
                self.pending += 1
                woken.append(waiter)
            self._recheck(_now())
        for waiter in woken:
            self._wake(waiter)

    def stats(self) -> PoolStats:
        with self.lock:
            wc = self.wc_seconds + (_now() - self.wc_since if self.wc_since is not None else 0.0)
            return PoolStats(self.cap, self.running, len(self.queue) + self.pending,
                             self.admitted, dict(self.rejected), wc)


class Slot:
    """One request's passage through a pool: a context manager, sync (``with``) or async.

    Attributes:
        pool: the pool name.
        deadline: ``time.monotonic()`` value after which the request is shed while queued.
        queued_at / admitted_at / released_at: ``time.monotonic()`` stamps (``None`` until
            reached; ``admitted_at`` stays ``None`` for a rejected request).
    """

    __slots__ = ("_pool", "pool", "deadline", "queued_at", "admitted_at", "released_at")

    def __init__(self, pool: _Pool, deadline: float | None) -> None:
        self._pool, self.pool, self.deadline = pool, pool.name, deadline
        self.queued_at = self.admitted_at = self.released_at = None

    @property
    def queue_wait(self) -> float | None:
        """Seconds from ``queued_at`` to ``admitted_at`` (``None`` if never admitted)."""
        if self.admitted_at is None:
            return None
        return self.admitted_at - self.queued_at

    def __enter__(self) -> Slot:
        waiter = self._pool.admit_or_enqueue(self, False)
        if waiter is not None:
            self._pool.wait_sync(waiter)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.released_at is None and self.admitted_at is not None:
            self._pool.release(self)

    async def __aenter__(self) -> Slot:
        waiter = self._pool.admit_or_enqueue(self, True)
        if waiter is not None:
            await self._pool.wait_async(waiter)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.released_at is None and self.admitted_at is not None:
            self._pool.release(self)


class Limiter:
    """Bounded concurrency for one target, with separate ``model`` and ``tool`` pools.

    Args:
        name: the target's name (the ``redline.target`` attribute of its metrics).
        model_cap: slots for model calls.
        tool_cap: slots for tool calls.
        queue_limit: requests allowed to wait per pool; more are refused with
            :class:`QueueFull` (0: never queue).
        retry_budget: limits SDK retries for calls through this limiter; ``None``: no limit.
        meter_provider: where the limiter's metrics go (default: the global provider);
            ``False`` for no metrics at all.

    Example:
        >>> limiter = Limiter("local-llm", model_cap=2)
        >>> with limiter.slot_sync() as ticket:
        ...     limiter.stats("model").in_flight
        1
    """

    def __init__(self, name: str = "default", *, model_cap: int = 16, tool_cap: int = 32,
                 queue_limit: int = 1024, retry_budget: RetryBudget | None = None,
                 meter_provider: MeterProvider | None | bool = None) -> None:
        if queue_limit < 0:
            raise ValueError(f"limiter {name!r}: queue_limit must be >= 0, got {queue_limit!r}")
        self.name = name
        self.retry_budget = retry_budget
        self._pools = {"model": _Pool(self, "model", model_cap, queue_limit),
                       "tool": _Pool(self, "tool", tool_cap, queue_limit)}
        self._telemetry = None
        if meter_provider is not False:
            from redline.limiter.telemetry import telemetry_for

            self._telemetry = telemetry_for(meter_provider or None)
            self._telemetry.register(self)

    @classmethod
    def from_target(cls, target: Target, *, meter_provider: MeterProvider | None = None
                    ) -> Limiter:
        """A limiter with the caps and retry budget of a ``redline.yaml`` target."""
        s = target.limiter
        budget = RetryBudget(s.retry_budget_ratio, s.retry_budget_window_seconds)
        return cls(target.name, model_cap=target.model_cap, tool_cap=s.tool_cap,
                   queue_limit=s.queue_limit, retry_budget=budget, meter_provider=meter_provider)

    def _pool(self, pool: str) -> _Pool:
        try:
            return self._pools[pool]
        except KeyError:
            raise ValueError(f"limiter {self.name!r}: unknown pool {pool!r}; "
                             f"use one of {list(self._pools)}") from None

    def slot(self, pool: str = "model", *, deadline: float | None = None,
             timeout: float | None = None) -> Slot:
        """A slot to hold with ``async with`` (``with`` works too: see :meth:`slot_sync`).

        Args:
            pool: ``model`` or ``tool``.
            deadline: absolute ``time.monotonic()`` time after which the request is shed
                from the queue with :class:`DeadlineExceeded`.
            timeout: the same, as seconds from now (the earlier of the two wins).

        Raises:
            QueueFull: on entry, when the queue is at ``queue_limit``.
            DeadlineExceeded: on entry, when the deadline passes before a slot is free.
        """
        p = self._pools.get(pool) or self._pool(pool)
        if timeout is not None:
            at = _now() + timeout
            deadline = at if deadline is None else min(deadline, at)
        return Slot(p, deadline)

    slot_sync = slot
    """Sync twin of :meth:`slot` (the same object; hold it with ``with``)."""

    def set_cap(self, pool: str, cap: int) -> None:
        """Change a pool's cap at run time; raising it admits waiters at once."""
        self._pool(pool).set_cap(cap)

    def cap(self, pool: str = "model") -> int:
        """The pool's current cap."""
        return self._pool(pool).cap

    def stats(self, pool: str = "model") -> PoolStats:
        """A consistent snapshot of a pool's counters."""
        return self._pool(pool).stats()

    @property
    def pools(self) -> tuple[str, ...]:
        return tuple(self._pools)

    def record_request(self) -> None:
        """Count a request toward the retry budget (no-op without one)."""
        if self.retry_budget is not None:
            self.retry_budget.record_request()

    def retry_allowed(self) -> bool:
        """Spend a retry from the budget; a refusal counts as a ``retry_budget`` rejection."""
        if self.retry_budget is None or self.retry_budget.try_retry():
            return True
        pool = self._pools["model"]
        with pool.lock:
            pool.rejected["retry_budget"] += 1
        return False

    def __repr__(self) -> str:
        caps = ", ".join(f"{n}_cap={p.cap}" for n, p in self._pools.items())
        return f"Limiter({self.name!r}, {caps})"
