"""The README's zero-code framework example runs as written under ``opentelemetry-instrument``
(against the sim through ``OPENAI_BASE_URL``) and records a session and a tool call."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from redline.semconv import METRICS
from redline_operator.sim import SimConfig, run_in_thread

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _points(stdout: str, name: str) -> list[dict]:
    """Data points of ``name`` in ConsoleMetricExporter output (one JSON document per export)."""
    found, decoder, i = [], json.JSONDecoder(), 0
    while (i := stdout.find("{", i)) != -1:
        try:
            doc, end = decoder.raw_decode(stdout, i)
        except ValueError:
            i += 1
            continue
        i = end
        for rm in doc.get("resource_metrics", []):
            for sm in rm.get("scope_metrics", []):
                for m in sm.get("metrics", []):
                    if m.get("name") == name:
                        found += m["data"]["data_points"]
    return found


def test_zero_code_framework_example_runs(tmp_path):
    section = README.split("### Agent frameworks, zero-code", 1)[1]
    command = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert "opentelemetry-instrument python my_agent_app.py" in command
    app = tmp_path / "my_agent_app.py"
    app.write_text(re.search(r"```python\n(.*?)```", section, re.S).group(1))
    otel = Path(sys.executable).with_name("opentelemetry-instrument")
    with run_in_thread(SimConfig(slots=4, decode_base_s=0.002), port=0) as sim:
        env = dict(os.environ, OPENAI_BASE_URL=f"{sim.url}/v1", OPENAI_API_KEY="not-a-secret",
                   OTEL_METRICS_EXPORTER="console", OTEL_TRACES_EXPORTER="none",
                   OTEL_LOGS_EXPORTER="none", OTEL_SERVICE_NAME="readme-agents")
        done = subprocess.run([str(otel), sys.executable, str(app)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    sessions = [p for p in _points(done.stdout, METRICS.INVOKE_AGENT_DURATION.name)
                if p["attributes"].get("gen_ai.agent.name") == "triage"]
    tools = [p for p in _points(done.stdout, METRICS.EXECUTE_TOOL_DURATION.name)
             if p["attributes"].get("gen_ai.tool.name") == "lookup"]
    assert sessions and max(p["count"] for p in sessions) == 1
    assert tools and max(p["count"] for p in tools) == 1
    gauge = _points(done.stdout, METRICS.SESSIONS_IN_FLIGHT.name)
    assert gauge and gauge[-1]["value"] == 0
