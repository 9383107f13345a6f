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
    p.add_argument("--engine", choices=("sim", "vllm"), default="sim",
                   help="the server to saturate: `redline sim` (default) or the managed "
                        "vLLM CPU server (`make vllm` installs it)")
    p.add_argument("--engine-url", metavar="URL",
                   help="with --engine vllm: use this running vLLM (http://host:port) "
                        "instead of starting one")
    p.add_argument("--target", default=None,
                   help="target in redline.yaml whose threshold the table shows "
                        "(default: sim, or vllm with --engine vllm)")
    p.add_argument("--slots", type=int, default=None,
                   help="sim slots, or vLLM's --max-num-seqs (default: 16 sim, 4 vllm)")
    p.add_argument("--sim-port", type=int, default=None,
                   help="port of the sim (default: $REDLINE_SIM_PORT or 8000, where "
                        "Prometheus scrapes it)")
    p.add_argument("--step-seconds", type=float, default=12.0,
                   help="measured seconds per concurrency step (default: %(default)s)")
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    p.add_argument("--levels", help="comma-separated agent counts instead of the ramp")
    p.add_argument("--workload", choices=("manual", "openai-agents"), default="manual",
                   help="manual: redline.agent_session/tool_call around the openai SDK; "
                        "openai-agents: a real OpenAI Agents SDK agent with a tool, "
                        "auto-instrumented (needs openai-agents; default: %(default)s)")
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

    vllm = args.engine == "vllm"
    if args.engine_url and not vllm:
        raise CliError("--engine-url needs --engine vllm")
    try:
        target = load_config(args.config).target(
            args.target or ("vllm" if vllm else DEFAULT_TARGET))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    from redline_operator.engines.vllm import SERVED_MODEL

    try:
        stack = Stack()
    except StackError as exc:
        raise CliError(str(exc)) from None
    _export_to(stack)
    sim_port = args.sim_port if args.sim_port is not None else stack.ports.sim
    settings = DemoSettings(slots=args.slots or (4 if vllm else 16), sim_port=sim_port,
                            engine=args.engine, engine_url=args.engine_url,
                            model=SERVED_MODEL if vllm else "sim-model",
                            step_seconds=args.step_seconds, warmup_seconds=args.warmup_seconds,
                            levels=_levels(args.levels), workload=args.workload)
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
