"""Zero-code: ``opentelemetry-instrument python app.py`` picks redline up via its entry point.

The app imports nothing from redline. Its metrics go over OTLP/gRPC to the real Collector
of the session ``stack`` and are read back from Prometheus.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from redline.semconv import METRICS
from redline_operator import promql
from redline_operator.sim import SimConfig, run_in_thread

CALLS = 5

APP = textwrap.dedent(f"""
    import os, time, openai
    client = openai.OpenAI(base_url=os.environ["SIM_URL"] + "/v1", api_key="k", max_retries=2)
    for i in range({CALLS}):
        stream = client.chat.completions.create(
            model="sim-model", messages=[{{"role": "user", "content": "hi"}}], max_tokens=4,
            stream=True, stream_options={{"include_usage": True}})
        for _ in stream:
            pass
        time.sleep(0.6)  # spread over several 1 s exports, so rate() over them is not 0
""")


def test_entry_point_is_declared():
    eps = entry_points(group="opentelemetry_instrumentor")
    ours = [ep for ep in eps if ep.name == "redline"]
    assert ours and ours[0].value == "redline.instrumentors:RedlineInstrumentor"
    from redline.instrumentors import RedlineInstrumentor

    assert ours[0].load() is RedlineInstrumentor


def _wait_for(prom, expr: str, expected: float, timeout: float = 30.0) -> float | None:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = prom.scalar(expr)
        if value == expected:
            break
        time.sleep(0.5)
    return value


def _p95_rule_exprs(service: str) -> dict[str, str]:
    """The generated p95 recording rules' expressions, for a target matching ``service``."""
    from redline.config import load_config
    from redline_operator.alerts import queries

    target = load_config(Path(__file__).resolve().parent.parent / "redline.yaml").targets[0]
    target = target.model_copy(update={"match": target.match.model_copy(
        update={"service": service})})
    return {"latency": queries.latency_p95_raw(target), "ttft": queries.ttft_p95_raw(target)}


@pytest.mark.stack
@pytest.mark.parametrize("histograms", ["native", "classic"])
def test_opentelemetry_instrument_exports_to_collector_and_prometheus(stack, tmp_path: Path,
                                                                       histograms: str):
    service = f"zero-code-{histograms}-{uuid.uuid4().hex[:8]}"
    app = tmp_path / "app.py"
    app.write_text(APP)
    otel = Path(sys.executable).with_name("opentelemetry-instrument")
    with run_in_thread(SimConfig(slots=8, decode_base_s=0.002)) as sim:
        sim.set_faults([{"kind": "status", "status": 429, "retry_after": 0.05, "count": 1}])
        env = dict(os.environ, SIM_URL=sim.url, OTEL_SERVICE_NAME=service,
                   OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc_endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_METRICS_EXPORTER="otlp",
                   OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
                   OTEL_METRIC_EXPORT_INTERVAL="1000")
        env.pop("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", None)
        if histograms == "native":
            env["OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"] = (
                "base2_exponential_bucket_histogram")
        done = subprocess.run([str(otel), sys.executable, str(app)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # told once at start-up when the histograms will be classic, and only then
    assert done.stderr.count("as explicit buckets") == (histograms == "classic"), done.stderr
    sel = promql.selector(job=service)
    with promql.PrometheusClient(stack.prometheus_url) as prom:
        requests = _wait_for(prom, f"sum({METRICS.REQUESTS.prom}{{{sel}}})", CALLS)
        assert requests == CALLS
        assert prom.scalar(
            f'sum({METRICS.ATTEMPTS.prom}{{{sel},redline_attempt_cause="http_429"}})') == 1
        assert prom.scalar(f"sum({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}})") == 0
        ttft = METRICS.TIME_TO_FIRST_CHUNK.prom
        if histograms == "native":  # one observation per call, in a native histogram
            assert prom.scalar(f"sum(histogram_count({ttft}{{{sel}}}))") == CALLS
            assert prom.scalar(f"count({ttft}_bucket{{{sel}}})") is None
        else:  # classic buckets with the semconv boundaries
            assert prom.scalar(f"sum({ttft}_count{{{sel}}})") == CALLS
            assert prom.scalar(f'count({ttft}_bucket{{{sel},le="0.32"}})') >= 1
        # the generated p95 recording rules answer either way
        for what, expr in _p95_rule_exprs(service).items():
            deadline, p95 = time.monotonic() + 20, None
            while p95 is None and time.monotonic() < deadline:
                p95 = prom.scalar(expr)
                time.sleep(0.5)
            assert p95 is not None and 0 < p95 < 5, (what, histograms, p95)
        providers = prom.query(
            f"count by (gen_ai_provider_name) ({METRICS.REQUESTS.prom}{{{sel}}})")
        assert [s.labels.get("gen_ai_provider_name") for s in providers] == ["openai"]
