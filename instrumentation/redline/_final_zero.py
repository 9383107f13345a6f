"""A clean exit reports nothing in flight: the last export of a process zeroes its gauges.

A process that exits with calls still open (SIGTERM mid-request, a worker recycled, threads
abandoned at interpreter exit) would otherwise leave its last in-flight value as the newest
sample of its series, and every reader would count it until the series ages out. The SDK
exports once more when the ``MeterProvider`` shuts down; :class:`FinalZeroExporter` makes
that last export report every up-down counter of the catalogue (requests, sessions and tool
calls in flight, the limiter's slots and queue) as 0. Nothing changes on the hot path: the
instruments are untouched, only the data of that one export is rewritten.

A process killed with SIGKILL exports nothing more; for it, readers count only series
refreshed within a few export intervals (``redline.yaml``'s ``fresh_window``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData, Sum

from redline.semconv import METRICS, Kind

__all__ = ["FinalZeroExporter", "IN_FLIGHT_NAMES"]

_log = logging.getLogger(__name__)

#: OTel names of the gauges that count things in progress: all 0 once a process is gone.
IN_FLIGHT_NAMES = frozenset(s.name for s in METRICS.all() if s.kind is Kind.UPDOWN)


def _zeroed(data: MetricsData) -> MetricsData:
    def metric(m: Any) -> Any:
        if m.name not in IN_FLIGHT_NAMES or not isinstance(m.data, Sum):
            return m
        points = [dataclasses.replace(p, value=0) for p in m.data.data_points]
        return dataclasses.replace(m, data=dataclasses.replace(m.data, data_points=points))

    return dataclasses.replace(data, resource_metrics=[
        dataclasses.replace(rm, scope_metrics=[
            dataclasses.replace(sm, metrics=[metric(m) for m in sm.metrics])
            for sm in rm.scope_metrics])
        for rm in data.resource_metrics])


class FinalZeroExporter(MetricExporter):
    """Delegates to ``inner``; once :meth:`closing` is called, exports in-flight as 0.

    Args:
        inner: the real (OTLP) exporter; its preferred temporality and aggregation apply.
    """

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self._closing = False

    def closing(self) -> None:
        """The process is shutting down: the next (last) export reports 0 in flight."""
        self._closing = True

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        if self._closing:
            try:
                metrics_data = _zeroed(metrics_data)
            except Exception:  # never lose the last export over the rewrite
                _log.warning("redline: could not zero in-flight gauges at exit", exc_info=True)
        return self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
