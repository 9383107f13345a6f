"""Start and steer ``replica.py`` processes (a fleet of instrumented app replicas)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("replica.py")


class Replica:
    """One app process exporting to ``endpoint`` (OTLP/gRPC) as ``service``.

    Args:
        endpoint: OTLP/gRPC endpoint of the Collector.
        service: ``service.name`` (the ``job`` label).
        export_ms: export interval; default redline's own (5 s).
    """

    def __init__(self, endpoint: str, service: str, export_ms: int | None = None) -> None:
        env = dict(os.environ, OTEL_SERVICE_NAME=service, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
        env.pop("OTEL_METRIC_EXPORT_INTERVAL", None)
        if export_ms is not None:
            env["OTEL_METRIC_EXPORT_INTERVAL"] = str(export_ms)
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def send(self, line: str) -> float:
        """Send a command; returns the unix time at which it took effect."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply and reply[0] == "ok", f"replica answered {reply!r} to {line!r}"
        return float(reply[1])

    def finish(self, how: str = "stop", timeout: float = 60) -> dict:
        """``stop`` (clean shutdown), ``exit`` (shut down with calls held) or ``quit``."""
        self.proc.stdin.write(how + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=timeout)
        return out

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last export."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
