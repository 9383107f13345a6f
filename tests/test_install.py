"""The wheel of ``redline`` installs next to the pins of a real app and works there.

Builds the wheel from ``instrumentation/``, installs it with uv into a fresh venv together
with pins an existing app might have (``APP_PINS``: an older opentelemetry-sdk minor,
a pydantic 2.x older than uv.lock's, httpx 0.27, openai 1.x), and runs a streamed call from
that venv, instrumented by redline, into the real Collector and Prometheus of the session
stack. The venv is cached under ``.cache/install-test/`` and rebuilt when the wheel changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from redline.semconv import METRICS
from redline_operator import promql
from redline_operator.sim import SimConfig, run_in_thread

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".cache" / "tools" / "bin" / "uv"
HOME = ROOT / ".cache" / "install-test"
APP_PINS = ["opentelemetry-sdk==1.40.0", "pydantic==2.9.2", "httpx==0.27.2", "openai==1.55.3"]

APP = textwrap.dedent("""
    import os, sys
    import openai
    import redline

    redline.configure_telemetry(service_name=os.environ["SERVICE"],
                                endpoint=os.environ["OTLP"], export_interval_ms=1000)
    redline.instrument()
    client = openai.OpenAI(base_url=os.environ["SIM_URL"] + "/v1", api_key="k")
    stream = client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
        stream=True, stream_options={"include_usage": True})
    print(sum(1 for c in stream if c.choices and c.choices[0].delta.content))
    redline.shutdown_telemetry()
    heavy = [m for m in ("pydantic_settings", "matplotlib", "rich", "starlette", "uvicorn",
                         "kneed", "ruamel", "redline_operator", "opentelemetry.distro")
             if m in sys.modules]
    print("operator-side modules imported:", heavy)
""")


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                          env=env, **kw)


@pytest.fixture(scope="module")
def app_venv() -> Path:
    dist = HOME / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    _run(UV, "build", "--wheel", "--quiet", "--out-dir", dist, ROOT / "instrumentation")
    wheel = next(dist.glob("redline-*.whl"))
    want = hashlib.sha256(wheel.read_bytes() + repr(APP_PINS).encode()).hexdigest()
    venv, stamp = HOME / "app", HOME / "app" / ".stamp"
    if not (stamp.exists() and stamp.read_text() == want):
        _run(UV, "venv", "--quiet", "--clear", "--python", sys.executable, venv)
        _run(UV, "pip", "install", "--quiet", "--python", venv / "bin/python", wheel, *APP_PINS)
        stamp.write_text(want)
    return venv


def test_the_app_keeps_its_pins_and_gets_no_operator_dependencies(app_venv):
    frozen = _run(UV, "pip", "freeze", "--python", app_venv / "bin/python").stdout.lower()
    for pin in APP_PINS:
        assert pin.lower() in frozen, frozen
    for heavy in ("matplotlib", "rich", "starlette", "uvicorn", "kneed", "ruamel",
                  "grafana-foundation-sdk", "opentelemetry-distro", "prometheus-client"):
        assert f"\n{heavy}==" not in "\n" + frozen, heavy


@pytest.mark.stack
def test_a_streamed_call_from_the_app_venv_lands_in_prometheus(app_venv, stack):
    service = f"install-test-{uuid.uuid4().hex[:8]}"
    with run_in_thread(SimConfig(slots=4, decode_base_s=0.002)) as sim:
        env = {**os.environ, "SIM_URL": sim.url, "SERVICE": service,
               "OTLP": stack.otlp_grpc_endpoint}
        env.pop("PYTHONPATH", None)
        done = subprocess.run([str(app_venv / "bin/python"), "-c", APP], env=env,
                              capture_output=True, text=True, timeout=120, cwd=HOME)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "4"
    assert lines[1] == "operator-side modules imported: []"
    sel = promql.selector(job=service)
    with promql.PrometheusClient(stack.prometheus_url) as prom:
        deadline, got = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            got = prom.scalar(f"sum({METRICS.REQUESTS.prom}{{{sel}}})")
            if got == 1:
                break
            time.sleep(0.5)
        assert got == 1
        assert prom.scalar(
            f"sum(histogram_count({METRICS.TIME_TO_FIRST_CHUNK.prom}{{{sel}}}))") == 1
        assert prom.scalar(f"sum({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}})") == 0
        assert prom.scalar(f"sum({METRICS.ATTEMPTS.prom}{{{sel}}})") == 1
