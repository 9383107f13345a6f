"""End to end: the committed rules page through the real Alertmanager to the local pager.

An instrumented ``openai`` client (a separate process, like a user's app) holds calls open
on the real simulator; its in-flight gauge travels OTLP -> Collector -> Prometheus, whose
rules (``alerts/*.rules.yml``) fire, and Alertmanager (``alerts/alertmanager.yml``) posts
to the pager. First calls are held just below the page level for longer than a page takes
(nothing may page), then one call more crosses it; the delay until the page arrives is measured.
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
DECODE_S = 0.05  # seconds per output token: call duration = max_tokens * DECODE_S

# The app: holds `below` calls open, then at `cross_at` one more until `end`; prints
# "crossed <unix time>" when the extra call has started (the in-flight gauge is up).
APP = textwrap.dedent("""
    import sys, threading, time
    import openai, redline
    url, endpoint, below, extra, cross_at, end = sys.argv[1:7]
    below, extra, cross_at, end = int(below), int(extra), float(cross_at), float(end)
    redline.configure_telemetry(service_name="alerts-e2e", endpoint=endpoint,
                                export_interval_ms=1000)
    redline.instrument()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    t0 = time.time()

    def call(seconds):
        client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hold"}],
            max_tokens=max(1, int(seconds / %(decode)r)))

    threads = [threading.Thread(target=call, args=(end,)) for _ in range(below)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, cross_at - (time.time() - t0)))
    more = [threading.Thread(target=call, args=(end - cross_at,)) for _ in range(extra)]
    for t in more:
        t.start()
    print("crossed", time.time(), flush=True)
    for t in threads + more:
        t.join()
    redline.shutdown_telemetry()
""") % {"decode": DECODE_S}


def _reload(stack) -> None:
    for url in (stack.prometheus_url, stack.alertmanager_url):
        httpx.post(f"{url}/-/reload", timeout=10).raise_for_status()


def _concurrency_pages(stack, since: float) -> list[tuple[float, dict]]:
    out = []
    for page in stack.pages():
        if page["received_at"] < since:
            continue
        for alert in page["payload"].get("alerts", []):
            labels = alert["labels"]
            if (labels.get("alertname") == CONCURRENCY and labels.get("target") == "sim"
                    and labels.get("severity") == "page" and alert["status"] == "firing"):
                out.append((page["received_at"], alert))
    return out


def test_page_reaches_pager_in_time_and_not_below_threshold(stack):
    cfg = load_config(REPO / "redline.yaml")
    sim_t = cfg.target("sim")
    page_for = duration_seconds(sim_t.durations.page)
    budget = (page_for + duration_seconds(cfg.evaluation_interval)
              + duration_seconds(cfg.pager.group_wait) + 5 + EXPORT_INTERVAL_S)
    below = int(sim_t.page_concurrency)  # 13 for the knee 16 paging at 13.6
    assert below < sim_t.page_concurrency < below + 1 <= sim_t.saturation_concurrency
    _reload(stack)
    prom = PrometheusClient(stack.prometheus_url)
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()
    assert "redline.sim" in {g["name"] for g in groups["data"]["groups"]}, \
        "Prometheus did not load alerts/sim.rules.yml"
    busy = prom.scalar(q.recorded(q.CONCURRENCY, sim_t))
    assert not busy, f"another process already drives target sim ({busy} in flight)"

    cross_at = page_for + duration_seconds(cfg.evaluation_interval) + 10  # 45s here
    end = cross_at + budget + 5
    started = time.time()
    with run_in_thread(SimConfig(slots=16, decode_base_s=DECODE_S, decode_alpha=0.0,
                                 prefill_base_s=0.0), port=0) as sim:
        app = subprocess.Popen(
            [sys.executable, "-c", APP, sim.url, stack.otlp_grpc_endpoint, str(below), "1",
             str(cross_at), str(end)], stdout=subprocess.PIPE, text=True)
        try:
            line = app.stdout.readline().split()
            assert line and line[0] == "crossed", f"app failed before crossing: {line}"
            crossed = float(line[1])
            # Below the page level for longer than a page takes: Prometheus saw it, and
            # nothing paged.
            seen = prom.scalar(f"max_over_time({q.recorded(q.CONCURRENCY, sim_t)}[30s])",
                               time=crossed - 1)
            assert seen == below, f"Prometheus saw {seen} in flight, expected {below}"
            assert _concurrency_pages(stack, started) == []
            deadline = crossed + budget + 10
            pages = []
            while time.time() < deadline and not pages:
                time.sleep(0.25)
                pages = _concurrency_pages(stack, crossed)
            assert app.wait(timeout=end + 60) == 0
        finally:
            if app.poll() is None:
                app.kill()
    prom.close()
    assert pages, f"no page within {budget + 10:.0f}s of crossing {sim_t.page_concurrency}"
    received, alert = pages[0]
    delay = received - crossed
    print(f"\npage delay: {delay:.1f}s from crossing {sim_t.page_concurrency:g} "
          f"(budget {budget:.0f}s: for {page_for:g}s + evaluation + group_wait + 5s + export)")
    assert alert["labels"]["target"] == "sim" and alert["labels"]["severity"] == "page"
    assert alert["annotations"]["runbook_url"].endswith(f"/{CONCURRENCY}.md")
    assert f"page level {sim_t.page_concurrency:g}" in alert["annotations"]["description"]
    assert page_for <= delay <= budget, f"page took {delay:.1f}s (budget {budget:.0f}s)"


def test_check_targets_flags_a_target_matching_nothing(stack, tmp_path, capsys):
    from redline_operator.cli.main import main

    text = (REPO / "redline.yaml").read_text()
    typo = tmp_path / "redline.yaml"
    typo.write_text(text.replace("model: sim-model", "model: sim-modle"))
    assert main(["rules", "--config", str(typo), "--check-targets",
                 "--prometheus", stack.prometheus_url]) == 1
    err = capsys.readouterr().err
    assert f"{typo}: key targets[0].match (target 'sim')" in err
    assert 'gen_ai_request_model="sim-modle"' in err
    # The committed config matches the calls the test above made (it runs first).
    assert main(["rules", "--config", str(REPO / "redline.yaml"), "--check-targets",
                 "--prometheus", stack.prometheus_url]) == 0
