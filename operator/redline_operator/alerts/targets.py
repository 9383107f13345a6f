"""Live check that every target's ``match`` selects series in a running Prometheus.

A typo in ``targets[].match`` produces rules that are valid and never fire; only the data
can tell. ``unmatched_targets`` asks Prometheus whether each target's selector saw any
``redline_client_requests_total`` or in-flight series in ``lookback``.

Example::

    problems = unmatched_targets(cfg, "http://127.0.0.1:9090")
"""

from __future__ import annotations

from redline.config import Config
from redline.semconv import METRICS
from redline_operator.alerts.queries import target_selector
from redline_operator.promql import PrometheusClient

__all__ = ["unmatched_targets"]


def unmatched_targets(cfg: Config, prometheus_url: str, lookback: str = "1h",
                      source: str = "redline.yaml") -> list[str]:
    """One message per target whose selector matches nothing in ``lookback``.

    Raises:
        redline_operator.promql.PrometheusError: Prometheus is unreachable or refused a query.
    """
    problems = []
    with PrometheusClient(prometheus_url) as prom:
        for i, target in enumerate(cfg.targets):
            sel = target_selector(target)
            expr = " or ".join(
                f"count(last_over_time({m.prom}{sel}[{lookback}]))"
                for m in (METRICS.REQUESTS, METRICS.REQUESTS_IN_FLIGHT))
            if not prom.query(expr):
                problems.append(
                    f"{source}: key targets[{i}].match (target {target.name!r}): selector "
                    f"{sel} matches no {METRICS.REQUESTS.prom} or "
                    f"{METRICS.REQUESTS_IN_FLIGHT.prom} series in Prometheus at "
                    f"{prometheus_url} over the last {lookback}; expected the service.name "
                    f"(job), server.address and model your app reports")
    return problems
