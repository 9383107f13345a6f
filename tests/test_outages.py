"""Outages: the Collector and Prometheus are SIGKILLed mid-run and restarted, the
Collector is frozen (SIGSTOP: it accepts connections and never answers). Afterwards
Prometheus' request totals equal the apps' own counts exactly, in-flight is back to 0,
and the apps' calls were no slower while the Collector was gone (exports never block a
call). Runs on a private stack: it kills parts of it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import numpy as np
import pytest
from tests.workloads.private_stack import PrivateStack
from tests.workloads.replicas import Replica

from redline.semconv import METRICS
from redline_operator.promql import PrometheusClient
from redline_operator.sim import SimConfig, run_in_thread
from redline_operator.stack import processes

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PHASE_S = 6.0


def _pid(stack, name: str) -> int:
    record = processes.read_pid(stack.state_dir / f"{name}.pid")
    assert record is not None and processes.is_alive(record), f"{name} is not running"
    return record.pid


def _kill(stack, name: str) -> None:
    pid = _pid(stack, name)
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while processes.is_alive(processes.read_pid(stack.state_dir / f"{name}.pid")):
        assert time.time() < deadline, f"{name} survived SIGKILL"
        time.sleep(0.1)


def _latency(records: list, phases: dict[str, tuple[float, float]]) -> dict[str, dict]:
    out = {}
    for name, (start, end) in phases.items():
        lat = [d for t, d in records if start <= t < end]
        out[name] = {"calls": len(lat), "p50": float(np.percentile(lat, 50)),
                     "p95": float(np.percentile(lat, 95))}
    return out


def test_collector_and_prometheus_outages_lose_nothing(stack_binaries, repo_root, tmp_path):
    stack = PrivateStack(repo_root, tmp_path / "stack")
    stack.up()
    service = f"outage-{uuid.uuid4().hex[:8]}"
    phases: dict[str, tuple[float, float]] = {}
    replicas: list[Replica] = []
    try:
        with run_in_thread(SimConfig(slots=64, seed=3), port=0) as sim:
            replicas = [Replica(stack.otlp_grpc_endpoint, service, export_ms=1000)
                        for _ in range(2)]
            for r in replicas:
                r.send(f"loop {sim.url} 3")

            def phase(name: str) -> None:
                start = time.time()
                time.sleep(PHASE_S)
                phases[name] = (start, time.time())

            phase("collector up")
            _kill(stack, "collector")
            phase("collector down")
            stack.up()  # starts only what is missing
            phase("collector restarted")
            os.kill(_pid(stack, "collector"), signal.SIGSTOP)
            try:
                phase("collector hung")
            finally:
                os.kill(_pid(stack, "collector"), signal.SIGCONT)
            _kill(stack, "prometheus")
            phase("prometheus down")
            stack.up()
            phase("prometheus restarted")
            results = [r.finish("stop") for r in replicas]
        calls = sum(r["calls"] for r in results)
        sel = f'job="{service}"'
        with PrometheusClient(stack.prometheus_url) as prom:
            total = f"sum({METRICS.REQUESTS.prom}{{{sel}}})"
            deadline = time.time() + 90
            while (got := prom.scalar(total)) != calls and time.time() < deadline:
                time.sleep(0.5)
            latest = f"sum(last_over_time({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}}[5m]))"
            in_flight = prom.scalar(latest)
            hist = prom.scalar(f"sum(histogram_count({METRICS.OPERATION_DURATION.prom}{{{sel}}}))")
    finally:
        for r in replicas:
            r.close()
        stack.down()
    lat = _latency([rec for r in results for rec in r["records"]], phases)
    print(f"\noutage totals: Prometheus {got} = apps {calls}; histogram count {hist}; "
          f"in flight {in_flight}; shutdown {[round(r['shutdown_s'], 2) for r in results]} s")
    for name, v in lat.items():
        print(f"  {name:<22} {v['calls']:>5} calls  p50 {v['p50'] * 1000:6.1f} ms  "
              f"p95 {v['p95'] * 1000:6.1f} ms")
    assert got == calls and hist == calls
    assert in_flight == 0
    up = lat["collector up"]
    for name in ("collector down", "collector hung"):
        # generous: a shared 2-core machine; the precise figures are in bench_outages.py
        assert lat[name]["p50"] <= 2 * up["p50"] + 0.02, (name, lat[name], up)
        assert lat[name]["calls"] >= 0.4 * up["calls"], (name, lat[name], up)
    assert all(r["shutdown_s"] < 15 for r in results)
