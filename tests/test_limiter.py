"""The limiter (:mod:`redline.limiter.core`) under real asyncio and real threads."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from redline.limiter import DeadlineExceeded, Limiter, QueueFull, RetryBudget
from redline.limiter.telemetry import METER_NAME
from redline.semconv import METRICS, Attr


def quiet(name: str = "t", **kw) -> Limiter:
    return Limiter(name, meter_provider=False, **kw)


async def until(cond, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


def until_sync(cond, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.001)


class Peak:
    """Counts concurrent holders and remembers the most seen at once (thread-safe)."""

    def __init__(self) -> None:
        self.now = self.max = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def __exit__(self, *exc):
        with self._lock:
            self.now -= 1


def assert_idle(limiter: Limiter) -> None:
    for pool in limiter.pools:
        s = limiter.stats(pool)
        assert (s.in_flight, s.queued) == (0, 0), (pool, s)


# --- the cap ----------------------------------------------------------------------------

async def test_async_in_flight_never_exceeds_cap():
    limiter, peak = quiet(model_cap=5), Peak()

    async def call():
        async with limiter.slot():
            with peak:
                assert limiter.stats().in_flight <= 5
                await asyncio.sleep(random.uniform(0, 0.003))

    await asyncio.gather(*(call() for _ in range(200)))
    assert peak.max == 5  # reached, never passed
    assert limiter.stats().admitted == 200
    assert_idle(limiter)


def test_threads_in_flight_never_exceeds_cap():
    limiter, peak = quiet(model_cap=3), Peak()

    def worker():
        for _ in range(25):
            with limiter.slot_sync(), peak:
                time.sleep(random.uniform(0, 0.0005))

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak.max == 3
    assert limiter.stats().admitted == 300
    assert_idle(limiter)


def test_threads_and_two_event_loops_share_one_cap():
    limiter, peak = quiet(model_cap=2), Peak()

    async def coro_worker():
        for _ in range(30):
            async with limiter.slot():
                with peak:
                    await asyncio.sleep(0.0002)

    async def main():
        await asyncio.wait_for(asyncio.gather(*(coro_worker() for _ in range(4))), 20)

    def loop_thread():
        asyncio.run(main())

    def sync_worker():
        for _ in range(30):
            with limiter.slot_sync(), peak:
                time.sleep(0.0002)

    threads = [threading.Thread(target=loop_thread) for _ in range(2)]
    threads += [threading.Thread(target=sync_worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert peak.max == 2
    assert limiter.stats().admitted == 2 * 4 * 30 + 3 * 30
    assert_idle(limiter)


# --- FIFO ---------------------------------------------------------------------------------

async def test_fifo_within_a_pool_async():
    limiter, order = quiet(model_cap=1), []
    holder = limiter.slot()
    await holder.__aenter__()

    async def call(i):
        async with limiter.slot():
            order.append(i)
            await asyncio.sleep(0)

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(call(i)))
        await until(lambda: limiter.stats().queued == len(tasks))
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
    assert order == list(range(10))


def test_fifo_within_a_pool_threads_and_no_barging():
    limiter, order = quiet(model_cap=1), []
    holder = limiter.slot_sync()
    holder.__enter__()

    def call(i):
        with limiter.slot_sync():
            order.append(i)

    threads = []
    for i in range(8):
        threads.append(threading.Thread(target=call, args=(i,)))
        threads[-1].start()
        until_sync(lambda: limiter.stats().queued == len(threads))
    holder.__exit__(None, None, None)
    # a newcomer arriving while the queue drains must queue behind the waiters
    call("late")
    for t in threads:
        t.join()
    assert order == list(range(8)) + ["late"]


# --- deadlines, queue limit, pools ------------------------------------------------------

async def test_deadline_sheds_a_queued_request_async():
    limiter = quiet(model_cap=1)
    async with limiter.slot():
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded) as err:
            async with limiter.slot(timeout=0.05):
                pytest.fail("a shed request must not run")
        assert 0.04 <= time.monotonic() - t0 < 1.0
        assert err.value.reason == "deadline" and err.value.pool == "model"
        assert isinstance(err.value, TimeoutError)
        assert limiter.stats().queued == 0
    s = limiter.stats()
    assert (s.admitted, s.rejected["deadline"]) == (1, 1)
    assert_idle(limiter)


def test_deadline_sheds_a_queued_request_threads():
    limiter = quiet(model_cap=1)
    with limiter.slot_sync(), pytest.raises(DeadlineExceeded):
        with limiter.slot_sync(deadline=time.monotonic() + 0.05):
            pytest.fail("a shed request must not run")
    assert limiter.stats().rejected["deadline"] == 1
    assert_idle(limiter)


async def test_a_request_already_past_its_deadline_never_takes_a_free_slot():
    limiter = quiet(model_cap=4)
    with pytest.raises(DeadlineExceeded):
        async with limiter.slot(deadline=time.monotonic() - 1):
            pass
    with pytest.raises(DeadlineExceeded), limiter.slot_sync(timeout=0):
        pass
    assert limiter.stats().admitted == 0 and limiter.stats().rejected["deadline"] == 2


async def test_queue_limit_rejects_at_once():
    limiter = quiet(model_cap=1, queue_limit=2)
    async with limiter.slot():
        waiters = [asyncio.create_task(limiter.slot().__aenter__()) for _ in range(2)]
        await until(lambda: limiter.stats().queued == 2)
        t0 = time.monotonic()
        with pytest.raises(QueueFull) as err:
            async with limiter.slot():
                pass
        assert time.monotonic() - t0 < 0.05
        assert "queue full" in str(err.value)
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    s = limiter.stats()
    assert (s.rejected["queue_full"], s.rejected["cancelled"]) == (1, 2)
    assert_idle(limiter)


async def test_tool_pool_full_does_not_block_model_calls():
    limiter = quiet(model_cap=2, tool_cap=1)
    release = asyncio.Event()

    async def slow_tool():
        async with limiter.slot("tool"):
            await release.wait()

    tools = [asyncio.create_task(slow_tool()) for _ in range(5)]
    await until(lambda: limiter.stats("tool").queued == 4)
    t0 = time.monotonic()
    async with limiter.slot("model", timeout=0.5) as ticket:
        assert ticket.queue_wait < 0.01
    assert time.monotonic() - t0 < 0.05
    release.set()
    await asyncio.gather(*tools)
    assert limiter.stats("tool").admitted == 5 and limiter.stats("model").admitted == 1
    assert_idle(limiter)


def test_unknown_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown pool 'gpu'.*'model', 'tool'"):
        quiet().slot("gpu")


# --- cancellation and leaks -------------------------------------------------------------

async def test_cancelled_waiters_leave_the_queue_and_leak_nothing():
    limiter = quiet(model_cap=1)
    ran = []
    holder = limiter.slot()
    await holder.__aenter__()

    async def call(i):
        async with limiter.slot():
            ran.append(i)

    tasks = [asyncio.create_task(call(i)) for i in range(6)]
    await until(lambda: limiter.stats().queued == 6)
    for i in (0, 2, 4):
        tasks[i].cancel()
    await until(lambda: limiter.stats().queued == 3)
    await holder.__aexit__(None, None, None)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert ran == [1, 3, 5]
    assert limiter.stats().rejected["cancelled"] == 3
    assert_idle(limiter)


async def test_cancelled_after_the_slot_was_handed_over_passes_it_on():
    limiter = quiet(model_cap=1)
    holder = limiter.slot()
    await holder.__aenter__()
    first = asyncio.create_task(limiter.slot().__aenter__())
    second_ran = asyncio.Event()

    async def second():
        async with limiter.slot():
            second_ran.set()

    t2 = asyncio.create_task(second())
    await until(lambda: limiter.stats().queued == 2)
    await holder.__aexit__(None, None, None)  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it ever resumes
    await asyncio.wait_for(second_ran.wait(), 1)
    await asyncio.gather(first, t2, return_exceptions=True)
    assert first.cancelled()
    assert_idle(limiter)


async def test_an_exception_in_the_body_releases_the_slot():
    limiter = quiet(model_cap=1)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            async with limiter.slot():
                raise RuntimeError("app error")
    with pytest.raises(RuntimeError), limiter.slot_sync():
        raise RuntimeError("app error")
    assert_idle(limiter)
    assert limiter.stats().admitted == 4


def test_timestamps_are_ordered():
    limiter = quiet(model_cap=1)
    with limiter.slot_sync() as ticket:
        assert ticket.queued_at <= ticket.admitted_at and ticket.released_at is None
    assert ticket.admitted_at <= ticket.released_at


async def test_raising_the_cap_admits_waiters_at_once():
    limiter = quiet(model_cap=1)
    async with limiter.slot():
        tasks = [asyncio.create_task(limiter.slot().__aenter__()) for _ in range(3)]
        await until(lambda: limiter.stats().queued == 3)
        limiter.set_cap("model", 4)
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
        assert limiter.stats().in_flight == 4
    for t in tasks:
        await t.result().__aexit__(None, None, None)
    assert_idle(limiter)


# --- the work-conserving signal -----------------------------------------------------------

def test_work_conserving_counter_stays_zero_when_full_or_empty():
    limiter = quiet(model_cap=2)
    with limiter.slot_sync():  # queue empty, in-flight < cap: not a violation
        time.sleep(0.05)
    stop = threading.Event()

    def hog():
        while not stop.is_set():
            with limiter.slot_sync():
                time.sleep(0.005)

    threads = [threading.Thread(target=hog) for _ in range(5)]  # queue > 0, at cap
    for t in threads:
        t.start()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    # only the hand-over instants (a woken thread getting scheduled) may count
    assert limiter.stats().work_conserving_violation_seconds < 0.05
    assert_idle(limiter)


def test_work_conserving_counter_grows_while_a_freed_slot_waits_on_a_busy_loop():
    limiter = quiet(model_cap=1)
    holder = limiter.slot_sync()
    holder.__enter__()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        fut = asyncio.run_coroutine_threadsafe(limiter.slot().__aenter__(), loop)
        until_sync(lambda: limiter.stats().queued == 1)
        blocking = threading.Event()

        def block_loop():
            blocking.set()
            time.sleep(0.3)  # the loop cannot resume the waiter meanwhile

        loop.call_soon_threadsafe(block_loop)
        blocking.wait()
        assert limiter.stats().work_conserving_violation_seconds == 0.0
        holder.__exit__(None, None, None)  # slot handed over; in-flight 0 < cap, queue 1
        during = limiter.stats()
        assert (during.in_flight, during.queued) == (0, 1)
        ticket = fut.result(2)
        after = limiter.stats().work_conserving_violation_seconds
        assert 0.2 <= after < 0.6
        asyncio.run_coroutine_threadsafe(ticket.__aexit__(None, None, None), loop).result(2)
        time.sleep(0.05)  # idle now: the counter must not move
        assert limiter.stats().work_conserving_violation_seconds == after
    finally:
        loop.call_soon_threadsafe(loop.stop)
    assert_idle(limiter)


# --- metrics ------------------------------------------------------------------------------

def collect(reader) -> dict[tuple, float]:
    """(metric, pool, reason) -> value (histograms: count) of the limiter's scope."""
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != METER_NAME:
                continue
            for m in sm.metrics:
                for p in m.data.data_points:
                    assert p.attributes[Attr.TARGET] == "m"
                    key = (m.name, p.attributes[Attr.POOL], p.attributes.get(Attr.REJECT_REASON))
                    out[key] = getattr(p, "value", None) if hasattr(p, "value") else p.count
    return out


