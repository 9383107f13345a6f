"""Prometheus must agree with the client: OTLP -> real Collector -> real Prometheus.

The app runs as a separate process, like a user's; the test compares Prometheus'
answers with what that process measured itself.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from redline.semconv import METRICS
from redline_operator import promql
from redline_operator.sim import SimConfig, run_in_thread

pytestmark = [pytest.mark.stack, pytest.mark.slow]

WORKLOAD = Path(__file__).parent / "workloads" / "fixed_concurrency.py"
CONCURRENCY = 12
SLOTS = 8


def _run_workload(stack, url: str, service: str, out: Path, seconds: float) -> list[dict]:
    env = dict(os.environ,
               OTEL_SERVICE_NAME=service,
               OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc_endpoint,
               OTEL_METRIC_EXPORT_INTERVAL="1000")
    subprocess.run([sys.executable, str(WORKLOAD), url, str(CONCURRENCY), str(seconds),
                    str(out)], env=env, check=True, timeout=seconds + 60)
    return json.loads(out.read_text())


def _wait_for(prom, expr: str, expected: float, timeout: float = 20.0) -> float | None:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = prom.scalar(expr)
        if value == expected:
            return value
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory):
    service = f"e2e-{uuid.uuid4().hex[:8]}"
    out = tmp_path_factory.mktemp("e2e") / "records.json"
    cfg = SimConfig(slots=SLOTS, seed=7)
    with run_in_thread(cfg, port=0) as sim:
        records = _run_workload(stack, sim.url, service, out, seconds=8.0)
    prom = promql.PrometheusClient(stack.prometheus_url)
    yield service, records, prom
    prom.close()


def test_request_count_is_exact(run):
    service, records, prom = run
    sel = promql.selector(job=service)
    got = _wait_for(prom, f"sum({METRICS.REQUESTS.prom}{{{sel}}})", float(len(records)))
    assert got == len(records)
    hist_count = prom.scalar(f"sum(histogram_count({METRICS.OPERATION_DURATION.prom}{{{sel}}}))")
    assert hist_count == len(records)


def test_peak_in_flight_equals_driven_concurrency(run):
    service, _, prom = run
    sel = promql.selector(job=service)
    peak = prom.scalar(f"max_over_time({promql.in_flight(sel)}[2m:250ms])")
    assert peak == CONCURRENCY
    # and it came back to zero when the app finished: its last sample says 0
    latest = f"sum(last_over_time({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}}[5m]))"
    assert prom.scalar(latest) == 0


@pytest.mark.parametrize("spec,key", [(METRICS.OPERATION_DURATION, "duration"),
                                      (METRICS.TIME_TO_FIRST_CHUNK, "ttft")])
def test_p95_within_5_percent_of_client(run, spec, key):
    service, records, prom = run
    sel = promql.selector(job=service)
    exact = float(np.percentile([r[key] for r in records], 95))
    # the cumulative native histogram holds every observation of the run
    got = prom.scalar(f"histogram_quantile(0.95, sum({spec.prom}{{{sel}}}))")
    assert got is not None
    assert abs(got - exact) / exact <= 0.05, (got, exact)
