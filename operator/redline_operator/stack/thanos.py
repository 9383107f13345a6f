"""The scale-out backend: Thanos receivers, query and ruler in place of one Prometheus.

``redline stack up --backend thanos`` runs, on loopback:

* two **Thanos receivers** in one hashring with replication factor 2 (every series is
  stored on both; with RF 2 Thanos needs one successful write, so either receiver may be
  down without losing a sample);
* a **Thanos query** in front of them (and of the ruler), on the port Prometheus would
  use (9090), deduplicating the two replicas by their ``receive_replica`` label, so
  ``redline top``, ``redline knee --prometheus`` and dashboards work unchanged;
* a **Thanos ruler** evaluating the generated ``alerts/*.rules.yml`` through the query
  and sending to the same Alertmanager as the Prometheus backend;
* the same Collector binary with ``collector/thanos.yaml``: OTLP in, Prometheus remote
  write out to *both* receivers (each is an ingress, as behind a Kubernetes Service), so
  the loss of one receiver loses no sample. Exponential histograms go out as native
  histograms (remote write 1.0 carries them) and are stored as such.

Thanos is built from its own module, v0.42.4, as a main module (its ``go.mod`` has
``replace`` directives, which ``go install module@version`` refuses): the module is
downloaded with ``go mod download -json``, its directory copied out of the read-only
module cache into ``.cache/build/thanos-src`` and ``go build ./cmd/thanos`` run there.

Example::

    from redline_operator.stack import Stack

    with Stack(backend="thanos") as stack:
        stack.query("sum(redline_client_requests_total)")   # answered by Thanos query
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from redline_operator.stack.build import (
    COLLECTOR_BINARY,
    BuildError,
    BuildResult,
    _run,
    _stamp_ok,
    _write_stamp,
    binary_path,
)
from redline_operator.stack.components import Component, alertmanager_config
from redline_operator.stack.ports import HOST, Ports

__all__ = [
    "BACKENDS",
    "resolve_backend",
    "record_backend",
    "forget_backend",
    "THANOS_MODULE",
    "THANOS_VERSION",
    "THANOS_BINARY",
    "REPLICA_LABEL",
    "ThanosPorts",
    "build_thanos",
    "wait_wired",
    "components",
]

BACKENDS = ("prometheus", "thanos")
THANOS_MODULE = "github.com/thanos-io/thanos"
#: Newest release whose whole module graph the public proxy serves (go 1.26.0).
THANOS_VERSION = "v0.42.4"
THANOS_BINARY = "thanos"
#: Thanos' own release build tags (.promu.yml). ``slicelabels`` is not optional: Thanos
#: converts label sets with unsafe casts that assume Prometheus' slice layout, and a
#: build without it panics in the first store-API call (labels.decodeSize out of range).
THANOS_TAGS = "netgo,slicelabels"
#: External label telling the receivers' copies apart; Thanos query deduplicates on it.
REPLICA_LABEL = "receive_replica"
RECEIVERS = 2
REPLICATION_FACTOR = 2
_DEFAULT_PAGER_URL = "http://127.0.0.1:9096/alerts"


@dataclass(frozen=True)
class ThanosPorts:
    """The Thanos processes' loopback ports (the query's HTTP port is ``Ports.prometheus``).

    Each moves with ``REDLINE_THANOS_<FIELD>_PORT``.
    """

    query_grpc: int = 10901
    receive0_http: int = 10909
    receive0_grpc: int = 10907
    receive0_write: int = 19291
    receive0_capnp: int = 19391
    receive1_http: int = 10919
    receive1_grpc: int = 10917
    receive1_write: int = 19292
    receive1_capnp: int = 19392
    rule_http: int = 10929
    rule_grpc: int = 10927

    @staticmethod
    def env_var(field_name: str) -> str:
        return f"REDLINE_THANOS_{field_name.upper()}_PORT"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ThanosPorts:
        """Defaults, overridden by ``REDLINE_THANOS_<FIELD>_PORT``.

        Raises:
            ValueError: A variable is not an integer in 1..65535 (the message names it).
        """
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(cls.env_var(f.name))
            if not raw:
                continue
            port = int(raw) if raw.isdigit() else -1
            if not 1 <= port <= 65535:
                raise ValueError(
                    f"{cls.env_var(f.name)}={raw!r} is not a port; expected an integer 1..65535")
            values[f.name] = port
        return cls(**values)


# --- which backend ------------------------------------------------------------------------

def _backend_file(state: Path) -> Path:
    return state / "backend"


def resolve_backend(backend: str | None, state: Path) -> str:
    """``backend``, else the one ``up`` recorded in ``state`` (until ``down``), else
    ``"prometheus"``.

    Raises:
        ValueError: an unknown backend name.
    """
    if backend is None:
        recorded = _backend_file(state)
        backend = (recorded.read_text(encoding="utf-8").strip() if recorded.is_file()
                   else BACKENDS[0])
    if backend not in BACKENDS:
        raise ValueError(f"unknown stack backend {backend!r}; expected one of {BACKENDS}")
    return backend


def record_backend(state: Path, backend: str) -> None:
    _backend_file(state).write_text(backend + "\n", encoding="utf-8")


def forget_backend(state: Path) -> None:
    _backend_file(state).unlink(missing_ok=True)


def wait_wired(query_url: str, timeout: float = 30.0) -> None:
    """Wait until Thanos query has found every receiver and the ruler (it checks its
    endpoints every 5 s, so ``/-/ready`` comes before it can answer for all of them).

    Raises:
        TimeoutError: not wired within ``timeout`` (the message lists what it sees).
    """
    import httpx

    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        try:
            seen = httpx.get(f"{query_url}/api/v1/stores", timeout=5).json().get("data", {})
        except (httpx.HTTPError, ValueError):
            seen = {}
        healthy = {k: [e for e in v if not e.get("lastError")] for k, v in seen.items()}
        if len(healthy.get("receive", [])) == RECEIVERS and healthy.get("rule"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Thanos query at {query_url} did not find {RECEIVERS} receivers and "
                       f"the ruler within {timeout:.0f}s; it sees {seen}")


# --- build --------------------------------------------------------------------------------

def build_thanos(root: Path, go: str, env: dict[str, str]) -> BuildResult:
    """Build ``.cache/bin/thanos`` from its module unless the stamp says it is current.

    Raises:
        BuildError: the download or the build failed (with the log's tail).
    """
    binary = binary_path(root, THANOS_BINARY)
    spec = f"{THANOS_MODULE}@{THANOS_VERSION}"
    stamp = f"{spec} main-module build of ./cmd/thanos tags={THANOS_TAGS} {go}"
    if _stamp_ok(binary, stamp):
        return BuildResult(THANOS_BINARY, "up to date", 0.0, stamp)
    start = time.monotonic()
    build_dir = root / ".cache" / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["go", "mod", "download", "-json", spec], cwd=build_dir, env=env,
                          capture_output=True, text=True, check=False)
    try:
        module_dir = Path(json.loads(proc.stdout)["Dir"])
    except (ValueError, KeyError):
        raise BuildError(f"`go mod download -json {spec}` failed (exit {proc.returncode}): "
                         f"{(proc.stdout + proc.stderr).strip()[-2000:]}") from None
    src = build_dir / "thanos-src"
    shutil.rmtree(src, ignore_errors=True)
    # The module cache is read-only; a copy of the module is a main module whose go.mod
    # replace directives apply (its dependencies still come from the module proxy).
    shutil.copytree(module_dir, src)
    for path in (src, *src.rglob("*")):
        path.chmod(path.stat().st_mode | 0o200)
    release = THANOS_VERSION.lstrip("v")
    pkg = "github.com/prometheus/common/version"
    tmp = binary.with_name(binary.name + ".tmp")
    build_env = dict(env, GOWORK="off")
    ldflags = f"-X {pkg}.Version={release} -X {pkg}.Revision={THANOS_VERSION}"
    _run(["go", "build", "-tags", THANOS_TAGS, f"-ldflags={ldflags}", "-o", str(tmp),
          "./cmd/thanos"],
         cwd=src, env=build_env, log=build_dir / "thanos.log", what=f"Thanos {THANOS_VERSION}")
    tmp.replace(binary)
    _write_stamp(binary, stamp)
    return BuildResult(THANOS_BINARY, "built", time.monotonic() - start, stamp)


# --- processes ----------------------------------------------------------------------------

def _hashring(state: Path, tp: ThanosPorts) -> Path:
    """One hashring over both receivers' gRPC (replication) endpoints."""
    path = state / "thanos-hashring.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    endpoints = [f"{HOST}:{getattr(tp, f'receive{i}_grpc')}" for i in range(RECEIVERS)]
    path.write_text(json.dumps([{"hashring": "default", "endpoints": endpoints}]) + "\n",
                    encoding="utf-8")
    return path


def alertmanager_config_for(root: Path, state: Path, ports: Ports) -> Path:
    """The generated Alertmanager config, with the pager URL moved to ``ports.pager``."""
    path = alertmanager_config(root, state, ports)
    if not path.is_file():  # a stack on moved ports renders it at `up`; here, ahead of that
        from redline_operator.stack.configs import render_all

        render_all(root, state, ports)
    if ports.pager == Ports().pager:
        return path
    rendered = state / "alertmanager-moved-pager.yml"
    rendered.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8").replace(
        _DEFAULT_PAGER_URL, f"http://{HOST}:{ports.pager}/alerts")
    rendered.write_text(text, encoding="utf-8")
    return rendered


