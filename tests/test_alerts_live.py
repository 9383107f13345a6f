"""End to end: the committed rules page through the real Alertmanager to the local pager.

An instrumented ``openai`` client (a separate process, like a user's app) holds streamed
calls open on the real simulator; its in-flight gauge travels OTLP -> Collector ->
Prometheus, whose rules (``alerts/*.rules.yml``) fire, and Alertmanager
(``alerts/alertmanager.yml``) posts to the pager. Calls are held just below the page level
for longer than a page takes (nothing may page), then one call more crosses it: the delay
until the page arrives is measured; then the extra call ends (the page resolves) and
starts again: a page that fires a second time is measured against its own worst case.
For that case the Alertmanager group is held open with a second alert (label
``keeper``), so the re-fired page joins a group that exists and has notified — the path
that waits for ``group_interval`` rather than ``group_wait`` (the demo's page followed by
this test took it on the shared stack).

It runs on a stack of its own (``own_stack``: fresh TSDB, Alertmanager and pager on free
ports): the shared stack has history — the demo has just paged through the same
Alertmanager group, and other tests drive the same target — that would change when, or
whether, a page arrives.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from redline.config import duration_seconds, load_config
from redline_operator.alerts import queries as q
from redline_operator.alerts.rules import CONCURRENCY
from redline_operator.promql import PrometheusClient
from redline_operator.sim import SimConfig, run_in_thread

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
EXPORT_INTERVAL_S = 1.0
PIPELINE_S = 5.0  # Collector batch, OTLP write, rule group and notifier scheduling
DECODE_S = 0.25  # seconds per streamed token: a held call sends 4 chunks a second

# The app: holds `below` streamed calls open, then obeys stdin: "up" starts one call more,
# "down" ends it, "quit" ends everything. Prints "<event> <unix time>" once each is done
# (for "up": once the call's response has started, so its in-flight gauge is up).
APP = textwrap.dedent("""
    import sys, threading, time
    import openai, redline
    url, endpoint, below = sys.argv[1], sys.argv[2], int(sys.argv[3])
    redline.configure_telemetry(service_name="alerts-e2e", endpoint=endpoint,
                                export_interval_ms=1000)
    redline.instrument()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

    def hold(stop, started):
        stream = client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hold"}],
            max_tokens=4000, stream=True)
        started.set()
        with stream:
            for _ in stream:
                if stop.is_set():
                    break

    def start():
        stop, started = threading.Event(), threading.Event()
        thread = threading.Thread(target=hold, args=(stop, started))
        thread.start()
        started.wait()
        return thread, stop

    def say(event):
        print(event, time.time(), flush=True)

    held = [start() for _ in range(below)]
    say("ready")
    extra = None
    for line in sys.stdin:
        if line.strip() == "up":
            extra = start()
            say("up")
        elif line.strip() == "down":
            extra[1].set()
            extra[0].join()
            say("down")
        else:
            break
    for thread, stop in held + ([extra] if extra else []):
        stop.set()
        thread.join()
    redline.shutdown_telemetry()
""")


def _alerts(stack, since: float, status: str) -> list[tuple[float, dict]]:
    """(received_at, alert) of the sim's concurrency page with ``status``, since ``since``."""
    out = []
    for page in stack.pages():
        if page["received_at"] < since:
            continue
        for alert in page["payload"].get("alerts", []):
            labels = alert["labels"]
            if (labels.get("alertname") == CONCURRENCY and labels.get("target") == "sim"
                    and labels.get("severity") == "page" and "keeper" not in labels
                    and alert["status"] == status):
                out.append((page["received_at"], alert))
    return out


def _hold_group_open(stack) -> None:
    """Put a second, long-lived alert into the page's Alertmanager group."""
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 900))
    httpx.post(f"{stack.alertmanager_url}/api/v2/alerts", timeout=10, json=[{
        "labels": {"alertname": CONCURRENCY, "target": "sim", "severity": "page",
                   "keeper": "tests/test_alerts_live.py"},
        "annotations": {"summary": "holds the group open"}, "endsAt": ends}]
    ).raise_for_status()


def _wait_for(stack, since: float, status: str, budget: float) -> float | None:
    """Seconds from ``since`` until the first ``status`` notification, None past budget+10."""
    deadline = since + budget + 10
    while True:  # looks at least once, even when this process gets here past the deadline
        found = _alerts(stack, since, status)
        if found:
            return found[0][0] - since
        if time.time() >= deadline:
            return None
        time.sleep(0.25)


