"""``redline demo``: the main job — an instrumented agent workload pushed past the knee."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from redline.config import ConfigError, load_config
from redline_operator.cli.main import CliError

DEFAULT_TARGET = "sim"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="start the native stack and the sim, ramp an agent workload past the knee",
        description="Starts the native stack (Collector, Prometheus, Alertmanager, pager) "
                    "if it is not running, starts `redline sim`, ramps concurrent agents "
                    "from 1 to about twice the sim's slots and prints what Prometheus "
                    "reports per step. The stack stays up afterwards (`redline stack down`).")
    p.add_argument("--config", default="redline.yaml", help="redline.yaml (default: %(default)s)")
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="target in redline.yaml whose threshold the table shows")
    p.add_argument("--slots", type=int, default=16, help="sim slots (default: %(default)s)")
    p.add_argument("--sim-port", type=int, default=None,
                   help="port of the sim (default: $REDLINE_SIM_PORT or 8000, where "
                        "Prometheus scrapes it)")
    p.add_argument("--step-seconds", type=float, default=12.0,
                   help="measured seconds per concurrency step (default: %(default)s)")
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    p.add_argument("--levels", help="comma-separated agent counts instead of the ramp")
    p.add_argument("--no-stack", action="store_true",
                   help="do not start the native stack (use one already running, e.g. compose)")
    p.add_argument("--prometheus", default=None,
                   help="Prometheus URL to read from (default: the native stack's)")
    p.set_defaults(func=_run)


def _levels(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--levels: expected comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise CliError(f"--levels: expected positive integers, got {text!r}")
    return levels


def _export_to(stack) -> None:
    """Unless OTEL_* says otherwise, export to this stack's Collector (its ports may be moved)."""
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        return
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
        stack.otlp_endpoint if protocol.strip().lower().startswith("http")
        else stack.otlp_grpc_endpoint)


def _run(args: argparse.Namespace) -> int:
    from redline_operator.demo import DemoSettings, run_demo
    from redline_operator.stack import Stack, StackError

    try:
        target = load_config(args.config).target(args.target)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        stack = Stack()
    except StackError as exc:
        raise CliError(str(exc)) from None
    _export_to(stack)
    sim_port = args.sim_port if args.sim_port is not None else stack.ports.sim
    settings = DemoSettings(slots=args.slots, sim_port=sim_port,
                            step_seconds=args.step_seconds, warmup_seconds=args.warmup_seconds,
                            levels=_levels(args.levels))
    console = Console()
    prometheus_url = args.prometheus or stack.prometheus_url
    if not args.no_stack:
        try:
            stack.up(log=lambda line: console.print(f"[dim]stack:[/] {line}"))
        except StackError as exc:
            raise CliError(str(exc)) from None
    try:
        run_demo(settings, target, stack.state_dir, prometheus_url, console,
                 pages=stack.pages)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    if not args.no_stack:
        console.print("The stack is still running: `redline stack status`, "
                      f"Prometheus at {stack.prometheus_url}; `redline stack down` stops it.")
    return 0