def _receiver(i: int, thanos: Path, state: Path, tp: ThanosPorts, ring: Path) -> Component:
    http, grpc, write, capnp = (getattr(tp, f"receive{i}_{k}")
                                for k in ("http", "grpc", "write", "capnp"))
    data = state / f"thanos-receive-{i}-data"
    return Component(
        name=f"thanos-receive-{i}",
        argv=[str(thanos), "receive",
              f"--tsdb.path={data}", "--tsdb.retention=2d",
              # the Collector retries a failed batch for up to 60 s (as for Prometheus)
              "--tsdb.out-of-order.time-window=5m",
              f"--http-address={HOST}:{http}", f"--grpc-address={HOST}:{grpc}",
              f"--remote-write.address={HOST}:{write}",
              # Cap'n Proto replication listener (unused with the protobuf protocol,
              # but it binds all interfaces unless told otherwise)
              f"--receive.capnproto-address={HOST}:{capnp}",
              f"--receive.hashrings-file={ring}", f"--receive.local-endpoint={HOST}:{grpc}",
              f"--receive.replication-factor={REPLICATION_FACTOR}",
              f'--label={REPLICA_LABEL}="{i}"'],
        ports=tuple(f"receive{i}_{k}" for k in ("http", "grpc", "write", "capnp")),
        ready_url=f"http://{HOST}:{http}/-/ready",
        marker=f"--tsdb.path={data}", binary=thanos, data_dir=data)


