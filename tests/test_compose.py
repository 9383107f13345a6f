"""compose/docker-compose.yml: checked without an engine, and brought up where one runs.

Without Docker the file is parsed and its promises checked (pinned images that match the
native stack's versions, loopback-only ports, mounts that exist, the Collector fed the
same config with compose hostnames, no default Grafana password), and the configs it
mounts go through the real ``promtool``. With an engine, testcontainers' ``DockerCompose``
starts the stack and Grafana's HTTP API must list the provisioned dashboards and answer
a panel query through the provisioned datasource.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from redline.config import load_config
from redline_operator.dashboards import DATASOURCE_UID, build_dashboards
from redline_operator.dashboards.queries import substitute

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
CORE = ("otel-collector", "prometheus", "alertmanager", "grafana")
GENERATED_BY_RULES = {COMPOSE_DIR / "alertmanager.yml"}  # written by `redline rules`


def load(path: Path):
    return YAML(typ="safe").load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


def image_tag(compose: dict, service: str) -> str:
    return compose["services"][service]["image"].rsplit(":", 1)[1]


def test_every_image_is_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith((":latest", ":main")), f"{name}: {image} is not pinned"


def test_versions_match_the_native_stack(compose):
    from redline_operator.stack.build import COLLECTOR_VERSION, TOOLS

    manifest = load(ROOT / "collector/manifest.yaml")
    assert image_tag(compose, "otel-collector") == manifest["dist"]["version"]
    assert f"v{image_tag(compose, 'otel-collector')}" == COLLECTOR_VERSION
    versions = {t.name: t.version for t in TOOLS}
    # Prometheus' Go module tags 3.x releases as v0.3xx.y: v0.316.0 is 3.16.0.
    minor, patch = re.fullmatch(r"v0\.3(\d\d)\.(\d+)", versions["prometheus"]).groups()
    assert image_tag(compose, "prometheus") == f"v3.{int(minor)}.{patch}"
    assert image_tag(compose, "alertmanager") == versions["alertmanager"]
    assert re.fullmatch(r"11\.6\.\d+", image_tag(compose, "grafana"))


def test_ports_bind_to_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not loopback-only"


def test_bind_mounts_exist(compose):
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                continue  # a named volume
            path = (COMPOSE_DIR / source).resolve()
            if path in GENERATED_BY_RULES and not path.exists():
                pytest.fail(f"{name}: {source} is missing: run `redline rules`")
            assert path.exists(), f"{name}: mount source {source} does not exist"


def test_collector_runs_the_shared_config_with_compose_addresses(compose):
    svc = compose["services"]["otel-collector"]
    assert "../collector/config.yaml:/etc/otelcol/config.yaml:ro" in svc["volumes"]
    config = (ROOT / "collector/config.yaml").read_text()
    env = svc["environment"]
    assert env["REDLINE_PROMETHEUS_OTLP_ENDPOINT"] == "http://prometheus:9090/api/v1/otlp"
    for var in ("REDLINE_PROMETHEUS_OTLP_ENDPOINT", "REDLINE_COLLECTOR_GRPC_ENDPOINT",
                "REDLINE_COLLECTOR_HTTP_ENDPOINT"):
        assert f"${{env:{var}:-" in config, f"collector/config.yaml no longer reads {var}"
    assert env["REDLINE_COLLECTOR_GRPC_ENDPOINT"].startswith("0.0.0.0:")


def test_prometheus_gets_otlp_rules_and_compose_hostnames(compose):
    svc = compose["services"]["prometheus"]
    assert "--web.enable-otlp-receiver" in svc["command"]
    assert "../alerts:/etc/alerts:ro" in svc["volumes"]
    prom = load(COMPOSE_DIR / "prometheus.yml")
    assert prom["rule_files"] == ["../alerts/*.rules.yml"]  # /etc/prometheus/../alerts
    native = load(ROOT / "prometheus/prometheus.yml")
    assert prom["otlp"] == {k: v for k, v in native["otlp"].items()}
    services = set(compose["services"]) | {"localhost"}
    for job in prom["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            assert target.split(":")[0] in services, f"{job['job_name']}: {target}"
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]


def test_grafana_password_is_required_and_provisioning_is_mounted(compose):
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    ds = load(ROOT / "dashboards/provisioning/datasources/redline.yaml")["datasources"]
    prom = next(d for d in ds if d["type"] == "prometheus")
    assert prom["uid"] == DATASOURCE_UID
    assert prom["url"] == "http://prometheus:9090"


def test_profiles(compose):
    profiles = {n: s.get("profiles", []) for n, s in compose["services"].items()}
    assert all(profiles[n] == [] for n in CORE)
    assert profiles["sim"] == ["demo"] and profiles["workload"] == ["demo"]
    assert profiles["dcgm-exporter"] == ["gpu"]
    assert (COMPOSE_DIR / compose["services"]["sim"]["build"]["dockerfile"].split("/")[-1]).exists()


@pytest.mark.stack
def test_compose_prometheus_config_passes_promtool():
    """The real promtool reads compose/prometheus.yml and the rules it loads."""
    promtool = ROOT / ".cache/bin/promtool"
    if not promtool.exists():
        pytest.skip("promtool is not built: run `make stack`")
    result = subprocess.run([str(promtool), "check", "config",
                             str(COMPOSE_DIR / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    amtool = ROOT / ".cache/bin/amtool"
    if amtool.exists():
        result = subprocess.run(
            [str(amtool), "check-config", str(COMPOSE_DIR / "alertmanager.yml")],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def _docker_engine() -> str | None:
    """Why Docker cannot be used here, or None when an engine and compose v2 answer."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode != 0:
        return "no Docker engine is running (`docker info` fails)"
    if subprocess.run(["docker", "compose", "version"], capture_output=True,
                      timeout=20).returncode != 0:
        return "the docker compose v2 plugin is not installed"
    return None


