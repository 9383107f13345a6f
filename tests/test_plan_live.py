"""`redline plan --prometheus` on the live stack agrees with a sweep of the same server.

One simulated replica (its own process) is swept at 8, 12 and 16 in flight; then an
instrumented app (its own process, OTLP -> Collector -> Prometheus) holds exactly the
concurrency target (12 = 0.75 x knee 16) against it. Read back from Prometheus while the
app still runs, the throughput per replica at the target is within 10% of the sweep's
figure there, and the replica counts that follow from it are the sweep plan's.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from redline.config import load_config
from redline_operator import promql
from redline_operator.alerts import queries as q

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
WORKLOAD = Path(__file__).parent / "workloads" / "fixed_concurrency.py"
TARGET = 12  # floor(0.75 * 16)
LIVE_SECONDS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sim(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline_operator", "sim", "--port", str(port), "--slots", "16",
         "--decode-base-s", "0.1", "--decode-alpha", "0", "--prefill-base-s", "0.0005",
         "--prefill-per-token-s", "0", "--seed", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=0.5).raise_for_status()
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("sim did not start")


def _config(tmp_path: Path, service: str) -> Path:
    # the sim target's match (the first one; the vllm target's follows it)
    sim_match = "      server_address: [127.0.0.1, sim]\n"
    text = (REPO / "redline.yaml").read_text()
    assert sim_match in text, "redline.yaml's sim target changed its match"
    text = text.replace(sim_match, f"      service: {service}\n{sim_match}", 1)
    path = tmp_path / "redline.yaml"
    path.write_text(text)
    target = load_config(path).target("sim")
    assert (target.match.service, target.concurrency_target) == (service, TARGET)
    return path


def _plan(*args: str) -> dict:
    # redline.yaml has two targets (sim, vllm): this test plans the sim
    proc = subprocess.run([sys.executable, "-m", "redline_operator", "plan", *args,
                           "--target", "sim", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["targets"][0]


def test_live_throughput_per_replica_matches_the_sweep(stack, tmp_path):
    port = _free_port()
    sim = _start_sim(port)
    url = f"http://127.0.0.1:{port}"
    service = f"plan-{uuid.uuid4().hex[:8]}"
    cfg = _config(tmp_path, service)
    try:
        subprocess.run(
            [sys.executable, "-m", "redline_operator", "sweep", "--base-url", f"{url}/v1",
             "--model", "sim-model", "--levels", "8,12,16", "--prompt-tokens", "8",
             "--output-tokens", "12", "--warmup", "1", "--min-duration", "12",
             "--min-requests", "80", "--out", str(tmp_path / "sweep"), "--no-plot"],
            check=True, capture_output=True, timeout=300, cwd=REPO)
        results = tmp_path / "sweep" / "results.json"
        swept = _plan("--config", str(cfg), "--results", str(results),
                      "--baseline-rps", "1", "--peak-rps", "1")["throughput_per_replica_rps"]
        # traffic far from a rounding edge for +-10%: 1.5x and 3.5x one replica
        traffic = ["--baseline-rps", f"{1.5 * swept:.3f}", "--peak-rps", f"{3.5 * swept:.3f}"]
        from_sweep = _plan("--config", str(cfg), "--results", str(results), *traffic)

        env = dict(os.environ, OTEL_SERVICE_NAME=service,
                   OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc_endpoint,
                   OTEL_METRIC_EXPORT_INTERVAL="1000")
        app = subprocess.Popen([sys.executable, str(WORKLOAD), url, str(TARGET),
                                str(LIVE_SECONDS), str(tmp_path / "records.json")], env=env)
        try:
            started = time.time()
            time.sleep(LIVE_SECONDS - 8)  # read while the app still runs
            window = f"{int(time.time() - started) + 2}s"
            live = _plan("--config", str(cfg), "--prometheus", stack.prometheus_url,
                         "--window", window, "--step", "1s", "--rate-window", "10s", *traffic)
            # no traffic flags: baseline and peak from Prometheus over the last 20 s
            observed = _plan("--config", str(cfg), "--prometheus", stack.prometheus_url,
                             "--window", window, "--step", "1s", "--rate-window", "10s",
                             "--traffic-window", "20s", "--traffic-rate-window", "10s")
            with promql.PrometheusClient(stack.prometheus_url) as prom:
                keda_value = prom.scalar(q.concurrency_raw(load_config(cfg).target("sim")))
        finally:
            assert app.wait(timeout=LIVE_SECONDS + 60) == 0
    finally:
        sim.terminate()
        sim.wait(timeout=10)

    thr = live["throughput_per_replica_rps"]
    diff = thr / swept - 1
    print(f"\nthroughput per replica at {TARGET} in flight: sweep {swept:.2f} req/s, "
          f"live {thr:.2f} req/s ({diff:+.1%})")
    records = json.loads((tmp_path / "records.json").read_text())
    print(f"client: {len(records)} calls in {LIVE_SECONDS} s, mean "
          f"{sum(r['duration'] for r in records) / len(records):.3f} s; live latency "
          f"{live['latency_s']}, sweep latency {from_sweep['latency_s']}; "
          f"{live['throughput_source']}")
    assert abs(diff) <= 0.10, (swept, live)
    for p in (live, from_sweep):
        assert p["concurrency_target"] == TARGET
        per = p["throughput_per_replica_rps"]
        assert p["min_replicas"] == math.ceil(p["baseline_rps"] / per) + 1
        assert p["max_replicas"] == math.ceil(p["peak_rps"] / per) + 2
    assert (live["min_replicas"], live["max_replicas"]) == (from_sweep["min_replicas"],
                                                            from_sweep["max_replicas"]) == (3, 6)
    # traffic read from Prometheus: one replica held at the target the whole window
    assert observed["traffic_source"].startswith("Prometheus, last 20s")
    for key in ("baseline_rps", "peak_rps"):
        assert abs(observed[key] / thr - 1) <= 0.15, observed
    # now: one replica reporting, at its target; KEDA's query / threshold asks for 1
    now = live["now"]
    assert now["replicas"] == 1, now
    assert abs(now["concurrency"] - TARGET) <= 2, now
    assert live["replicas_needed_now"] == math.ceil(now["rate_rps"] / thr)
    assert keda_value is not None and math.ceil(keda_value / TARGET) == 1, keda_value
