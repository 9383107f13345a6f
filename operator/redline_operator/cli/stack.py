"""``redline stack build|up|down|status``: the native Collector/Prometheus/Alertmanager stack.

Examples::

    redline stack build     # go install / ocb into .cache/bin; skips what is up to date
    redline stack up        # start on loopback, wait until ready, return
    redline stack status    # table: component, pid, ports, ready
    redline stack down      # stop what `up` started
"""

from __future__ import annotations

import argparse
import logging
import time

from rich.console import Console
from rich.table import Table

from redline_operator.cli.main import CliError
from redline_operator.stack import Stack, StackError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="build and run the native Collector, Prometheus and Alertmanager",
        description="Build and run the native OTLP -> Collector -> Prometheus -> "
        "Alertmanager stack on loopback. State, logs and pid files live in .cache/stack/.",
    )
    sub = parser.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build missing binaries into .cache/bin (idempotent)")
    build.add_argument("--backend", choices=("prometheus", "thanos"), default="prometheus",
                       help="thanos: also build Thanos v0.42.4 (cold: ~12 min on 2 cores)")
    build.set_defaults(func=_build)
    up = sub.add_parser("up", help="start the stack and wait until every part is ready")
    up.add_argument(
        "--timeout", type=float, default=30.0, help="seconds each component gets to be ready"
    )
    up.add_argument(
        "--backend", choices=("prometheus", "thanos"), default="prometheus",
        help="prometheus: one Prometheus (default); thanos: 2 Thanos receivers (hashring, "
        "replication factor 2), Thanos query on the Prometheus port, Thanos ruler")
    up.set_defaults(func=_up)
    sub.add_parser("down", help="stop what `redline stack up` started").set_defaults(func=_down)
    sub.add_parser("status", help="show each component's pid, ports and readiness").set_defaults(
        func=_status
    )
    clean = sub.add_parser("clean", help="delete stored data (TSDB, pages); stack must be down")
    clean.set_defaults(func=_clean)


def _stack(args: argparse.Namespace) -> Stack:
    # Readiness probes are httpx requests; one INFO line each would bury the output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return Stack(ready_timeout=getattr(args, "timeout", 30.0),
                     backend=getattr(args, "backend", None))
    except StackError as exc:
        raise CliError(str(exc)) from None


def _build(args: argparse.Namespace) -> int:
    stack = _stack(args)
    console = Console()
    start = time.monotonic()
    try:
        for result in stack.build(on_start=lambda name: console.print(f"checking {name} ...")):
            # The stamp's tail is the Go version, the same on every line: drop it.
            pin = result.stamp.split(" go version ")[0]
            if result.action == "built":
                console.print(f"  built {result.name} in {result.seconds:.1f}s: {pin}")
            else:
                console.print(f"  {result.name} up to date: {pin}")
    except StackError as exc:
        raise CliError(str(exc)) from None
    console.print(f"build done in {time.monotonic() - start:.1f}s")
    return 0


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    console = Console()
    start = time.monotonic()
    try:
        started = stack.up(log=console.print)
    except StackError as exc:
        raise CliError(str(exc)) from None
    if started and stack.backend == "thanos":
        from redline_operator.stack.thanos import wait_wired

        try:
            wait_wired(stack.prometheus_url, timeout=args.timeout)
        except TimeoutError as exc:
            raise CliError(str(exc)) from None
    if started:
        console.print(f"stack up in {time.monotonic() - start:.1f}s")
        console.print(f"  OTLP/HTTP {stack.otlp_endpoint}  OTLP/gRPC {stack.otlp_grpc_endpoint}")
        api = "Thanos query" if stack.backend == "thanos" else "Prometheus"
        console.print(f"  {api} {stack.prometheus_url}  Alertmanager {stack.alertmanager_url}")
        console.print(f"  pager {stack.pager_url}/alerts -> {stack.pages_file}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    console = Console()
    if not stack.down(log=console.print):
        console.print("stack was not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Print the table; exit 1 when any component is not ready (usable in scripts)."""
    stack = _stack(args)
    rows = stack.status()
    table = Table(title=f"redline stack ({stack.state_dir})")
    for column in ("component", "pid", "port", "ready"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            str(row.pid) if row.pid else "-",
            ", ".join(str(p) for p in row.ports),
            "[green]yes[/green]" if row.ready else "[red]no[/red]",
        )
    Console().print(table)
    return 0 if all(row.ready for row in rows) else 1


def _clean(args: argparse.Namespace) -> int:
    stack = _stack(args)
    try:
        stack.clean()
    except StackError as exc:
        raise CliError(str(exc)) from None
    Console().print(f"removed {stack.state_dir}")
    return 0