def components(root: Path, state: Path, ports: Ports, bin_dir: Path | None = None,
               tp: ThanosPorts | None = None) -> list[Component]:
    """The Thanos topology's processes in start order (downstream first).

    The pager and Alertmanager are the Prometheus backend's; the Collector is the same
    binary with ``collector/thanos.yaml``.
    """
    from redline_operator.stack.components import components as prometheus_components

    tp = tp or ThanosPorts.from_env()
    base = {c.name: c for c in prometheus_components(root, state, ports, bin_dir)}

    def binary(name: str) -> Path:
        return (bin_dir / name) if bin_dir else binary_path(root, name)

    thanos = binary(THANOS_BINARY)
    ring = _hashring(state, tp)
    am = base["alertmanager"]
    am = Component(am.name, [a if not a.startswith("--config.file=") else
                             f"--config.file={alertmanager_config_for(root, state, ports)}"
                             for a in am.argv], am.ports, am.ready_url, am.marker, am.env,
                   am.binary, am.data_dir)
    receivers = [_receiver(i, thanos, state, tp, ring) for i in range(RECEIVERS)]
    rule_data = state / "thanos-rule-data"
    query_url = f"http://{HOST}:{ports.prometheus}"
    query = Component(
        name="thanos-query",
        argv=[str(thanos), "query", f"--http-address={HOST}:{ports.prometheus}",
              f"--grpc-address={HOST}:{tp.query_grpc}",
              *(f"--endpoint={HOST}:{getattr(tp, f'receive{i}_grpc')}" for i in range(RECEIVERS)),
              f"--endpoint={HOST}:{tp.rule_grpc}",
              f"--query.replica-label={REPLICA_LABEL}"],
        ports=("prometheus", "query_grpc"), ready_url=f"{query_url}/-/ready",
        marker=f"--grpc-address={HOST}:{tp.query_grpc}", binary=thanos)
    rule = Component(
        name="thanos-rule",
        argv=[str(thanos), "rule", f"--data-dir={rule_data}",
              f"--rule-file={root / 'alerts' / '*.rules.yml'}",
              "--eval-interval=5s", f"--query={query_url}",
              f"--alertmanagers.url=http://{HOST}:{ports.alertmanager}",
              f"--http-address={HOST}:{tp.rule_http}", f"--grpc-address={HOST}:{tp.rule_grpc}",
              '--label=rule_replica="0"'],
        ports=("rule_http", "rule_grpc"), ready_url=f"http://{HOST}:{tp.rule_http}/-/ready",
        marker=f"--data-dir={rule_data}", binary=thanos, data_dir=rule_data)
    col = base["collector"]
    config = root / "collector" / "thanos.yaml"
    collector = Component(
        col.name, [str(binary(COLLECTOR_BINARY)), f"--config=file:{config}"],
        col.ports, col.ready_url, col.marker,
        {**col.env, **{f"REDLINE_THANOS_RECEIVE_{i}_URL":
                       f"http://{HOST}:{getattr(tp, f'receive{i}_write')}/api/v1/receive"
                       for i in range(RECEIVERS)}},
        col.binary)
    return [base["pager"], am, *receivers, query, rule, collector]
