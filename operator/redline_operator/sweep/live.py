"""The knee from live traffic: p95 latency vs in-flight concurrency, read from Prometheus.

Production traffic visits many concurrency levels over a day. Over a window this module
samples, at every ``step``, the in-flight gauge (``redline_client_requests_in_flight``,
summed), the p95 of the operation-duration native histogram over ``rate_window`` and the
call rate; groups the samples by concurrency level (rounded to an integer); takes the
median p95 and rate of each level seen at least ``min_samples`` times; and runs the same
knee method as the sweep (:func:`redline_operator.sweep.knee.cross_checked_knee`: Kneedle on p95,
cross-checked against throughput).

Live data is weaker evidence than a sweep: levels the service never reached are missing
and the request mix drifts, so the result reports how many levels and samples it rests on.

Example::

    with PrometheusClient("http://127.0.0.1:9090") as prom:
        est = estimate_live_knee(prom, window_s=3600, sel='gen_ai_request_model="m"')
    print(est.knee, est.levels)
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from redline.semconv import METRICS
from redline_operator.promql import PrometheusClient, PrometheusError, in_flight, quantile, rate
from redline_operator.sweep.knee import cross_checked_knee

__all__ = ["LiveKnee", "bucket_by_concurrency", "estimate_live_knee"]


@dataclass
class LiveKnee:
    """A knee estimated from live data."""

    knee: float | None
    levels: list[int] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    method: str = "p95"
    window_s: float = 0.0
    queries: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def bucket_by_concurrency(rows: Iterable[tuple[float, ...]], *, min_samples: int = 3
                          ) -> tuple[list[int], list[list[float]], list[int]]:
    """Group (concurrency, value, ...) samples by rounded concurrency; median per level.

    Rows with a NaN or infinite value, levels below 1 (idle) and levels seen fewer than
    ``min_samples`` times are dropped.

    Returns:
        (levels ascending, per value column the median per level, samples per level).
    """
    groups: dict[int, list[tuple[float, ...]]] = defaultdict(list)
    width = 0
    for conc, *values in rows:
        width = len(values)
        if any(math.isnan(v) or math.isinf(v) for v in (conc, *values)):
            continue
        level = round(conc)
        if level >= 1:
            groups[level].append(tuple(values))
    levels = sorted(lv for lv, v in groups.items() if len(v) >= min_samples)
    columns = [[statistics.median(row[i] for row in groups[lv]) for lv in levels]
               for i in range(width)]
    return levels, columns, [len(groups[lv]) for lv in levels]


def _series(result: list[dict]) -> dict[float, float]:
    """One range-query series as {timestamp: value}; several series are summed."""
    out: dict[float, float] = defaultdict(float)
    try:
        for series in result:
            for ts, value in series.get("values", []):
                out[float(ts)] += float(value)
    except (TypeError, ValueError):
        raise PrometheusError("query_range answered values that are not numbers: is the "
                              "URL a Prometheus server?") from None
    return dict(out)


def estimate_live_knee(prom: PrometheusClient, *, window_s: float = 3600.0,
                       step_s: float = 15.0, rate_window: str = "1m", sel: str = "",
                       min_samples: int = 3, end: float | None = None) -> LiveKnee:
    """Estimate the knee from the last ``window_s`` seconds of live data.

    Args:
        prom: the Prometheus to query.
        window_s: how far back to look.
        step_s: query_range resolution.
        rate_window: window of the p95's ``rate()`` (at least 4 scrape intervals).
        sel: label selector body restricting both series, e.g. ``job="agent"``.
        min_samples: samples a level needs to count.
        end: end of the window (Unix seconds; default now).

    Raises:
        redline_operator.promql.PrometheusError: Prometheus is unreachable or refused a query.
    """
    end = time.time() if end is None else end
    start = end - window_s
    # The gauge averaged over the same window as the p95, so both describe one interval.
    conc_q = f"avg_over_time({in_flight(sel)}[{rate_window}:{max(1, int(step_s // 3))}s])"
    p95_q = quantile(0.95, METRICS.OPERATION_DURATION, rate_window, sel)
    thr_q = rate(METRICS.OPERATION_DURATION, rate_window, sel)
    conc = _series(prom.query_range(conc_q, start, end, step_s))
    p95 = _series(prom.query_range(p95_q, start, end, step_s))
    thr = _series(prom.query_range(thr_q, start, end, step_s))
    rows = [(conc[t], p95[t], thr[t]) for t in sorted(conc.keys() & p95.keys() & thr.keys())]
    levels, (medians, rates), counts = bucket_by_concurrency(rows, min_samples=min_samples) \
        if rows else ([], ([], []), [])
    knee, method = cross_checked_knee(levels, medians, rates)
    note = method.split(": ", 1)[1] if ": " in method else ""
    if not rows:
        note = ("no samples: neither series has data in the window; check the selector and "
                "that the service is instrumented")
    elif knee is None:
        note = (f"no knee among {len(levels)} concurrency levels: live traffic has not reached "
                "saturation (run `redline sweep` to find it)")
    return LiveKnee(knee=knee, levels=levels, p95=medians, throughput=rates, samples=counts,
                    method=method.split(":", 1)[0], window_s=window_s,
                    queries={"concurrency": conc_q, "p95": p95_q, "throughput": thr_q},
                    note=note)
