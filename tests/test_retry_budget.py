"""The retry budget: unit behaviour, and a real retry storm cut short.

The storm runs the real ``openai`` SDK, instrumented by ``redline.instrument()``, against
the real simulator (``redline_operator.sim``) scripted to answer every request with a 429. Without
a budget the SDK retries each one ``max_retries`` times; with the budget, retries stay
within ``ratio`` × requests.
"""

from __future__ import annotations

import asyncio
import threading
import time

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import redline
from redline.limiter import Limiter, RetryBudget, wiring
from redline_operator.sim import SimConfig, run_in_thread


class Clock:
    """A hand-driven monotonic clock for the window arithmetic."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- unit ---------------------------------------------------------------------------------

def test_retries_limited_to_ratio_of_requests():
    budget = RetryBudget(0.2, 10, min_retries=0, clock=Clock())
    budget.record_request(50)
    granted = sum(budget.try_retry() for _ in range(100))
    assert granted == 10 and budget.denied == 90
    budget.record_request(5)  # one more retry's worth
    assert budget.try_retry() and not budget.try_retry()


def test_min_retries_floor_on_a_quiet_service():
    budget = RetryBudget(0.1, 10, min_retries=2, clock=Clock())
    budget.record_request()
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]


def test_the_window_slides():
    clock = Clock()
    budget = RetryBudget(0.5, 10, min_retries=0, clock=clock)
    budget.record_request(4)
    assert budget.try_retry() and budget.try_retry() and not budget.try_retry()
    clock.t += 5  # half a window later: old requests and retries still count
    assert not budget.try_retry()
    clock.t += 5.5  # the first slice has left the window
    assert budget.available() == 0.0 and not budget.try_retry()
    budget.record_request(2)
    assert budget.try_retry() and not budget.try_retry()
    clock.t += 1000  # a long idle gap clears everything
    assert budget.available() == 0.0


def test_thread_safe_under_contention():
    budget = RetryBudget(0.1, 60, min_retries=0)
    budget.record_request(1000)
    granted = []
    lock = threading.Lock()

    def worker():
        mine = sum(budget.try_retry() for _ in range(200))
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100 and budget.denied == 1600 - 100


@pytest.mark.parametrize("kw, msg", [({"ratio": 2}, "ratio"), ({"window_seconds": 0}, "window"),
                                     ({"min_retries": -1}, "min_retries")])
def test_bad_settings_are_clear_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        RetryBudget(**kw)


def test_from_target_uses_the_yaml_settings():
    from redline.config import LimiterSettings, Target

    target = Target(name="t", saturation_concurrency=20,
                    limiter=LimiterSettings(enabled=True, retry_budget_ratio=0.25,
                                            retry_budget_window_seconds=30, tool_cap=3))
    limiter = Limiter.from_target(target, meter_provider=False)
    assert limiter.retry_budget.ratio == 0.25 and limiter.retry_budget.window_seconds == 30
    assert limiter.cap("model") == 14 and limiter.cap("tool") == 3  # warn level: 0.7 x 20


# --- a real retry storm -----------------------------------------------------------------

STORM_SECONDS = 0.8
WORKERS = 4
MAX_RETRIES = 2


@pytest.fixture(scope="module")
def sim():
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    redline.instrument(meter_provider=provider)
    try:
        with run_in_thread(SimConfig(), port=0) as server:
            server.provider = provider
            yield server
    finally:
        redline.uninstrument()
        wiring.reset()


def storm_429(sim) -> None:
    sim.reset()
    sim.set_faults([{"kind": "status", "status": 429, "retry_after": 0.01, "count": 1_000_000}])


def run_sync(sim) -> tuple[int, float]:
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=MAX_RETRIES)
    counts = []
    end = time.monotonic() + STORM_SECONDS

    def worker():
        n = 0
        while time.monotonic() < end:
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(
                    model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
            n += 1
        counts.append(n)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.monotonic() - t0


def run_async(sim) -> tuple[int, float]:
    async def main():
        client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x",
                                    max_retries=MAX_RETRIES)
        end = time.monotonic() + STORM_SECONDS

        async def worker():
            n = 0
            while time.monotonic() < end:
                with pytest.raises(openai.RateLimitError):
                    await client.chat.completions.create(
                        model="sim-model", messages=[{"role": "user", "content": "hi"}],
                        max_tokens=3)
                n += 1
            return n

        t0 = time.monotonic()
        n = sum(await asyncio.gather(*(worker() for _ in range(WORKERS))))
        await client.close()
        return n, time.monotonic() - t0

    return asyncio.run(main())


@pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])
def test_budget_stops_a_retry_storm_against_the_real_sim(sim, run, capsys):
    figures = {}
    for label, budget in (("no budget", None),
                          ("budget 10%", RetryBudget(0.1, 10, min_retries=1))):
        limiter = Limiter("sim", model_cap=16, retry_budget=budget,
                          meter_provider=sim.provider)
        wiring.configure(limiters=limiter)
        storm_429(sim)
        requests, seconds = run(sim)
        attempts = len(sim.log())
        retries = attempts - requests
        figures[label] = (requests, retries, retries / seconds)
        if budget is None:
            assert retries == MAX_RETRIES * requests  # the storm: every 429 retried
        else:
            assert retries <= 0.1 * requests + 1
            assert limiter.stats().rejected["retry_budget"] == budget.denied > 0
    with capsys.disabled():
        for label, (req, ret, rate) in figures.items():
            print(f"\n[{run.__name__}] {label}: {req} requests, {ret} retries, "
                  f"{rate:.1f} retries/s, {ret / req:.2f} retries/request", end="")
    assert figures["budget 10%"][2] < 0.5 * figures["no budget"][2]
