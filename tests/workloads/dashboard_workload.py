"""The compose demo workload (compose/workload.py) as a test app: as docker compose labels
it, and with a limiter when asked.

Usage::

    python dashboard_workload.py --url http://127.0.0.1:8000 --slots 4 --step-seconds 1.5 \\
        [--resolve sim] [--limiter-config redline.yaml]

``--resolve HOST``: HOST resolves to 127.0.0.1 in this process only (a named fake: a
one-entry DNS standing in for compose's network, where the sim is reached by its service
name). The real openai client then calls ``http://HOST:PORT`` and redline reports
``server.address=HOST``, exactly as the compose workload's series are labelled.
``--limiter-config``: route the calls through ``redline.Limiter`` configured from that
``redline.yaml`` (its targets with ``limiter.enabled``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import redline
from redline.limiter import wiring

ROOT = Path(__file__).resolve().parents[2]


def _fake_dns(host: str) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(name, *args, **kwargs):
        plain = name.decode() if isinstance(name, bytes) else name  # anyio passes idna bytes
        return real("127.0.0.1" if plain == host else name, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=1.5)
    parser.add_argument("--resolve")
    parser.add_argument("--limiter-config")
    args = parser.parse_args()
    if args.resolve:
        _fake_dns(args.resolve)
    spec = importlib.util.spec_from_file_location("workload", ROOT / "compose" / "workload.py")
    workload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workload)
    # The demo's agent loop ends at the first failed call; a test of panels wants the whole
    # ramp, so this app lets the SDK retry a sim 429 more often than the demo does.
    real_client = workload.openai.AsyncOpenAI

    def client(**kwargs):
        return real_client(**{**kwargs, "max_retries": 8})

    workload.openai = SimpleNamespace(AsyncOpenAI=client)
    settings = workload.DemoSettings(slots=args.slots, step_seconds=args.step_seconds)
    redline.configure_telemetry()
    redline.instrument()
    if args.limiter_config:
        wiring.configure(config=args.limiter_config)
    try:
        asyncio.run(workload.ramp(args.url, settings, cycles=1))
    finally:
        redline.shutdown_telemetry()


if __name__ == "__main__":
    sys.exit(main())
