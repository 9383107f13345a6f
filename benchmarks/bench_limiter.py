"""Limiter cost: uncontended acquire+release (sync, async) and contended throughput.

Each figure is printed next to the bare primitive it replaces (``threading.Semaphore``,
``asyncio.Semaphore``) measured in the same run, so the overhead is read off directly.
The limiter runs with its telemetry on (an SDK ``MeterProvider`` with an in-memory
reader), as in production.

Usage::

    python benchmarks/bench_limiter.py [--n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from redline.limiter import Limiter


def best_of(runs: int, fn) -> float:
    return min(fn() for _ in range(runs))


def sync_uncontended(n: int, cm_factory) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with cm_factory():
            pass
    return (time.perf_counter() - start) / n * 1e6


def async_uncontended(n: int, cm_factory) -> float:
    async def main():
        start = time.perf_counter()
        for _ in range(n):
            async with cm_factory():
                pass
        return (time.perf_counter() - start) / n * 1e6
    return asyncio.run(main())


def threads_contended(cm_factory, threads: int, per_thread: int) -> float:
    def work():
        for _ in range(per_thread):
            with cm_factory():
                pass
    ts = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return threads * per_thread / (time.perf_counter() - start)


def async_contended(make, tasks: int, per_task: int) -> float:
    async def main():
        cm_factory = make()

        async def work():
            for _ in range(per_task):
                async with cm_factory():
                    await asyncio.sleep(0)
        start = time.perf_counter()
        await asyncio.gather(*(work() for _ in range(tasks)))
        return tasks * per_task / (time.perf_counter() - start)
    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="iterations per uncontended run")
    args = parser.parse_args()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    limiter = Limiter("bench", model_cap=4, tool_cap=4, meter_provider=provider)
    tsem, n = threading.Semaphore(4), args.n

    print(f"uncontended acquire+release, best of 3 x {n} (µs per pair)")
    base = best_of(3, lambda: sync_uncontended(n, lambda: tsem))
    ours = best_of(3, lambda: sync_uncontended(n, limiter.slot_sync))
    print(f"  sync : threading.Semaphore {base:6.2f}   Limiter.slot_sync {ours:6.2f}   "
          f"(+{ours - base:.2f})")

    def asem_factory():
        sem = asyncio.Semaphore(4)
        return lambda: sem
    base = best_of(3, lambda: async_uncontended(n, _lazy(asem_factory)))
    ours = best_of(3, lambda: async_uncontended(n, limiter.slot))
    print(f"  async: asyncio.Semaphore   {base:6.2f}   Limiter.slot      {ours:6.2f}   "
          f"(+{ours - base:.2f})")

    print("contended throughput (acquire+release per second)")
    t_limiter = Limiter("bench-c", model_cap=2, meter_provider=provider)
    base = threads_contended(lambda: threading.Semaphore(2), 1, 1)  # warm-up
    sem2 = threading.Semaphore(2)
    base = threads_contended(lambda: sem2, 8, 20_000)
    ours = threads_contended(t_limiter.slot_sync, 8, 20_000)
    print(f"  8 threads, cap 2   : threading.Semaphore {base:10,.0f}/s   Limiter {ours:10,.0f}/s")
    base = async_contended(asem_factory, 64, 2_000)
    ours = async_contended(lambda: Limiter("bench-a", model_cap=8,
                                           meter_provider=provider).slot, 64, 2_000)
    print(f"  64 tasks, cap 8    : asyncio.Semaphore   {base:10,.0f}/s   Limiter {ours:10,.0f}/s")
    off = threads_contended(Limiter("bench-off", model_cap=2, meter_provider=False).slot_sync,
                            8, 20_000)
    a_off = async_contended(lambda: Limiter("bench-aoff", model_cap=8,
                                            meter_provider=False).slot, 64, 2_000)
    print(f"  telemetry off      : threads {off:10,.0f}/s   async {a_off:10,.0f}/s "
          f"(the difference is the queue-wait histogram record per queued admission)")
    s = t_limiter.stats()
    print(f"  (threads run: {s.admitted:,} admitted, work-conserving violation "
          f"{s.work_conserving_violation_seconds * 1e3:.1f} ms = hand-over latency)")


def _lazy(factory):
    """asyncio.Semaphore must be created inside the running loop on older Pythons."""
    holder = {}

    def get():
        if "cm" not in holder:
            holder["cm"] = factory()
        return holder["cm"]()
    return get


if __name__ == "__main__":
    main()
