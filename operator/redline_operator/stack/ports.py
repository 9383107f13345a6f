"""The loopback ports of the native stack, and whether they are free.

The defaults are the ones the committed configs carry (collector/config.yaml,
prometheus/prometheus.yml, the pager URL in alerts/alertmanager.yml). Each can be moved
with an environment variable, e.g. ``REDLINE_PROMETHEUS_PORT=19090``, or by passing a
``Ports`` to ``Stack``. A stack on moved ports is self-consistent: the Collector follows
them through its own ``${env:...}`` settings, which the stack sets for it, and
Prometheus and Alertmanager run with copies of their configs rendered for them
(:mod:`redline_operator.stack.configs`): scrape and alerting targets, the pager's
webhook. Two stacks on disjoint ports and state directories never see each other.

``sim`` is not a port the stack listens on: it is where Prometheus scrapes the demo's
simulated server (``redline demo`` starts it there).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = ["HOST", "Ports", "PortInUseError", "check_free"]

#: Everything binds to loopback only: nothing of the stack is reachable from outside.
HOST = "127.0.0.1"


class PortInUseError(Exception):
    """A port the stack needs is taken by a process the stack did not start."""


@dataclass(frozen=True)
class Ports:
    """Loopback ports, one field per listening socket.

    Example::

        ports = Ports.from_env()        # defaults, moved by REDLINE_*_PORT variables
        ports.prometheus                # 9090
    """

    prometheus: int = 9090
    alertmanager: int = 9093
    pager: int = 9096
    collector_grpc: int = 4317
    collector_http: int = 4318
    collector_health: int = 13133
    collector_metrics: int = 8888
    #: scraped, not owned: the demo's simulated inference server
    sim: int = 8000

    @staticmethod
    def env_var(field_name: str) -> str:
        """The environment variable that moves the port ``field_name``."""
        return f"REDLINE_{field_name.upper()}_PORT"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """Defaults, overridden by ``REDLINE_<FIELD>_PORT`` variables.

        Raises:
            ValueError: A variable is not an integer in 1..65535 (the message names it).
        """
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for f in fields(cls):
            raw = environ.get(cls.env_var(f.name))
            if raw is None or raw == "":
                continue
            try:
                port = int(raw)
            except ValueError:
                port = -1
            if not 1 <= port <= 65535:
                raise ValueError(
                    f"{cls.env_var(f.name)}={raw!r} is not a port; expected an integer 1..65535"
                )
            values[f.name] = port
        return cls(**values)


def check_free(port: int, owner: str, env_var: str) -> None:
    """Raise PortInUseError when ``port`` on loopback cannot be bound.

    SO_REUSEADDR mirrors what the Go servers do, so a socket lingering in TIME_WAIT
    from a previous run is not mistaken for a live listener.

    Args:
        port: TCP port on 127.0.0.1.
        owner: The component that needs it, for the message.
        env_var: The variable that moves it, for the message.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUseError(
                f"port {port} ({owner}) is already in use by another process; "
                f"stop it or set {env_var}"
            ) from None