async def test_metrics_equal_what_happened():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    limiter = Limiter("m", model_cap=2, tool_cap=1, queue_limit=3,
                      retry_budget=RetryBudget(0.0, 10, min_retries=1), meter_provider=provider)
    gate = asyncio.Event()

    async def call(**kw):
        async with limiter.slot(**kw):
            await gate.wait()

    running = [asyncio.create_task(call()) for _ in range(2)]  # 2 immediate admissions
    queued = [asyncio.create_task(call()) for _ in range(3)]  # 3 queue, later admitted
    await until(lambda: limiter.stats().queued == 3)
    with pytest.raises(QueueFull):
        await call()
    mid = collect(reader)
    assert mid[(METRICS.LIMITER_QUEUE_DEPTH.name, "model", None)] == 3
    assert mid[(METRICS.LIMITER_IN_FLIGHT.name, "model", None)] == 2
    assert mid[(METRICS.LIMITER_CAP.name, "model", None)] == 2
    assert mid[(METRICS.LIMITER_CAP.name, "tool", None)] == 1
    gate.set()
    await asyncio.gather(*running, *queued)
    gate.clear()
    async with limiter.slot():  # now: one deadline shed and one cancellation
        async with limiter.slot():
            with pytest.raises(DeadlineExceeded):
                await call(timeout=0.02)
            doomed = asyncio.create_task(call())
            await until(lambda: limiter.stats().queued == 1)
            doomed.cancel()
            await asyncio.gather(doomed, return_exceptions=True)
    assert limiter.retry_allowed() and not limiter.retry_allowed()  # min_retries=1, ratio 0
    got = collect(reader)
    assert got[(METRICS.LIMITER_ADMISSIONS.name, "model", None)] == 7
    assert got[(METRICS.LIMITER_QUEUE_WAIT.name, "model", None)] == 3  # only those that queued
    assert got[(METRICS.LIMITER_REJECTIONS.name, "model", "queue_full")] == 1
    assert got[(METRICS.LIMITER_REJECTIONS.name, "model", "deadline")] == 1
    assert got[(METRICS.LIMITER_REJECTIONS.name, "model", "cancelled")] == 1
    assert got[(METRICS.LIMITER_REJECTIONS.name, "model", "retry_budget")] == 1
    assert got[(METRICS.LIMITER_QUEUE_DEPTH.name, "model", None)] == 0
    assert got[(METRICS.LIMITER_IN_FLIGHT.name, "model", None)] == 0
    wc = got[(METRICS.LIMITER_WORK_CONSERVING_GAP.name, "model", None)]
    assert wc == pytest.approx(limiter.stats().work_conserving_violation_seconds, abs=0.01)
    provider.shutdown()
