"""An Agents SDK app under ``opentelemetry-instrument`` (no redline code), through the real
Collector into Prometheus, read back raw and through the agent recording rules."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from redline.semconv import METRICS
from redline_operator import agents_promql as ap
from redline_operator import promql
from redline_operator.sim import SimConfig, run_in_thread
from redline_operator.top import collect_agents

pytestmark = [pytest.mark.stack, pytest.mark.slow]

APP = Path(__file__).parent / "workloads" / "openai_agents_app.py"
AGENTS = 5
HOLD = 12.0  # > two rule evaluations (5 s) and scrape-free OTLP pushes (1 s)


def _eventually(prom, expr: str, want, timeout: float = 30.0):
    deadline, got = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        got = prom.scalar(expr)
        if got is not None and want(got):
            return got
        time.sleep(1.0)
    return got


def test_agents_app_end_to_end(stack, tmp_path):
    service = f"agents-{uuid.uuid4().hex[:8]}"
    otel = Path(sys.executable).with_name("opentelemetry-instrument")
    with run_in_thread(SimConfig(slots=16, decode_base_s=0.002), port=0) as sim:
        env = dict(os.environ, OTEL_SERVICE_NAME=service,
                   OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc_endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_METRICS_EXPORTER="otlp",
                   OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
                   OTEL_METRIC_EXPORT_INTERVAL="1000",
                   OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=(
                       "base2_exponential_bucket_histogram"))
        env.pop("OPENAI_API_KEY", None)
        done = subprocess.run([str(otel), sys.executable, str(APP), sim.url, str(AGENTS),
                               str(HOLD)], env=env, capture_output=True, text=True,
                              timeout=HOLD + 90)
    assert done.returncode == 0, done.stderr[-3000:]
    prom = promql.PrometheusClient(stack.prometheus_url)
    job = f'job="{service}"'
    try:
        sessions = f"{METRICS.INVOKE_AGENT_DURATION.prom}{{{job}}}"
        assert _eventually(prom, f"sum(histogram_count({sessions}))",
                           lambda v: v >= AGENTS) == AGENTS
        tools = f"{METRICS.EXECUTE_TOOL_DURATION.prom}{{{job},gen_ai_tool_name=\"lookup\"}}"
        assert prom.scalar(f"sum(histogram_count({tools}))") == AGENTS
        # every session lasted at least the hold
        assert prom.scalar(f"histogram_quantile(0.0, sum({sessions}))") >= HOLD * 0.9
        # the recording rule saw the peak: exactly AGENTS sessions at once, then 0
        rule = f'{ap.SESSIONS}{{{job},gen_ai_agent_name="e2e-agent"}}'
        assert prom.scalar(f"max_over_time({rule}[5m])") == AGENTS
        assert _eventually(prom, rule, lambda v: v == 0) == 0
        raw_tools = f"sum({METRICS.TOOL_CALLS_IN_FLIGHT.prom}{{{job}}})"
        assert prom.scalar(f"max_over_time({raw_tools}[5m:1s])") == AGENTS
        assert prom.scalar(raw_tools) == 0
        # two model calls per session, by the openai SDK instrumentor under the session
        assert prom.scalar(f"sum({METRICS.REQUESTS.prom}{{{job}}})") == 2 * AGENTS
        # where the session time went: mostly the tool (held HOLD s against ms of model)
        share = _eventually(prom, f'{ap.SHARE}{{{job},redline_agent_activity="tool"}}',
                            lambda v: v > 0.8)
        assert share is not None and 0.8 < share <= 1.0
        # the Little's-law check per pool needs a steady workload over its window (its value
        # is tested by promtool, alerts/tests/agents.test.yml); this app lives 15 s and its
        # sessions all end in its last second, so only the model pool (histogram samples
        # from the first second on) is evaluated here
        assert prom.scalar(f'{ap.LITTLE}{{{job},pool="model"}}') is not None
        # `redline top` reads the same split
        (row,) = [a for a in collect_agents(prom, "5m") if a.job == service]
        assert row.agent == "e2e-agent" and row.sessions == 0
        assert row.tool > 0.8 and row.neither < 0.2
    finally:
        prom.close()
