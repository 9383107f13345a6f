"""Pipeline accuracy and freshness through the real OTLP -> Collector -> Prometheus path.

Prints two figures (no pass/fail: numbers for the README):

1. p95 relative error vs the exact p95 for a skewed latency mix (a lognormal body plus a
   slow tail), for redline's exponential histogram (Prometheus native histogram) and, as
   the baseline measured in the same run, the OTel SDK's default explicit buckets.
2. Freshness: time from a request ending (the observation recorded) to it being
   queryable in Prometheus, against the budget export interval + scrape interval + 1 s.

Needs the native stack: ``redline stack build && redline stack up`` (started here if
it is not running, and stopped again at the end).
"""

from __future__ import annotations

import statistics
import time
import uuid

import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

from redline.semconv import LATENCY_MAX_SCALE, LATENCY_MAX_SIZE
from redline_operator.promql import PrometheusClient, selector
from redline_operator.stack import Stack

EXPORT_INTERVAL_MS = 1000
SCRAPE_INTERVAL_S = 0.0  # app metrics are pushed over OTLP: no scrape in the path
N = 20_000


def skewed_mix(rng: np.random.Generator, n: int) -> np.ndarray:
    """85% fast calls around 0.8 s, 15% slow ones around 6 s (long-tailed)."""
    fast = rng.lognormal(mean=np.log(0.8), sigma=0.35, size=int(n * 0.85))
    slow = rng.lognormal(mean=np.log(6.0), sigma=0.5, size=n - fast.size)
    return rng.permutation(np.concatenate([fast, slow]))


def provider(endpoint: str, service: str) -> MeterProvider:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True),
        export_interval_millis=EXPORT_INTERVAL_MS)
    views = [
        View(instrument_name="bench.latency.exponential",
             aggregation=ExponentialBucketHistogramAggregation(
                 max_size=LATENCY_MAX_SIZE, max_scale=LATENCY_MAX_SCALE)),
        View(instrument_name="bench.latency.explicit",
             aggregation=ExplicitBucketHistogramAggregation()),  # the SDK default layout
    ]
    resource = Resource.create({"service.name": service,
                                "service.instance.id": uuid.uuid4().hex})
    return MeterProvider(metric_readers=[reader], views=views, resource=resource)


def wait_value(prom: PrometheusClient, expr: str, want: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while prom.scalar(expr) != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {expr} == {want}")
        time.sleep(0.2)


def accuracy(stack: Stack, prom: PrometheusClient) -> None:
    service = f"bench-acc-{uuid.uuid4().hex[:6]}"
    mp = provider(stack.otlp_grpc_endpoint, service)
    meter = mp.get_meter("bench")
    exp_h = meter.create_histogram("bench.latency.exponential", unit="s")
    lin_h = meter.create_histogram("bench.latency.explicit", unit="s")
    values = skewed_mix(np.random.default_rng(42), N)
    for v in values:
        exp_h.record(float(v))
        lin_h.record(float(v))
    mp.shutdown()
    sel = selector(job=service)
    wait_value(prom, f"sum(histogram_count(bench_latency_exponential_seconds{{{sel}}}))", N)
    wait_value(prom, f"sum(bench_latency_explicit_seconds_count{{{sel}}})", N)
    print(f"p95 accuracy, skewed mix of {N} latencies (85% ~0.8 s, 15% ~6 s):")
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(values, q))
        native = prom.scalar(
            f"histogram_quantile({q}, sum(bench_latency_exponential_seconds{{{sel}}}))")
        buckets = f"bench_latency_explicit_seconds_bucket{{{sel}}}"
        classic = prom.scalar(f"histogram_quantile({q}, sum by (le) ({buckets}))")
        print(f"  p{int(q * 100):<3} exact {exact:7.3f} s | native (exponential) {native:7.3f} s "
              f"err {abs(native - exact) / exact:6.2%} | default explicit buckets "
              f"{classic:7.3f} s err {abs(classic - exact) / exact:6.2%}")


def freshness(stack: Stack, prom: PrometheusClient, trials: int = 10) -> None:
    service = f"bench-fresh-{uuid.uuid4().hex[:6]}"
    mp = provider(stack.otlp_grpc_endpoint, service)
    counter = mp.get_meter("bench").create_counter("bench.requests")
    sel = selector(job=service)
    delays = []
    for i in range(1, trials + 1):
        # land at a random phase of the export cycle, as a real request would
        time.sleep(np.random.default_rng(i).uniform(0, EXPORT_INTERVAL_MS / 1000))
        counter.add(1)
        t_end = time.monotonic()
        while prom.scalar(f"sum(bench_requests_total{{{sel}}})") != i:
            time.sleep(0.02)
        delays.append(time.monotonic() - t_end)
    mp.shutdown()
    budget = EXPORT_INTERVAL_MS / 1000 + SCRAPE_INTERVAL_S + 1.0
    print(f"freshness over {trials} requests: median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s (budget: export {EXPORT_INTERVAL_MS / 1000:.1f} s + "
          f"scrape {SCRAPE_INTERVAL_S:.1f} s + 1 s = {budget:.1f} s)")


def main() -> None:
    stack = Stack()
    started = not stack.is_up()
    if started:
        stack.up()
    try:
        with PrometheusClient(stack.prometheus_url) as prom:
            accuracy(stack, prom)
            freshness(stack, prom)
    finally:
        if started:
            stack.down()


if __name__ == "__main__":
    main()
