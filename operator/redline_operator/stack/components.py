"""The four processes of the native stack and how each is started.

Started downstream first (pager, Alertmanager, Prometheus, Collector) so that nothing
logs export errors against a peer that is still booting; stopped in reverse, so the
Collector flushes its last batch into a Prometheus that is still there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from redline_operator.stack.build import COLLECTOR_BINARY, binary_path
from redline_operator.stack.configs import alertmanager_config, prometheus_config
from redline_operator.stack.ports import HOST, Ports

__all__ = ["Component", "components", "alertmanager_config", "prometheus_config"]


@dataclass(frozen=True)
class Component:
    """One process of the stack.

    Attributes:
        name: Short name (pid file, log file, status table).
        argv: Full command line.
        ports: Port field names of Ports this process listens on.
        ready_url: Answers 200 once the process is ready.
        marker: Substring of the command line that identifies the process.
        env: Extra environment variables.
        binary: Path of the executable to check before starting (None: the interpreter).
        data_dir: Directory created before start.
    """

    name: str
    argv: list[str]
    ports: tuple[str, ...]
    ready_url: str
    marker: str
    env: dict[str, str] = field(default_factory=dict)
    binary: Path | None = None
    data_dir: Path | None = None


def components(
    root: Path, state: Path, ports: Ports, bin_dir: Path | None = None
) -> list[Component]:
    """The stack's processes in start order.

    Args:
        root: Repository root (configs live under it).
        state: ``.cache/stack``: pid files, logs, data directories (and, when ports are
            moved, the configs rendered for them: see redline_operator.stack.configs).
        ports: Where each process listens.
        bin_dir: Where the Go binaries are (default ``<root>/.cache/bin``).
    """

    def binary(name: str) -> Path:
        return (bin_dir / name) if bin_dir else binary_path(root, name)

    prom_data = state / "prometheus-data"
    am_data = state / "alertmanager-data"
    prometheus = binary("prometheus")
    alertmanager = binary("alertmanager")
    collector = binary(COLLECTOR_BINARY)
    return [
        Component(
            name="pager",
            argv=[
                sys.executable,
                "-m",
                "redline_operator.stack.pager",
                "--host",
                HOST,
                "--port",
                str(ports.pager),
                "--out",
                str(state / "pages.jsonl"),
            ],
            ports=("pager",),
            ready_url=f"http://{HOST}:{ports.pager}/-/ready",
            marker="redline_operator.stack.pager",
        ),
        Component(
            name="alertmanager",
            argv=[
                str(alertmanager),
                f"--config.file={alertmanager_config(root, state, ports)}",
                f"--storage.path={am_data}",
                f"--web.listen-address={HOST}:{ports.alertmanager}",
                # A single local instance: no gossip port, no peers to wait for.
                "--cluster.listen-address=",
            ],
            ports=("alertmanager",),
            ready_url=f"http://{HOST}:{ports.alertmanager}/-/ready",
            marker=str(alertmanager),
            binary=alertmanager,
            data_dir=am_data,
        ),
        Component(
            name="prometheus",
            argv=[
                str(prometheus),
                f"--config.file={prometheus_config(root, state, ports)}",
                f"--storage.tsdb.path={prom_data}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={HOST}:{ports.prometheus}",
                "--web.enable-otlp-receiver",
                # `redline rules` reloads the rules with POST /-/reload, no restart.
                "--web.enable-lifecycle",
            ],
            ports=("prometheus",),
            ready_url=f"http://{HOST}:{ports.prometheus}/-/ready",
            marker=str(prometheus),
            binary=prometheus,
            data_dir=prom_data,
        ),
        Component(
            name="collector",
            argv=[str(collector), f"--config=file:{root / 'collector' / 'config.yaml'}"],
            ports=("collector_grpc", "collector_http", "collector_health", "collector_metrics"),
            ready_url=f"http://{HOST}:{ports.collector_health}/",
            marker=str(collector),
            env={
                "REDLINE_PROMETHEUS_OTLP_ENDPOINT": f"http://{HOST}:{ports.prometheus}/api/v1/otlp",
                "REDLINE_COLLECTOR_GRPC_ENDPOINT": f"{HOST}:{ports.collector_grpc}",
                "REDLINE_COLLECTOR_HTTP_ENDPOINT": f"{HOST}:{ports.collector_http}",
                "REDLINE_COLLECTOR_HEALTH_ENDPOINT": f"{HOST}:{ports.collector_health}",
                "REDLINE_COLLECTOR_METRICS_PORT": str(ports.collector_metrics),
            },
            binary=collector,
        ),
    ]


def child_env(component: Component) -> dict[str, str]:
    """The environment a component runs with: ours plus its own settings."""
    env = dict(os.environ)
    env.update(component.env)
    return env
