"""The limiter's metrics, read from its counters when the SDK collects.

Recording an OpenTelemetry measurement costs microseconds, more than a whole uncontended
acquire and release, so the limiter only keeps integers and this module observes them in
callbacks at collection time: queue depth, in-flight, cap, admissions, rejections by reason
and work-conserving violation seconds. The one synchronous instrument is the queue-wait
histogram, recorded only for requests that actually queued (an immediate admission has no
wait to record; ``redline.limiter.admissions`` counts it).

Metric names, units and attributes come from :mod:`redline.semconv` (``LIMITER_*``); they
are created on their own meter, ``redline.limiter``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from redline.semconv import METRICS, Attr

if TYPE_CHECKING:
    from redline.limiter.core import Limiter, _Pool

__all__ = ["LimiterTelemetry", "telemetry_for", "METER_NAME"]

METER_NAME = "redline.limiter"

_lock = threading.Lock()
_by_provider: dict[int, tuple[MeterProvider, LimiterTelemetry]] = {}


class LimiterTelemetry:
    """The limiter instruments of one ``MeterProvider``, observing every registered limiter.

    Args:
        meter_provider: the provider whose ``redline.limiter`` meter creates the instruments.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(METER_NAME)
        self._limiters: weakref.WeakSet[Limiter] = weakref.WeakSet()

        def spec_kw(spec):
            return {"name": spec.name, "unit": spec.unit, "description": spec.description}

        meter.create_observable_up_down_counter(
            callbacks=[self._observe(lambda p: len(p.queue) + p.pending)],
            **spec_kw(METRICS.LIMITER_QUEUE_DEPTH))
        meter.create_observable_up_down_counter(
            callbacks=[self._observe(lambda p: p.running)], **spec_kw(METRICS.LIMITER_IN_FLIGHT))
        meter.create_observable_gauge(
            callbacks=[self._observe(lambda p: p.cap)], **spec_kw(METRICS.LIMITER_CAP))
        meter.create_observable_counter(
            callbacks=[self._observe(lambda p: p.admitted)], **spec_kw(METRICS.LIMITER_ADMISSIONS))
        meter.create_observable_counter(
            callbacks=[self._observe_rejections], **spec_kw(METRICS.LIMITER_REJECTIONS))
        meter.create_observable_counter(
            callbacks=[self._observe(lambda p: p.stats().work_conserving_violation_seconds)],
            **spec_kw(METRICS.LIMITER_WORK_CONSERVING_GAP))
        self._wait = meter.create_histogram(**spec_kw(METRICS.LIMITER_QUEUE_WAIT))

    def register(self, limiter: Limiter) -> None:
        """Observe ``limiter`` until it is garbage-collected."""
        self._limiters.add(limiter)

    def _pools(self) -> Iterator[tuple[_Pool, dict[str, str]]]:
        for limiter in list(self._limiters):
            for pool in limiter._pools.values():
                yield pool, pool.attrs

    def _observe(self, read):
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(pool), attrs) for pool, attrs in self._pools()]
        return callback

    def _observe_rejections(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for pool, attrs in self._pools():
            for reason, count in list(pool.rejected.items()):
                if count:
                    out.append(Observation(count, {**attrs, Attr.REJECT_REASON: reason}))
        return out

    def record_wait(self, pool: _Pool, seconds: float) -> None:
        """Record the queue wait of a request that queued (never raises)."""
        with contextlib.suppress(Exception):  # the SDK does not raise here; be sure anyway
            self._wait.record(max(0.0, seconds), pool.attrs)


def telemetry_for(meter_provider: MeterProvider | None = None) -> LimiterTelemetry:
    """The :class:`LimiterTelemetry` of ``meter_provider`` (default: the global provider),
    created once per provider."""
    provider = meter_provider or metrics.get_meter_provider()
    key = id(provider)
    with _lock:
        found = _by_provider.get(key)
        if found is None or found[0] is not provider:
            found = (provider, LimiterTelemetry(provider))
            _by_provider[key] = found
        return found[1]
