"""Capture redline's metrics in memory: for tests, yours and ours.

Example:
    >>> from redline._api.testing import MetricsCapture
    >>> with MetricsCapture(instrument=True) as cap:
    ...     client.chat.completions.create(...)
    ...     cap.sum("redline.client.requests")
    1
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from redline._api.cardinality import reset_limits
from redline.instruments import set_default_meter_provider
from redline.semconv import prom_label
from redline.telemetry import latency_views

__all__ = ["MetricsCapture"]


class MetricsCapture:
    """A fresh ``MeterProvider`` with an ``InMemoryMetricReader`` and redline's views.

    Args:
        instrument: also instrument the SDKs into this provider while the block runs.
    """

    def __init__(self, instrument: bool = False) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], views=latency_views())
        self._instrument = instrument

    def __enter__(self) -> MetricsCapture:
        reset_limits()
        set_default_meter_provider(self.provider)
        if self._instrument:
            from redline._api.instrument import instrument

            instrument(meter_provider=self.provider)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._instrument:
            from redline._api.instrument import uninstrument

            uninstrument()
        set_default_meter_provider(None)
        self.provider.shutdown()

    def points(self, name: str, **attrs: Any) -> list[Any]:
        """Data points of metric ``name`` whose attributes include ``attrs``.

        Attribute keys are spelled as Prometheus labels (``error_type="RateLimitError"``
        for ``error.type``); a value of ``None`` means the attribute must be absent.
        """
        want = attrs
        found = []
        data = self.reader.get_metrics_data()
        for rm in (data.resource_metrics if data else ()):
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for dp in metric.data.data_points:
                        got = {prom_label(k): v for k, v in (dp.attributes or {}).items()}
                        if all(got.get(k) == v if v is not None else k not in got
                               for k, v in want.items()):
                            found.append(dp)
        return found

    def sum(self, name: str, **attrs: Any) -> float:
        """Sum of a counter/up-down counter's points matching ``attrs`` (0 when none)."""
        return sum(dp.value for dp in self.points(name, **attrs))

    def count(self, name: str, **attrs: Any) -> int:
        """Number of samples in a histogram's points matching ``attrs``."""
        return sum(dp.count for dp in self.points(name, **attrs))

    def hist_sum(self, name: str, **attrs: Any) -> float:
        """Sum of the samples of a histogram's points matching ``attrs``."""
        return sum(dp.sum for dp in self.points(name, **attrs))

    def hist_min(self, name: str, **attrs: Any) -> float:
        """Smallest sample of a histogram's points matching ``attrs``."""
        return min(dp.min for dp in self.points(name, **attrs))

    def hist_max(self, name: str, **attrs: Any) -> float:
        """Largest sample of a histogram's points matching ``attrs``."""
        return max(dp.max for dp in self.points(name, **attrs))