class App:
    """The app process, driven line by line."""

    def __init__(self, sim_url: str, endpoint: str, below: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", APP, sim_url, endpoint, str(below)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def expect(self, event: str) -> float:
        line = self.proc.stdout.readline().split()
        assert line and line[0] == event, f"app failed before {event!r}: {line}"
        return float(line[1])

    def do(self, command: str) -> float:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(command)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_page_reaches_pager_in_time_first_and_again_after_resolving(own_stack):
    stack = own_stack
    cfg = load_config(REPO / "redline.yaml")
    sim_t = cfg.target("sim")
    page_for = duration_seconds(sim_t.durations.page)
    evaluation = duration_seconds(cfg.evaluation_interval)
    group_wait = duration_seconds(cfg.pager.group_wait)
    group_interval = duration_seconds(cfg.pager.group_interval)
    # docs/alerts.md: the worst cases, first page and a page firing again
    first_budget = page_for + evaluation + group_wait + EXPORT_INTERVAL_S + PIPELINE_S
    again_budget = page_for + evaluation + group_interval + EXPORT_INTERVAL_S + PIPELINE_S
    resolve_budget = evaluation + group_interval + EXPORT_INTERVAL_S + PIPELINE_S
    below = int(sim_t.page_concurrency)  # 13 for the knee 16 paging at 13.6
    assert below < sim_t.page_concurrency < below + 1 <= sim_t.saturation_concurrency
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()
    assert f"redline.{sim_t.name}" in {g["name"] for g in groups["data"]["groups"]}, \
        "Prometheus did not load alerts/sim.rules.yml"
    prom = PrometheusClient(stack.prometheus_url)
    concurrency = q.recorded(q.CONCURRENCY, sim_t)
    # an earlier process's last values age out of the freshness window first
    deadline = time.time() + 2 * duration_seconds(cfg.export_interval) + 3 * duration_seconds(
        cfg.evaluation_interval)
    while (busy := prom.scalar(concurrency)) and time.time() < deadline:
        time.sleep(0.5)
    assert not busy, f"a fresh stack already sees target sim busy ({busy} in flight)"

    with run_in_thread(SimConfig(slots=16, decode_base_s=DECODE_S, decode_alpha=0.0,
                                 prefill_base_s=0.0), port=0) as sim:
        app = App(sim.url, stack.otlp_grpc_endpoint, below)
        try:
            ready = app.expect("ready")
            # Below the page level for longer than a page takes: Prometheus sees it, and
            # nothing pages.
            time.sleep(max(0.0, ready + page_for + evaluation + 10 - time.time()))
            seen = prom.scalar(f"max_over_time({concurrency}[30s])")
            assert seen == below, f"Prometheus saw {seen} in flight, expected {below}"
            assert _alerts(stack, 0, "firing") == []

            crossed = app.do("up")
            first = _wait_for(stack, crossed, "firing", first_budget)
            assert first is not None, \
                f"no page within {first_budget + 10:.0f}s of crossing {sim_t.page_concurrency}"
            _hold_group_open(stack)
            dropped = app.do("down")
            resolved = _wait_for(stack, dropped, "resolved", resolve_budget)
            assert resolved is not None, \
                f"the page did not resolve within {resolve_budget + 10:.0f}s"
            crossed_again = app.do("up")
            again = _wait_for(stack, crossed_again, "firing", again_budget)
            assert again is not None, \
                f"no second page within {again_budget + 10:.0f}s of crossing again"
        finally:
            assert app.close() == 0
    prom.close()
    print(f"\npage delay: first {first:.1f}s (budget {first_budget:.0f}s), resolved "
          f"{resolved:.1f}s after dropping (budget {resolve_budget:.0f}s), again "
          f"{again:.1f}s (budget {again_budget:.0f}s)")
    _, alert = _alerts(stack, crossed, "firing")[0]
    assert alert["labels"]["target"] == "sim" and alert["labels"]["severity"] == "page"
    assert alert["annotations"]["runbook_url"].endswith(f"/{CONCURRENCY}.md")
    assert f"page level {sim_t.page_concurrency:g}" in alert["annotations"]["description"]
    assert page_for <= first <= first_budget, f"page took {first:.1f}s (budget {first_budget:.0f}s)"
    assert resolved <= resolve_budget
    assert page_for <= again <= again_budget, \
        f"second page took {again:.1f}s (budget {again_budget:.0f}s)"


def test_check_targets_flags_a_target_matching_nothing(own_stack, tmp_path, capsys):
    from redline_operator.cli.main import main

    text = (REPO / "redline.yaml").read_text()
    typo = tmp_path / "redline.yaml"
    typo.write_text(text.replace("model: sim-model", "model: sim-modle"))
    assert main(["rules", "--config", str(typo), "--check-targets",
                 "--prometheus", own_stack.prometheus_url]) == 1
    err = capsys.readouterr().err
    assert f"{typo}: key targets[0].match (target 'sim')" in err
    assert 'gen_ai_request_model="sim-modle"' in err
    # The committed config's sim target matches the calls the test above made (it runs
    # first, on the same stack of this module); its vllm target is flagged, since nothing
    # called vLLM on this private stack.
    committed = REPO / "redline.yaml"
    assert main(["rules", "--config", str(committed), "--check-targets",
                 "--prometheus", own_stack.prometheus_url]) == 1
    err = capsys.readouterr().err
    assert f"{committed}: key targets[0]" not in err, err
    assert f"{committed}: key targets[1].match (target 'vllm')" in err, err
