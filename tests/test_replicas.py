"""Several replicas of an app, crashes and restarts: the concurrency Prometheus records is
the live processes' true sum, never a dead one's last value.

Each replica is its own process (``workloads/replica.py``) exporting over OTLP with
redline's default 5 s interval, as a user's app would; each holds an exact number of
model calls open for target ``sim``. Readers count only series refreshed within
``redline.yaml``'s ``fresh_window`` (2 export intervals): a SIGKILLed process stops
exporting and, with no staleness marker over OTLP, would otherwise be summed for
Prometheus' whole 5-minute lookback. The stack is the module's own (free ports, own
pager), so no other test drives its target or sees its pages.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from tests.workloads.private_stack import PrivateStack
from tests.workloads.replicas import Replica

from redline.config import duration_seconds, load_config
from redline.semconv import METRICS
from redline_operator.alerts import queries as q
from redline_operator.alerts.rules import CONCURRENCY
from redline_operator.dashboards import queries as dq
from redline_operator.promql import PrometheusClient

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CFG = load_config(REPO / "redline.yaml")
SIM = CFG.target("sim")
EXPORT_S = duration_seconds(CFG.export_interval)
EVAL_S = duration_seconds(CFG.evaluation_interval)
RECORDED = q.recorded(q.CONCURRENCY, SIM)


@pytest.fixture(scope="module")
def stack(stack_binaries, repo_root, tmp_path_factory):
    """A private stack: nobody else drives its target ``sim`` or reads its pager."""
    private = PrivateStack(repo_root, tmp_path_factory.mktemp("replicas-stack"))
    private.up()
    yield private
    private.down()


@pytest.fixture
def prom(stack):
    with PrometheusClient(stack.prometheus_url) as client:
        deadline = time.time() + 4 * EXPORT_S + EVAL_S  # an earlier test's replicas leave
        while (busy := client.scalar(RECORDED)) and time.time() < deadline:
            time.sleep(0.5)
        if busy:
            pytest.fail(f"another process already drives target sim ({busy} in flight)")
        yield client


@pytest.fixture
def fleet(stack):
    replicas: list[Replica] = []

    def start(service: str, n: int = 1) -> list[Replica]:
        new = [Replica(stack.otlp_grpc_endpoint, service) for _ in range(n)]
        replicas.extend(new)
        return new

    yield start
    for r in replicas:
        if r.proc.poll() is None:
            r.finish("stop")  # a clean exit: the last export says 0 in flight
        r.close()


def _wait_value(prom: PrometheusClient, expr: str, want: float, timeout: float) -> float:
    """Poll until ``expr`` equals ``want``; returns the unix time it first did."""
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = prom.scalar(expr)
        if got == want:
            return time.time()
        time.sleep(0.25)
    raise AssertionError(f"{expr} = {got} after {timeout:.0f}s, expected {want}")


def _pages(stack, since: float, severity: str = "page") -> list[dict]:
    return [a for p in stack.pages() if p["received_at"] >= since
            for a in p["payload"].get("alerts", [])
            if a["labels"].get("target") == "sim" and a["labels"].get("severity") == severity]


def test_replicas_sum_exactly_and_a_killed_one_drops_out_in_time(stack, prom, fleet):
    service = f"replicas-{uuid.uuid4().hex[:8]}"
    replicas = fleet(service, 4)
    per_instance = dq.substitute(dq.target_concurrency_by_instance(
        CFG.targets, CFG.fresh_window).expr, target="sim", job=service)
    settle = EXPORT_S + EVAL_S + 15  # generous: a busy 2-core machine
    for step in ((1, 2, 3, 4), (4, 0, 2, 1), (2, 3, 1, 5)):
        for r, n in zip(replicas, step, strict=True):
            r.send(f"hold {n}")
        reached = _wait_value(prom, RECORDED, sum(step), settle)
        # held for a while: every evaluation since is the exact sum, never more
        time.sleep(EXPORT_S + EVAL_S)
        span = f"{max(1, int(time.time() - reached))}s"
        assert prom.scalar(f"max_over_time({RECORDED}[{span}])") == sum(step)
        assert prom.scalar(f"min_over_time({RECORDED}[{span}])") == sum(step)
        by_instance = sorted(s.value for s in prom.query(per_instance))
        assert by_instance == sorted(float(n) for n in step), "per-replica panel"

    killed_at = time.time()
    replicas[3].kill()  # was holding 5: SIGKILL, no last export
    survivors = sum((2, 3, 1))
    dropped_at = _wait_value(prom, RECORDED, survivors, timeout=60)
    delay = dropped_at - killed_at
    bound = 3 * EXPORT_S + EVAL_S
    print(f"\nphantom drop delay after SIGKILL: {delay:.1f}s (bound 3 x export {EXPORT_S:g}s "
          f"+ eval {EVAL_S:g}s = {bound:g}s)")
    # the raw gauge still holds the dead process's 5 (Prometheus' lookback): the filter matters
    raw = prom.scalar(f'sum({METRICS.REQUESTS_IN_FLIGHT.prom}{{job="{service}"}})')
    assert raw == survivors + 5
    assert delay <= bound + 2, f"dropped after {delay:.1f}s (bound {bound:g}s + 2s polling)"
    assert len(prom.query(per_instance)) == 3


def test_rolling_restart_below_page_level_pages_nobody(stack, prom, fleet):
    service = f"rolling-{uuid.uuid4().hex[:8]}"
    # 8 in flight, below warn (11.2) even with one phantom pod (10); counting every dead
    # pod's last value, as a plain sum does for 5 minutes, would be 16: above page (13.6)
    per, count = 2, 4
    assert per * (count + 1) < SIM.warn_concurrency <= SIM.page_concurrency <= 2 * per * count
    old = fleet(service, count)
    for r in old:
        r.send(f"hold {per}")
    _wait_value(prom, RECORDED, per * count, EXPORT_S + EVAL_S + 15)
    started = time.time()
    for r in old:
        new = fleet(service)[0]
        new.send("hold 0")  # the new pod is up (and exporting) before the old one goes
        r.kill()
        new.send(f"hold {per}")  # its traffic moves over: the true total stays the same
        time.sleep(EXPORT_S * 2)  # a deploy's pace: the next pod once this one is ready
    # long enough for a page to fire and be delivered if the phantoms had counted
    time.sleep(duration_seconds(SIM.durations.page) + EVAL_S
               + duration_seconds(CFG.pager.group_wait) + 10)
    span = f"{int(time.time() - started)}s"
    peak = prom.scalar(f"max_over_time({RECORDED}[{span}])")
    raw = prom.scalar(f'sum({METRICS.REQUESTS_IN_FLIGHT.prom}{{job="{service}"}})')
    print(f"\nrolling restart: recorded peak {peak:g} (true {per * count}; page "
          f"{SIM.page_concurrency:g}); unfiltered last values sum to {raw:g}")
    assert raw == 2 * per * count  # three dead pods' last values are still in the TSDB
    assert peak < SIM.page_concurrency
    assert prom.scalar(RECORDED) == per * count
    firing = (f'count_over_time(ALERTS{{alertname="{CONCURRENCY}",target="sim",'
              f'severity="page",alertstate="firing"}}[{span}])')
    assert prom.query(firing) == []
    assert _pages(stack, started) == []


def test_clean_shutdown_exports_zero_in_flight(stack, prom):
    service = f"shutdown-{uuid.uuid4().hex[:8]}"
    replica = Replica(stack.otlp_grpc_endpoint, service, export_ms=1000)
    latest = f'sum(last_over_time({METRICS.REQUESTS_IN_FLIGHT.prom}{{job="{service}"}}[5m]))'
    try:
        replica.send("hold 5")
        _wait_value(prom, latest, 5, timeout=30)
        out = replica.finish("exit")  # shut down with the 5 calls still open
    finally:
        replica.close()
    # the final export said 0: nobody counts this process, not even within fresh_window
    _wait_value(prom, latest, 0, timeout=30)
    assert out["shutdown_s"] < 10
