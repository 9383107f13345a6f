"""Shared by the framework tests: a fast sim, a barrier tools wait on, and gauge checks."""

from __future__ import annotations

import asyncio
import time

from redline._api.testing import MetricsCapture
from redline.semconv import METRICS
from redline_operator.sim import SimConfig

FAST = SimConfig(slots=64, prefill_base_s=0.002, prefill_per_token_s=0.0, decode_base_s=0.001)
GAUGES = (METRICS.SESSIONS_IN_FLIGHT, METRICS.TOOL_CALLS_IN_FLIGHT,
          METRICS.REQUESTS_IN_FLIGHT, METRICS.AGENT_ACTIVITY_IN_FLIGHT)


class Gate:
    """Tools call :meth:`arrive`; the test waits until ``n`` are inside, reads, releases."""

    def __init__(self) -> None:
        self.inside = 0
        self.release = asyncio.Event()

    async def arrive(self) -> None:
        self.inside += 1
        try:
            await self.release.wait()
        finally:
            self.inside -= 1

    async def until(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.inside < n:
            assert time.monotonic() < deadline, f"only {self.inside} of {n} tools arrived"
            await asyncio.sleep(0.01)


def assert_all_zero(cap: MetricsCapture) -> None:
    """Every point of every in-flight gauge is exactly 0 (not just their sum)."""
    for spec in GAUGES:
        for dp in cap.points(spec.name):
            assert dp.value == 0, (spec.name, dict(dp.attributes), dp.value)


def in_flight(cap: MetricsCapture, spec, **attrs) -> float:
    return cap.sum(spec.name, **attrs)


def assert_bounded(cap: MetricsCapture, allowed: dict[str, set]) -> None:
    """Only the expected attribute keys and values appear on session/tool metrics."""
    for spec in (METRICS.INVOKE_AGENT_DURATION, METRICS.EXECUTE_TOOL_DURATION,
                 METRICS.SESSIONS_IN_FLIGHT, METRICS.TOOL_CALLS_IN_FLIGHT):
        for dp in cap.points(spec.name):
            for key, value in dp.attributes.items():
                assert key in set(spec.attributes), (spec.name, key)
                if key in allowed:
                    assert value in allowed[key], (spec.name, key, value)
