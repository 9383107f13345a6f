"""The native stack: real Collector, Prometheus, Alertmanager and pager on loopback."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from conftest import free_ports, isolated_stack
from redline_operator.cli.main import main
from redline_operator.stack import Ports, Stack, StackError
from redline_operator.stack.build import COLLECTOR_BINARY
from redline_operator.stack.pager import TOKEN_HEADER, PagerServer

# -- no binaries needed ----------------------------------------------------------------


def test_missing_binary_is_named_and_nothing_starts(repo_root: Path, tmp_path: Path) -> None:
    stack = Stack(repo_root, ports=free_ports(), state_dir=tmp_path / "state", bin_dir=tmp_path)
    with pytest.raises(StackError, match=r"alertmanager binary not found at .*redline stack build"):
        stack.up()
    # The binary check runs before anything starts: not even the pager (first) has a pid file.
    assert not list((tmp_path / "state").glob("*.pid"))
    assert all(row.pid is None for row in stack.status())


def test_bad_port_variable_names_it(repo_root: Path) -> None:
    with pytest.raises(ValueError, match="REDLINE_PROMETHEUS_PORT='nine' is not a port"):
        Ports.from_env({"REDLINE_PROMETHEUS_PORT": "nine"})
    assert Ports.from_env({"REDLINE_PAGER_PORT": "19096"}).pager == 19096


def test_pager_records_and_returns_webhooks(tmp_path: Path) -> None:
    import threading

    server = PagerServer(("127.0.0.1", 0), tmp_path / "pages.jsonl")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        payload = {"version": "4", "status": "firing", "alerts": [{"labels": {"alertname": "X"}}]}
        assert httpx.post(url, json=payload).status_code == 200
        assert httpx.post(url, content=b"not json").status_code == 400
        pages = httpx.get(url).json()["pages"]
        assert [p["payload"] for p in pages] == [payload]
        assert abs(pages[0]["received_at"] - time.time()) < 5
        assert (tmp_path / "pages.jsonl").read_text().count("\n") == 1
        token = (tmp_path / "pages.jsonl.token").read_text().strip()
        assert httpx.delete(url, headers={TOKEN_HEADER: token}).status_code == 200
        assert httpx.get(url).json()["pages"] == []
    finally:
        server.shutdown()
        server.server_close()


# -- configs checked by the real binaries ------------------------------------------------


@pytest.mark.stack
def test_collector_config_validates(stack_binaries: Path, repo_root: Path) -> None:
    out = subprocess.run(
        [
            str(stack_binaries / COLLECTOR_BINARY),
            "validate",
            f"--config=file:{repo_root / 'collector' / 'config.yaml'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.stack
def test_collector_validate_rejects_a_broken_config(stack_binaries: Path, tmp_path: Path) -> None:
    # Proves the check above can fail: an exporter that no pipeline build knows.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "receivers: {otlp: {protocols: {http: {}}}}\nexporters: {nosuch: {}}\n"
        "service: {pipelines: {metrics: {receivers: [otlp], exporters: [nosuch]}}}\n"
    )
    out = subprocess.run(
        [str(stack_binaries / COLLECTOR_BINARY), "validate", f"--config=file:{bad}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "nosuch" in out.stderr


@pytest.mark.stack
def test_promtool_checks_prometheus_config(stack_binaries: Path, repo_root: Path) -> None:
    out = subprocess.run(
        [
            str(stack_binaries / "promtool"),
            "check",
            "config",
            str(repo_root / "prometheus" / "prometheus.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.stack
def test_amtool_checks_fallback_alertmanager_config(stack_binaries: Path, repo_root: Path) -> None:
    fallback = (repo_root / "operator" / "redline_operator" / "stack"
                / "alertmanager-fallback.yaml")
    out = subprocess.run(
        [str(stack_binaries / "amtool"), "check-config", str(fallback)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- the running stack -----------------------------------------------------------------


@pytest.mark.stack
def test_all_components_ready(stack: Stack) -> None:
    rows = stack.status()
    assert [r.name for r in rows] == ["pager", "alertmanager", "prometheus", "collector"]
    assert all(r.ready and r.pid for r in rows), rows


@pytest.mark.stack
def test_up_twice_is_a_noop(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    pids = [r.pid for r in stack.status()]
    assert Stack(stack.root, ports=stack.ports).up() is False
    assert main(["stack", "up"]) == 0
    assert "already running" in capsys.readouterr().out
    assert [r.pid for r in stack.status()] == pids


@pytest.mark.stack
def test_cli_status_lists_components(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stack", "status"]) == 0
    out = capsys.readouterr().out
    for name in ("pager", "alertmanager", "prometheus", "collector", "13133", "9090"):
        assert name in out


@pytest.mark.stack
def test_otlp_exponential_histogram_lands_as_native_histogram(stack: Stack) -> None:
    service = f"stack-test-{uuid.uuid4().hex[:8]}"
    exporter = OTLPMetricExporter(endpoint=f"{stack.otlp_endpoint}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": service}),
        views=[
            View(instrument_type=Histogram, aggregation=ExponentialBucketHistogramAggregation())
        ],
    )
    try:
        latency = provider.get_meter("redline.tests").create_histogram(
            "redline.test.latency", unit="s"
        )
        rng = random.Random(7)
        for _ in range(2000):
            latency.record(rng.uniform(0.0, 1.0))
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    selector = f'redline_test_latency_seconds{{job="{service}"}}'
    deadline = time.monotonic() + 20
    series: list = []
    while time.monotonic() < deadline and not series:
        series = stack.query(selector)
        time.sleep(0.25)
    assert series, f"{selector} never reached Prometheus"
    # A native histogram sample carries "histogram", a float sample "value".
    assert "histogram" in series[0], series[0]
    assert float(series[0]["histogram"][1]["count"]) == 2000
    assert not stack.query(f'redline_test_latency_seconds_bucket{{job="{service}"}}')

    p95 = stack.query(f"histogram_quantile(0.95, {selector})")
    assert 0.85 < float(p95[0]["value"][1]) < 1.05, p95


@pytest.mark.stack
def test_alertmanager_delivers_to_the_pager(stack: Stack) -> None:
    alertname = f"RedlineStackTest{uuid.uuid4().hex[:8]}"
    alert = {
        "labels": {"alertname": alertname, "severity": "page", "target": "stack-test"},
        "annotations": {"summary": "posted by tests/test_stack.py"},
    }
    response = httpx.post(f"{stack.alertmanager_url}/api/v2/alerts", json=[alert], timeout=5)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30  # group_wait is 5 s in both configs
    names: list[str] = []
    while time.monotonic() < deadline and alertname not in names:
        time.sleep(0.5)
        names = [
            a["labels"]["alertname"]
            for page in stack.pages()
            for a in (page["payload"] or {}).get("alerts", [])
        ]
    assert alertname in names


@pytest.mark.stack
def test_prometheus_loads_the_rule_files(stack: Stack, repo_root: Path) -> None:
    # Reload first: the stack may have started before the generator wrote the rules.
    reload = httpx.post(f"{stack.prometheus_url}/-/reload", timeout=30)
    assert reload.status_code == 200, reload.text
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]
    loaded = {Path(g["file"]).resolve() for g in groups["groups"]}
    expected = {p.resolve() for p in (repo_root / "alerts").glob("*.rules.yml")}
    assert loaded == expected


# -- separate throwaway stacks on free ports ---------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.stack
@pytest.mark.slow
def test_down_leaves_no_process_behind(stack_binaries: Path, repo_root: Path, tmp_path: Path):
    stack = Stack(repo_root, ports=free_ports(), state_dir=tmp_path / "state")
    assert stack.up() is True
    try:
        pids = [r.pid for r in stack.status()]
        assert all(pids) and all(r.ready for r in stack.status())
    finally:
        assert stack.down() is True
    assert not any(_alive(pid) for pid in pids)
    assert not list((tmp_path / "state").glob("*.pid"))
    assert stack.down() is False  # nothing left to stop


def test_moved_ports_render_self_consistent_configs(repo_root: Path, tmp_path: Path) -> None:
    from redline_operator.stack.configs import render_all

    ports = free_ports()
    prom, am = render_all(repo_root, tmp_path, ports)
    text = prom.read_text()
    for moved in (ports.prometheus, ports.alertmanager, ports.collector_metrics, ports.sim):
        assert f"127.0.0.1:{moved}" in text
    for default in (9090, 9093, 8888, 8000):
        assert f"127.0.0.1:{default}" not in text
    assert f"- {repo_root / 'alerts'}/*.rules.yml" in text  # absolute: the copy lives elsewhere
    assert f"http://127.0.0.1:{ports.pager}/alerts" in am.read_text()
    assert "127.0.0.1:9096" not in am.read_text()
    assert render_all(repo_root, tmp_path / "defaults", Ports()) == []  # committed files


@pytest.mark.stack
@pytest.mark.slow
def test_second_stack_on_free_ports_sees_only_itself(
    stack_binaries: Path, repo_root: Path, tmp_path: Path
) -> None:
    """Every target Prometheus scrapes and alerts is on the moved ports, and is up."""
    with isolated_stack(repo_root, tmp_path) as two:
        p = two.ports
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = {r["metric"]["job"]: r["value"][1] for r in two.query("up")}
            if all(up.get(j) == "1" for j in ("prometheus", "otelcol", "alertmanager")):
                break
            time.sleep(1)
        assert all(up.get(j) == "1" for j in ("prometheus", "otelcol", "alertmanager")), up
        targets = httpx.get(f"{two.prometheus_url}/api/v1/targets", timeout=10).json()
        scraped = {t["labels"]["job"]: t["scrapeUrl"] for t in targets["data"]["activeTargets"]}
        assert scraped["sim"] == f"http://127.0.0.1:{p.sim}/metrics"
        ams = httpx.get(f"{two.prometheus_url}/api/v1/alertmanagers", timeout=10).json()
        assert [a["url"] for a in ams["data"]["activeAlertmanagers"]] == [
            f"http://127.0.0.1:{p.alertmanager}/api/v2/alerts"]
        # its Alertmanager posts to its own pager
        alertname = f"SecondStack{uuid.uuid4().hex[:8]}"
        httpx.post(f"{two.alertmanager_url}/api/v2/alerts", timeout=5, json=[{
            "labels": {"alertname": alertname, "severity": "page", "target": "two"}}]
        ).raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {a["labels"]["alertname"] for page in two.pages()
                     for a in page["payload"]["alerts"]}
            if alertname in names:
                break
            time.sleep(0.5)
        assert alertname in names


@pytest.mark.stack
@pytest.mark.slow
def test_taken_port_is_named_and_nothing_is_left_half_started(
    stack_binaries: Path, repo_root: Path, tmp_path: Path
) -> None:
    ports = free_ports()
    stack = Stack(repo_root, ports=ports, state_dir=tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports.collector_health))
        squatter.listen()
        with pytest.raises(StackError) as err:
            stack.up()
    assert str(err.value) == (
        f"port {ports.collector_health} (collector) is already in use by another process; "
        "stop it or set REDLINE_COLLECTOR_HEALTH_PORT"
    )
    assert all(r.pid is None for r in stack.status())


@pytest.mark.stack
@pytest.mark.slow
def test_failed_start_stops_what_was_started(
    stack_binaries: Path, repo_root: Path, tmp_path: Path
) -> None:
    # Every port is free at the preflight check, but Prometheus exits at start because
    # its WAL directory is a file: pager and Alertmanager are up by then and must be
    # stopped again.
    state = tmp_path / "state"
    (state / "prometheus-data").mkdir(parents=True)
    (state / "prometheus-data" / "wal").write_text("a file where a directory must be")
    stack = Stack(repo_root, ports=free_ports(), state_dir=state, ready_timeout=15)
    with pytest.raises(StackError, match="prometheus exited with code"):
        stack.up()
    assert all(r.pid is None for r in stack.status())
    assert not list(state.glob("*.pid"))


def test_cli_reports_missing_binary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A checkout without built binaries: a copy of the two config files is enough.
    for rel in ("collector/manifest.yaml", "collector/config.yaml", "prometheus/prometheus.yml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((Path(__file__).parent.parent / rel).read_text())
    env = {**os.environ, "REDLINE_ROOT": str(tmp_path)}
    ports = free_ports()
    for f in fields(Ports):
        env[Ports.env_var(f.name)] = str(getattr(ports, f.name))
    out = subprocess.run(
        [str(Path(sys.executable).with_name("redline")), "stack", "up"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 2
    assert "alertmanager binary not found" in out.stderr
    assert "Traceback" not in out.stderr
