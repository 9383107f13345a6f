"""Generated Grafana dashboards: golden files, validation, and every query on live data.

The live test drives the real chain — an instrumented app process (compose/workload.py:
agent sessions, tool calls, streamed chat calls through the real ``openai`` SDK) against
``redline sim``, OTLP into the real Collector, into the real Prometheus — then runs every
panel query through Prometheus' HTTP API with Grafana's variables substituted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from redline.config import load_config
from redline.semconv import METRICS
from redline_operator.cli.main import main
from redline_operator.dashboards import DATASOURCE_UID, build_dashboards, check_dashboards, render
from redline_operator.dashboards import queries as q

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
CONFIG = ROOT / "redline.yaml"
KNOWN_METRICS = {m.prom for m in METRICS.all()} | q.EXTERNAL_METRICS
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan"}


@pytest.fixture(scope="module")
def models() -> dict[str, dict]:
    return build_dashboards(load_config(CONFIG))


def panels(model: dict) -> list[dict]:
    return [p for p in model["panels"] if p["type"] != "row"]


def all_queries(model: dict) -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in panels(model) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Series names an expression reads (a small PromQL scanner, enough for ours)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(m.group())
    return names


def test_scanner_finds_names_and_skips_labels_and_functions():
    expr = ('sum by (gpu) (label_replace(hw_power_watts, "gpu", "$1", "x", "(.*)")) or '
            'max(DCGM_FI_DEV_POWER_USAGE{job=~"a"}[1m]) and on(t) vector(1)')
    assert metric_names(expr) == {"hw_power_watts", "DCGM_FI_DEV_POWER_USAGE"}


# --- golden files and the CLI ---------------------------------------------------------

@pytest.mark.parametrize("name", ["redline-saturation.json", "redline-capacity.json"])
def test_committed_dashboards_equal_regenerated(models, name):
    committed = (DASHBOARDS / name).read_text(encoding="utf-8")
    assert committed == render(models[name]), (
        f"dashboards/{name} is stale: run `redline dashboards` and commit it")


def test_no_stale_or_missing_dashboards(models):
    assert check_dashboards(models, DASHBOARDS) == ""
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(models)


def test_cli_check_passes_on_committed_files(capsys):
    assert main(["dashboards", "--config", str(CONFIG), "--out", str(DASHBOARDS),
                 "--check"]) == 0


def test_cli_writes_then_check_fails_with_diff_on_drift(tmp_path, capsys):
    assert main(["dashboards", "--config", str(CONFIG), "--out", str(tmp_path)]) == 0
    path = tmp_path / "redline-saturation.json"
    assert path.read_text() == (DASHBOARDS / path.name).read_text()
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temporary file"
    path.write_text(path.read_text().replace('"refresh": "10s"', '"refresh": "1m"'))
    capsys.readouterr()
    assert main(["dashboards", "--config", str(CONFIG), "--out", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert '-  "refresh": "1m"' in out and '+  "refresh": "10s"' in out


def test_cli_reports_a_bad_config_without_traceback(tmp_path, capsys):
    bad = tmp_path / "redline.yaml"
    bad.write_text(CONFIG.read_text().replace("saturation_concurrency: 16",
                                              "saturation_concurrency: -1"))
    assert main(["dashboards", "--config", str(bad), "--out", str(tmp_path)]) == 2
    assert "saturation_concurrency" in capsys.readouterr().err


# --- validation -----------------------------------------------------------------------

def test_generated_marker_in_description_and_top_level(models):
    for model in models.values():
        assert "do not edit" in model["__generated"]
        assert "do not edit" in model["description"]
        assert model["editable"] is False


def test_every_panel_query_variable_and_annotation_uses_the_provisioned_uid(models):
    for model in models.values():
        for p in panels(model):
            assert p["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, p["title"]
            assert p["targets"], f"{p['title']} has no query"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == DATASOURCE_UID, p["title"]
        for v in model["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == DATASOURCE_UID
        for a in model["annotations"]["list"]:
            assert a["datasource"]["uid"] == DATASOURCE_UID


def test_queries_read_only_catalogued_metrics(models):
    for model in models.values():
        exprs = [t["expr"] for _, t in all_queries(model)]
        exprs += [a["expr"] for a in model["annotations"]["list"]]
        exprs += [re.match(r"label_values\((.*), \w+\)$", v["query"]).group(1)
                  for v in model["templating"]["list"] if v["type"] == "query"]
        for expr in exprs:
            unknown = metric_names(expr) - KNOWN_METRICS
            assert not unknown, f"{expr!r} reads {unknown}, not in redline.semconv"


def test_latency_queries_use_native_histograms(models):
    """redline's own histograms are native; only vLLM's server-side ones have buckets."""
    server_buckets = {m for m in q.EXTERNAL_METRICS if m.endswith("_bucket")}
    assert server_buckets, "the server-side panels read vLLM's classic histograms"
    for model in models.values():
        for title, t in all_queries(model):
            names = metric_names(t["expr"])
            bucketed = {n for n in names if n.endswith("_bucket")}
            assert bucketed <= server_buckets, title
            if not bucketed:
                assert "le=" not in t["expr"] and "by (le)" not in t["expr"], title


def test_ids_unique_and_variables_present(models):
    for model in models.values():
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids))
        assert [v["name"] for v in model["templating"]["list"]] == ["job", "model", "target"]


def test_concurrency_vs_p95_leads_with_two_axes_and_the_knee(models):
    sat = models["redline-saturation.json"]
    first, xy = panels(sat)[:2]
    assert first["title"] == "Concurrency vs p95 latency" and first["type"] == "timeseries"
    p95 = next(o for o in first["fieldConfig"]["overrides"]
               if o["matcher"]["options"] == "p95")
    assert {"id": "custom.axisPlacement", "value": "right"} in p95["properties"]
    assert xy["type"] == "xychart" and xy["options"]["mapping"] == "manual"
    series = xy["options"]["series"]
    assert series[0]["x"]["matcher"]["options"] == "in-flight"
    assert series[0]["y"]["matcher"]["options"] == "p95"
    assert {s["x"]["matcher"]["options"] for s in series[1:]} == {"saturation", "page", "warn"}
    legends = {t["legendFormat"] for t in xy["targets"]}
    assert {"in-flight", "p95", "saturation", "page", "warn"} <= legends


def test_thresholds_follow_redline_yaml(tmp_path):
    text = CONFIG.read_text().replace("saturation_concurrency: 16", "saturation_concurrency: 40")
    (tmp_path / "redline.yaml").write_text(text)
    cfg = load_config(tmp_path / "redline.yaml")
    t = cfg.targets[0]
    sat = build_dashboards(cfg)["redline-saturation.json"]
    exprs = " ".join(t_["expr"] for _, t_ in all_queries(sat))
    assert "vector(40)" in exprs and f"vector({t.page_concurrency:g})" in exprs
    gauge = next(p for p in panels(sat) if p["type"] == "gauge")
    steps = gauge["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None},
                     {"color": "orange", "value": round(1 - t.page_fraction, 3)},
                     {"color": "green", "value": round(1 - t.warn_fraction, 3)}]
    assert "/ 40" in gauge["targets"][0]["expr"]


def test_provisioning_matches_dashboards_and_compose():
    yaml = YAML(typ="safe")
    ds = yaml.load((DASHBOARDS / "provisioning/datasources/redline.yaml").read_text())
    prom = next(d for d in ds["datasources"] if d["type"] == "prometheus")
    assert prom["uid"] == DATASOURCE_UID and prom["isDefault"] is True
    provider = yaml.load((DASHBOARDS / "provisioning/dashboards/redline.yaml").read_text())
    prov = provider["providers"][0]
    assert prov["folder"] == "redline" and prov["type"] == "file"
    compose = yaml.load((ROOT / "compose/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../dashboards:{prov['options']['path']}:ro" in mounts


# --- every query against a live Prometheus -------------------------------------------

# Queries that may be empty in this run: no limiter, no GPU, no failed calls; the sim is
# scraped only when it could listen on Prometheus' configured port 8000.
MAY_BE_EMPTY = re.compile(r"^(error |in-flight \{|cap \{|queued \{|admitted|rejected |"
                          r"(used |total )?GPU |server )")


@pytest.fixture(scope="module")
def live(stack, tmp_path_factory):
    """A ramp of agent workload against the sim, exported through the real stack."""
    from redline_operator.sim import SimConfig, run_in_thread

    service = f"dash-{uuid.uuid4().hex[:8]}"
    cfg = SimConfig(slots=4, seed=3, rate_limit_rate=0.15, queue_full_retry_after_s=0.2)
    try:
        ctx = run_in_thread(cfg, port=8000)  # the port prometheus/prometheus.yml scrapes
        sim = ctx.__enter__()
        scraped = True
    except OSError:
        ctx = run_in_thread(cfg, port=0)
        sim = ctx.__enter__()
        scraped = False
    env = dict(os.environ, OTEL_SERVICE_NAME=service,
               OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_endpoint,
               OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_METRIC_EXPORT_INTERVAL="1000")
    try:
        subprocess.run([sys.executable, str(ROOT / "compose/workload.py"), "--url", sim.url,
                        "--slots", "4", "--step-seconds", "1.5", "--cycles", "1"],
                       env=env, check=True, timeout=120, capture_output=True)
        time.sleep(6)  # two scrape intervals: the sim's gauges and the last export land
        # Queries are evaluated at this moment, while the sim still runs: once it stops,
        # Prometheus' next failed scrape marks its series stale and "now" is empty.
        at = time.time()
    finally:
        ctx.__exit__(None, None, None)
    yield stack.prometheus_url, service, scraped, at


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.parametrize("name", ["redline-saturation.json", "redline-capacity.json"])
def test_every_panel_query_runs_on_live_prometheus(live, models, name):
    url, service, scraped, at = live
    model = models[name]
    target = model["templating"]["list"][2]["current"]["value"]
    # the headroom gauges of the other targets (e.g. vllm) have no data from the sim
    others = {t.name for t in load_config(CONFIG).targets} - {target}
    failures, empty = [], []
    with httpx.Client(base_url=url, timeout=10) as http:
        for title, t in all_queries(model):
            expr = q.substitute(t["expr"], target=target, job=service)
            body = http.get("/api/v1/query", params={"query": expr, "time": at}).json()
            if body["status"] != "success":
                failures.append(f"{title} / {t['legendFormat']}: {body.get('error')}")
            elif not body["data"]["result"] and t["legendFormat"] not in others:
                may = MAY_BE_EMPTY.match(t["legendFormat"])
                if not may or (t["legendFormat"].startswith("server ") and scraped):
                    empty.append(f"{title} / {t['legendFormat']}: {expr}")
        for a in model["annotations"]["list"]:
            assert http.get("/api/v1/query", params={"query": a["expr"]}).json()["status"] \
                == "success"
    assert not failures, "\n".join(failures)
    assert not empty, "queries without data:\n" + "\n".join(empty)


@pytest.mark.stack
@pytest.mark.slow
def test_variable_queries_list_the_workload(live, models):
    url, service, _, _ = live
    model = models["redline-saturation.json"]
    job_var = model["templating"]["list"][0]["query"]
    metric = re.match(r"label_values\((\w+), job\)", job_var).group(1)
    with httpx.Client(base_url=url, timeout=10) as http:
        jobs = http.get("/api/v1/label/job/values", params={"match[]": metric}).json()["data"]
    assert service in jobs


@pytest.mark.stack
@pytest.mark.slow
def test_render_png_from_live_data(live, tmp_path):
    url, service, _, _ = live
    png = tmp_path / "knee.png"
    assert main(["dashboards", "--config", str(CONFIG), "--render-png", str(png),
                 "--prometheus", url, "--range", "3m"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert json.loads((DASHBOARDS / "redline-saturation.json").read_text())["uid"]