def test_docker_compose_config_resolves():
    """`docker compose config` needs no engine, only the compose plugin."""
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=20).returncode:
        pytest.skip("the docker compose v2 plugin is not installed")
    env = dict(os.environ, GRAFANA_ADMIN_PASSWORD="x")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    env.pop("GRAFANA_ADMIN_PASSWORD")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_stack_up_grafana_serves_provisioned_dashboards(monkeypatch):
    reason = _docker_engine()
    if reason:
        pytest.skip(f"{reason}; the compose stack cannot be started here")
    from testcontainers.compose import DockerCompose

    password = "redline-test-password"
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", password)
    with DockerCompose(str(COMPOSE_DIR), compose_file_name="docker-compose.yml",
                       wait=False) as stack:
        grafana = httpx.Client(base_url="http://127.0.0.1:3000", auth=("admin", password),
                               timeout=10)
        deadline = time.monotonic() + 180
        titles: set[str] = set()
        while time.monotonic() < deadline:
            try:
                found = grafana.get("/api/search", params={"folderUIDs": "redline"}).json()
                titles = {d["title"] for d in found} if isinstance(found, list) else set()
            except httpx.HTTPError:
                pass
            if {"redline / saturation", "redline / capacity"} <= titles:
                break
            time.sleep(2)
        assert {"redline / saturation", "redline / capacity"} <= titles, stack.get_logs()
        ds = grafana.get(f"/api/datasources/uid/{DATASOURCE_UID}").json()
        assert ds["url"] == "http://prometheus:9090"
        # A panel query as Grafana sends it: the lead panel's saturation level, with the
        # dashboard variables filled in as the browser would.
        model = build_dashboards(load_config(ROOT / "redline.yaml"))["redline-saturation.json"]
        target = next(t for t in model["panels"][1]["targets"] if t["legendFormat"] == "saturation")
        chosen = model["templating"]["list"][2]["current"]["value"]
        now = int(time.time() * 1000)
        body = {"from": str(now - 300_000), "to": str(now), "queries": [{
            "refId": "A", "datasource": target["datasource"], "instant": True,
            "expr": substitute(target["expr"], target=chosen, rate_interval="1m")}]}
        answer = grafana.post("/api/ds/query", json=body)
        assert answer.status_code == 200, answer.text
        frames = answer.json()["results"]["A"]["frames"]
        assert frames and frames[0]["data"]["values"], "the panel query returned no data"
