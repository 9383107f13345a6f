"""The README is a contract: its commands exist, its table is current, its example runs."""

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from redline.semconv import METRICS
from redline_operator.cli.main import main as cli
from redline_operator.promql import PrometheusClient, selector
from redline_operator.sim import SimConfig, run_in_thread

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_metric_table_is_generated_from_the_catalogue():
    assert cli(["docs", "--readme", str(ROOT / "README.md"), "--check"]) == 0
    for spec in METRICS.all():
        assert f"`{spec.prom}`" in README


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    block = re.search(r"## Set up on a fresh machine.*?```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_stale_table_is_reported(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text("x\n<!-- metrics:begin -->\nold\n<!-- metrics:end -->\n")
    assert cli(["docs", "--readme", str(stale), "--check"]) == 1
    assert cli(["docs", "--readme", str(stale)]) == 0
    assert cli(["docs", "--readme", str(stale), "--check"]) == 0


@pytest.mark.stack
def test_python_example_runs_and_reaches_prometheus(stack, tmp_path):
    example = re.search(r"## Instrument your app.*?```python\n(.*?)```", README, re.S).group(1)
    service = f"readme-{uuid.uuid4().hex[:8]}"
    example = example.replace('service_name="my-agent"', f'service_name="{service}"')
    script = tmp_path / "example.py"
    with run_in_thread(SimConfig(slots=4), port=0) as sim:
        script.write_text(f"SIM_URL = {sim.url!r}\n" + example)
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_grpc_endpoint)
        subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=60)
    with PrometheusClient(stack.prometheus_url) as prom:
        sel = selector(job=service)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if prom.scalar(f"sum({METRICS.REQUESTS.prom}{{{sel}}})") == 1:
                break
            time.sleep(0.3)
        assert prom.scalar(f"sum({METRICS.REQUESTS.prom}{{{sel}}})") == 1
        assert prom.scalar(f"sum({METRICS.EXECUTE_TOOL_DURATION.prom}_count{{{sel}}})") is None
        assert prom.scalar(
            f"sum(histogram_count({METRICS.EXECUTE_TOOL_DURATION.prom}{{{sel}}}))") == 1
        assert prom.scalar(f"sum({METRICS.SESSIONS_IN_FLIGHT.prom}{{{sel}}})") == 0
