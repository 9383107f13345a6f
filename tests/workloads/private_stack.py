"""A throwaway stack of the tests' own: free ports, its own data, pages to its own pager.

Tests that kill parts of the stack, or that must know nobody else drives target ``sim``,
start one of these instead of sharing the session's stack (STYLE: tests own their world).
Prometheus gets a rendered copy of ``prometheus/prometheus.yml`` whose rules are the
committed ones and whose Alertmanager is the private one.
"""

from __future__ import annotations

import socket
from dataclasses import fields, replace
from pathlib import Path

from ruamel.yaml import YAML

from redline_operator.stack import Ports, Stack
from redline_operator.stack.thanos import ThanosPorts, alertmanager_config_for


def _free(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class PrivateStack(Stack):
    """``Stack`` on free ports under ``state_dir``; ``backend`` as for ``Stack``."""

    def __init__(self, root: Path, state_dir: Path, backend: str = "prometheus") -> None:
        nums = _free(len(fields(Ports)) + len(fields(ThanosPorts)))
        super().__init__(root, ports=Ports(*nums[:len(fields(Ports))]), state_dir=state_dir,
                         backend=backend)
        self.thanos_ports = ThanosPorts(*nums[len(fields(Ports)):])

    def _prometheus_yml(self) -> Path:
        yaml = YAML(typ="safe")
        cfg = yaml.load((self.root / "prometheus" / "prometheus.yml").read_text())
        cfg["rule_files"] = [str(self.root / "alerts" / "*.rules.yml")]
        cfg["alerting"]["alertmanagers"][0]["static_configs"] = [
            {"targets": [f"127.0.0.1:{self.ports.alertmanager}"]}]
        cfg["scrape_configs"] = []
        out = self.state_dir / "prometheus.yml"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as f:
            yaml.dump(cfg, f)
        return out

    def components(self):
        out = []
        for c in super().components():
            if c.name == "prometheus":
                c = replace(c, argv=[f"--config.file={self._prometheus_yml()}"
                                     if a.startswith("--config.file=") else a for a in c.argv])
            elif c.name == "alertmanager":
                am = alertmanager_config_for(self.root, self.state_dir, self.ports)
                c = replace(c, argv=[f"--config.file={am}" if a.startswith("--config.file=")
                                     else a for a in c.argv])
            out.append(c)
        return out
