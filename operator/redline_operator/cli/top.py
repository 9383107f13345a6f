"""``redline top``: live concurrency, thresholds and tail latency per target.

Usage::

    redline top --prometheus http://127.0.0.1:9090 [--config redline.yaml] [--interval 2]
"""

from __future__ import annotations

import argparse
import logging
import sys

from redline.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "top", help="live view of concurrency vs saturation per target",
        description="Live view: per target of redline.yaml, calls in flight against the warn, "
                    "page and saturation levels, headroom, p95/p99 latency, p95 TTFT and "
                    "retries per second, read from Prometheus. Ctrl-C quits.")
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus URL")
    p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="redline.yaml path")
    p.add_argument("--interval", type=float, default=2.0, help="refresh seconds (default 2)")
    p.add_argument("--window", default="1m", help="rate window of quantiles (default 1m)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per query is noise
    from rich.console import Console

    from redline_operator.promql import PrometheusClient
    from redline_operator.top import run_top

    if not 0 < args.interval <= 3600:
        raise CliError(f"--interval must be between 0 and 3600 seconds, got {args.interval}")
    if not args.prometheus.startswith(("http://", "https://")):
        raise CliError(f"--prometheus {args.prometheus!r}: expected an http:// or https:// URL")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    # A pipe or file gets the full table rather than rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    with PrometheusClient(args.prometheus) as prom:
        return run_top(prom, cfg, interval=args.interval, window=args.window,
                       console=console, frames=1 if args.once else None)
