"""Replicas, crashes and outages: the precise figures behind tests/test_replicas.py and
tests/test_outages.py (no pass/fail: numbers for docs/scale-out.md).

1. Phantom drop delay: a replica holding calls is SIGKILLed; seconds until the recorded
   target concurrency (``redline:target_concurrency:sum``) equals the survivors' sum,
   against the bound 3 export intervals + 1 evaluation interval. Default 5 s export.
2. App call latency while the Collector is up, SIGKILLed (down) and SIGSTOPped (hung):
   two replicas x 3 workers calling the sim back to back.
3. ``redline.shutdown_telemetry()`` wall time with the Collector up, down and hung.

Runs its own stack on free ports (``tests/workloads/private_stack.py``); needs the
binaries (``redline stack build``). Usage: ``python benchmarks/bench_replicas.py [trials]``.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.workloads.private_stack import PrivateStack  # noqa: E402
from tests.workloads.replicas import Replica  # noqa: E402

from redline.config import duration_seconds, load_config  # noqa: E402
from redline_operator.alerts import queries as q  # noqa: E402
from redline_operator.promql import PrometheusClient  # noqa: E402
from redline_operator.sim import SimConfig, run_in_thread  # noqa: E402
from redline_operator.stack import processes  # noqa: E402

CFG = load_config(ROOT / "redline.yaml")
RECORDED = q.recorded(q.CONCURRENCY, CFG.target("sim"))
EXPORT_S = duration_seconds(CFG.export_interval)
EVAL_S = duration_seconds(CFG.evaluation_interval)
PHASE_S = 15.0


def wait_value(prom: PrometheusClient, expr: str, want: float, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if prom.scalar(expr) == want:
            return time.time()
        time.sleep(0.1)
    raise RuntimeError(f"{expr} never reached {want}")


def pid(stack, name: str) -> int:
    return processes.read_pid(stack.state_dir / f"{name}.pid").pid


def phantom_drop(stack, prom: PrometheusClient, trials: int) -> list[float]:
    delays = []
    for _ in range(trials):
        service = f"bench-drop-{uuid.uuid4().hex[:6]}"
        keep, victim = Replica(stack.otlp_grpc_endpoint, service), Replica(
            stack.otlp_grpc_endpoint, service)
        try:
            keep.send("hold 3")
            victim.send("hold 4")
            wait_value(prom, RECORDED, 7, 60)
            time.sleep(np.random.default_rng().uniform(0, EXPORT_S))  # any phase of export
            killed = time.time()
            victim.kill()
            delays.append(wait_value(prom, RECORDED, 3, 60) - killed)
            keep.finish("stop")  # final export: 0 in flight
            wait_value(prom, RECORDED, 0, 60)
        finally:
            keep.close()
            victim.close()
    return delays


def latency_and_shutdown(stack) -> tuple[dict, dict]:
    lat: dict[str, list[float]] = {}
    shutdown: dict[str, float] = {}
    with run_in_thread(SimConfig(slots=64, seed=5), port=0) as sim:
        service = f"bench-lat-{uuid.uuid4().hex[:6]}"
        reps = [Replica(stack.otlp_grpc_endpoint, service, export_ms=1000) for _ in range(2)]
        for r in reps:
            r.send(f"loop {sim.url} 3")
        windows = {}
        for phase in ("up", "down", "hung"):
            if phase == "down":
                os.kill(pid(stack, "collector"), signal.SIGKILL)
                time.sleep(0.5)
            if phase == "hung":
                stack.up()
                os.kill(pid(stack, "collector"), signal.SIGSTOP)
            start = time.time()
            time.sleep(PHASE_S)
            windows[phase] = (start, time.time())
        os.kill(pid(stack, "collector"), signal.SIGCONT)
        records = [rec for r in reps for rec in r.finish("stop")["records"]]
        for phase, (a, b) in windows.items():
            lat[phase] = [d for t, d in records if a <= t < b]
        # shutdown_telemetry with the Collector up, gone, hung
        for state in ("up", "down", "hung"):
            r = Replica(stack.otlp_grpc_endpoint, service, export_ms=1000)
            r.send("hold 2")
            time.sleep(1.5)
            if state == "down":
                os.kill(pid(stack, "collector"), signal.SIGKILL)
                time.sleep(0.5)
            elif state == "hung":
                stack.up()
                os.kill(pid(stack, "collector"), signal.SIGSTOP)
            try:
                shutdown[state] = r.finish("stop")["shutdown_s"]
            finally:
                r.close()
                if state == "hung":
                    os.kill(pid(stack, "collector"), signal.SIGCONT)
            stack.up()
    return lat, shutdown


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as tmp:
        stack = PrivateStack(ROOT, Path(tmp) / "stack")
        stack.up()
        try:
            with PrometheusClient(stack.prometheus_url) as prom:
                delays = phantom_drop(stack, prom, trials)
            lat, shutdown = latency_and_shutdown(stack)
        finally:
            stack.down()
    bound = 3 * EXPORT_S + EVAL_S
    print(f"phantom drop delay after SIGKILL ({trials} trials, export {EXPORT_S:g}s, eval "
          f"{EVAL_S:g}s, fresh_window {CFG.fresh_window}): median {np.median(delays):.1f}s, "
          f"min {min(delays):.1f}s, max {max(delays):.1f}s (bound {bound:g}s)")
    for phase, values in lat.items():
        print(f"call latency, Collector {phase:<4}: {len(values):5d} calls  "
              f"p50 {np.percentile(values, 50) * 1e3:6.1f} ms  "
              f"p95 {np.percentile(values, 95) * 1e3:6.1f} ms  "
              f"mean {np.mean(values) * 1e3:6.1f} ms")
    for state, seconds in shutdown.items():
        print(f"shutdown_telemetry() with the Collector {state:<4}: {seconds:.2f}s")


if __name__ == "__main__":
    main()
