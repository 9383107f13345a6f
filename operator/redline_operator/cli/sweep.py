"""``redline sweep``: step concurrency up, find the knee, optionally write it to redline.yaml.

Usage::

    redline sweep --base-url http://127.0.0.1:8000/v1 --model sim-model \\
        --max-concurrency 64 --out sweep-out \\
        --config redline.yaml --target sim --write-threshold
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
from pathlib import Path

from redline_operator.cli.main import CliError

__all__ = ["register", "MAX_LEVEL"]

#: One Python process cannot hold more streams in flight and still measure them: past a
#: few thousand the client, not the server, is what saturates (and Ctrl-C slows down).
MAX_LEVEL = 2048
_MAX_LEVELS = 64
#: name -> (lowest, highest, whether the lowest is allowed)
_BOUNDS = {
    "warmup": (0, 3600, True), "ramp": (0, 3600, True), "min_duration": (0, 86400, True),
    "max_step_duration": (0, 86400, False), "request_timeout": (0, 3600, False),
    "p95_explode": (1, 1e6, False),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="benchmark concurrency levels, find the knee, set the threshold",
        description="Closed-loop concurrency sweep against an OpenAI-compatible endpoint: "
                    "measure p50/p95/p99 latency, TTFT, throughput, success and retries at "
                    "each level, find the knee of p95 vs concurrency (Kneedle) and "
                    "optionally write it to targets[NAME].saturation_concurrency.")
    ep = p.add_argument_group("endpoint")
    ep.add_argument("--base-url", required=True, help="API root, e.g. http://host:8000/v1")
    ep.add_argument("--model", required=True, help="model name to request")
    ep.add_argument("--api-key",
                    help="API key. Prefer the OPENAI_API_KEY environment variable (the "
                         "default; else 'unused'): a key given here is visible to every "
                         "user in `ps` for as long as the sweep runs")
    ep.add_argument("--max-retries", type=int, default=2,
                    help="SDK retries per request, as in production (default 2)")
    ep.add_argument("--request-timeout", type=float, default=120.0, metavar="S",
                    help="seconds before a request counts as a timeout (default 120)")
    ep.add_argument("--fixed-length", action="store_true",
                    help="ask for exactly max_tokens output tokens (vLLM's ignore_eos and "
                         "min_tokens); for models that may stop early")
    tel = p.add_argument_group("telemetry (client side against server side)")
    tel.add_argument("--instrument", action="store_true",
                     help="instrument the sweep's client with redline and export over OTLP "
                          "(OTEL_EXPORTER_OTLP_* or 127.0.0.1:4317), service "
                          "$OTEL_SERVICE_NAME or redline-sweep")
    tel.add_argument("--prometheus", metavar="URL",
                     help="after the sweep, read every step back from this Prometheus: "
                          "client in-flight vs server running+waiting, client vs server "
                          "TTFT p95 (needs --instrument and the server scraped there)")
    lv = p.add_argument_group("levels").add_mutually_exclusive_group()
    lv.add_argument("--levels", help="comma-separated concurrency levels, e.g. 1,2,4,8,16")
    lv.add_argument("--max-concurrency", type=int, default=64,
                    help=f"levels 1,2,3,4,6,8,12,... up to this (default 64, at most "
                         f"{MAX_LEVEL})")
    wl = p.add_argument_group("request mix (fixed for every level)")
    wl.add_argument("--mix", type=Path, metavar="FILE",
                    help="JSONL, one request per line: prompt or messages, max_tokens, weight")
    wl.add_argument("--prompt-tokens", default="64", metavar="DIST",
                    help="prompt length: N, LO-HI or A,B,C (default 64)")
    wl.add_argument("--output-tokens", default="16", metavar="DIST",
                    help="max_tokens: N, LO-HI or A,B,C (default 16)")
    wl.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    se = p.add_argument_group(
        "agent sessions (--unit sessions)",
        "Sweep concurrent agent sessions instead of single calls: each session is several "
        "turns (model call, tool call, think time), its prompt growing with the "
        "conversation. The knee is then reported in sessions and in model calls, with the "
        "Little's-law bridge K / duty cycle. See docs/sweep.md.")
    se.add_argument("--unit", choices=("calls", "sessions"), default="calls",
                    help="what a level keeps in flight (default calls)")
    se.add_argument("--sessions", type=Path, metavar="FILE",
                    help="session workload YAML (turns, tool, think_s, ...; default 3 turns, "
                         "0.5 s tool, 1 s think)")
    se.add_argument("--calls-knee", type=float, metavar="K",
                    help="model-call knee of a request-level sweep, to predict the session "
                         "capacity K / duty cycle (default: the knee of this sweep's "
                         "measured calls in flight)")
    st = p.add_argument_group("step length")
    st.add_argument("--warmup", type=float, default=2.0, metavar="S",
                    help="seconds discarded at the start of each step (default 2)")
    st.add_argument("--min-duration", type=float, default=10.0, metavar="S",
                    help="measure each step at least this long (default 10)")
    st.add_argument("--min-requests", type=int, default=50, metavar="N",
                    help="and until this many requests finished (default 50)")
    st.add_argument("--ramp", type=float, default=0.0, metavar="S",
                    help="start each level's new workers spread over S seconds (default 0)")
    st.add_argument("--max-step-duration", type=float, default=120.0, metavar="S",
                    help="end a step after this long whatever the count (default 120)")
    st.add_argument("--min-success", type=float, default=0.5,
                    help="stop the sweep when a step's success rate drops below (default 0.5)")
    st.add_argument("--p95-explode", type=float, default=20.0, metavar="X",
                    help="stop when p95 exceeds X times the first step's (default 20)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("sweep-out"), metavar="DIR",
                     help="results.json, steps.csv, sweep.png go here (default sweep-out)")
    out.add_argument("--config", type=Path, default=Path("redline.yaml"),
                     help="redline.yaml to update (default ./redline.yaml)")
    out.add_argument("--target", help="target name in the config")
    out.add_argument("--write-threshold", action="store_true",
                     help="write the knee to targets[TARGET].saturation_concurrency "
                          "(with --unit sessions: .saturation_sessions)")
    out.add_argument("--no-plot", action="store_true", help="skip sweep.png")
    p.set_defaults(func=run)


def _check_positive(args: argparse.Namespace) -> None:
    for name, (low, high, low_ok) in _BOUNDS.items():
        value = getattr(args, name)
        ok = math.isfinite(value) and (value >= low if low_ok else value > low) and value <= high
        if not ok:
            rel = ">=" if low_ok else ">"
            raise CliError(f"--{name.replace('_', '-')} must be a number {rel} {low:g} and "
                           f"<= {high:g}, got {value}")
    if not 1 <= args.min_requests <= 1_000_000:
        raise CliError(f"--min-requests must be between 1 and 1000000, got {args.min_requests}")
    if not 0 <= args.max_retries <= 10:
        raise CliError(f"--max-retries must be between 0 and 10, got {args.max_retries}")
    if args.calls_knee is not None and not (math.isfinite(args.calls_knee)
                                            and 0 < args.calls_knee <= 1_000_000):
        raise CliError(f"--calls-knee must be a number > 0 and <= 1000000, got "
                       f"{args.calls_knee}")
    if not 1 <= args.max_concurrency <= MAX_LEVEL:
        raise CliError(f"--max-concurrency must be between 1 and {MAX_LEVEL}, got "
                       f"{args.max_concurrency}")
    if not 0 <= args.min_success <= 1:
        raise CliError(f"--min-success must be between 0 and 1, got {args.min_success}")
    if args.unit != "sessions" and (args.sessions or args.calls_knee is not None):
        raise CliError("--sessions and --calls-knee need --unit sessions")
    if args.calls_knee is not None and not (args.calls_knee > 0 and math.isfinite(args.calls_knee)):
        raise CliError(f"--calls-knee must be a number > 0, got {args.calls_knee}")


def _inputs(args: argparse.Namespace):
    from redline_operator.sweep.load import StepPlan, TokenDist, Workload
    from redline_operator.sweep.runner import default_levels, parse_levels

    _check_positive(args)
    try:
        levels = parse_levels(args.levels) if args.levels is not None else default_levels(
            args.max_concurrency)
        if levels[-1] > MAX_LEVEL or len(levels) > _MAX_LEVELS:
            raise ValueError(f"bad --levels {args.levels!r}: at most {_MAX_LEVELS} levels, "
                             f"each at most {MAX_LEVEL}")
        output = TokenDist.parse(args.output_tokens)
        if args.mix:
            workload = Workload.from_file(args.mix, output_tokens=output)
        else:
            workload = Workload(prompt_tokens=TokenDist.parse(args.prompt_tokens),
                                output_tokens=output)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.unit == "sessions":
        from redline_operator.sweep.sessions import SessionWorkload

        try:
            workload = (SessionWorkload.from_file(args.sessions) if args.sessions
                        else SessionWorkload())
        except ValueError as exc:
            raise CliError(str(exc)) from None
    plan = StepPlan(warmup_s=args.warmup, min_duration_s=args.min_duration,
                    min_requests=args.min_requests, max_duration_s=args.max_step_duration,
                    ramp_s=args.ramp)
    return levels, workload, plan


def _check_config(args: argparse.Namespace) -> None:
    """Fail before any load when the threshold could not be written afterwards."""
    if not args.write_threshold:
        return
    from redline.config import ConfigError, load_config

    if not args.target:
        raise CliError("--write-threshold needs --target NAME (a target in "
                       f"{args.config})")
    try:
        load_config(args.config).target(args.target)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if not os.access(args.config.parent if str(args.config.parent) else Path("."), os.W_OK):
        raise CliError(f"{args.config}: its folder is not writable")


def _check_out(out: Path) -> None:
    """Fail before any load when the results could not be saved."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write results there: "
                       f"{exc.strerror or exc}") from None


def _save(result, out: Path, plot: bool) -> dict:
    from redline_operator.sweep.report import write_report

    try:
        return write_report(result, out, plot=plot)
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write results: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    if not args.verbose:  # one INFO line per HTTP request would bury the progress bar
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    levels, workload, plan = _inputs(args)
    _check_config(args)
    if args.prometheus and not args.instrument:
        raise CliError("--prometheus needs --instrument: without it Prometheus has no "
                       "client-side series of this sweep")
    _check_out(args.out)
    if args.api_key:
        print("redline sweep: note: --api-key is visible to other users in `ps`; prefer "
              "OPENAI_API_KEY in the environment", file=sys.stderr)

    from redline_operator.sweep.runner import StopRules, SweepResult

    if args.unit == "sessions":
        described = {"sessions": str(args.sessions) if args.sessions else None,
                     **workload.to_dict(), "seed": args.seed}
    else:
        described = {"mix": str(args.mix) if args.mix else None,
                     "prompt_tokens": args.prompt_tokens,
                     "output_tokens": args.output_tokens, "seed": args.seed}
    result = SweepResult(base_url=args.base_url, model=args.model, levels=levels, plan=plan,
                         workload=described, unit=args.unit, calls_knee=args.calls_knee)
    stop = StopRules(min_success=args.min_success, p95_explode_factor=args.p95_explode)
    windows: list[tuple[int, float, float]] = []
    telemetry = _start_telemetry() if args.instrument else None
    # Ctrl-C is ours only where the shell left SIGINT to us (not in a background job).
    ctrl_c = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    try:
        asyncio.run(_sweep(args, levels, workload, plan, stop, result, windows, ctrl_c))
    except KeyboardInterrupt:  # before the load started (import, preflight)
        return _save_interrupted(args, result)
    finally:
        if telemetry is not None:
            telemetry()
    if args.prometheus:
        result.server_view = _read_back(args, windows, result.steps)
    paths = _save(result, args.out, plot=not args.no_plot)
    _print_summary(result, paths)
    if args.write_threshold:
        _write_threshold(args, result)
    return 0


def _start_telemetry():
    """Instrument the openai SDK and export; returns the function that undoes it."""
    import redline

    redline.configure_telemetry(service_name=os.environ.get("OTEL_SERVICE_NAME",
                                                            "redline-sweep"),
                                export_interval_ms=1000)
    redline.instrument()

    def undo() -> None:
        redline.uninstrument()
        redline.shutdown_telemetry()
    return undo


def _read_back(args: argparse.Namespace, windows: list[tuple[int, float, float]],
               steps: list) -> list:
    """Every step's window read back from Prometheus once the last samples have landed."""
    import time

    from redline_operator.promql import PrometheusClient, PrometheusError, selector
    from redline_operator.sweep.server_view import read_step_view

    time.sleep(7)  # the last OTLP export (1 s) and the next scrape (5 s)
    client_sel = selector(job=os.environ.get("OTEL_SERVICE_NAME", "redline-sweep"),
                          gen_ai_request_model=args.model)
    server_sel = selector(model_name=args.model)
    try:
        with PrometheusClient(args.prometheus) as prom:
            return [read_step_view(prom, start, end, concurrency=c, client_sel=client_sel,
                                   server_sel=server_sel, client_ttft_p95=step.ttft_p95,
                                   client_throughput_rps=step.throughput_rps,
                                   client_latency_mean_s=step.latency_mean,
                                   client_in_flight_records=step.mean_in_flight)
                    for (c, start, end), step in zip(windows, steps, strict=True)]
    except PrometheusError as exc:
        raise CliError(f"--prometheus {args.prometheus}: {exc}") from None


def _save_interrupted(args: argparse.Namespace, result) -> int:
    """Save the finished steps (no plot: drawing it takes seconds); the exit code."""
    result.status = "interrupted"
    try:
        paths = _save(result, args.out, plot=False)
    except CliError as exc:
        print(f"redline sweep: interrupted, and {exc}", file=sys.stderr)
        return 2
    print(f"redline sweep: interrupted; {len(result.steps)} finished step(s) saved to "
          f"{paths['json']} and {paths['csv']} (no plot for an interrupted sweep)",
          file=sys.stderr)
    return 130


def _exit_interrupted(args: argparse.Namespace, result, bar) -> None:
    """SIGINT during the load: save, then exit at once (130; 2 when saving failed).

    Runs as an event-loop signal callback, so no step is half-recorded. The requests in
    flight are cut by the process exit closing their sockets: cancelling them one by one
    instead costs O(n) each in the HTTP pool (O(n^2) in all: about 4 s for 2,000 in
    flight on a busy 2-core machine), and the user asked to stop now.
    """
    bar.stop()  # gives the terminal its cursor back
    code = _save_interrupted(args, result)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


async def _sweep(args, levels, workload, plan, stop, result, windows,
                 ctrl_c: bool = False) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from redline_operator.sweep.load import LoadGenerator, PreflightError
    from redline_operator.sweep.runner import run_sweep
    from redline_operator.sweep.sessions import SessionLoadGenerator, SessionWorkload

    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or "unused"
    common = dict(base_url=args.base_url, api_key=api_key, model=args.model,
                  max_connections=2 * max(levels), max_retries=args.max_retries,
                  request_timeout=args.request_timeout, seed=args.seed,
                  fixed_length=args.fixed_length)
    gen = (SessionLoadGenerator(sessions=workload, **common)
           if isinstance(workload, SessionWorkload) else LoadGenerator(workload=workload, **common))
    async with gen:
        try:
            await gen.preflight()
        except PreflightError as exc:
            raise CliError(str(exc)) from None
        console = Console(stderr=True)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                      transient=False) as bar:
            overall = bar.add_task("sweep", total=len(levels))
            step = bar.add_task("step", total=plan.min_requests)

            def on_level(i: int, level: int) -> None:
                bar.update(overall, completed=i, description=f"sweep (level {level})")
                bar.reset(step, total=plan.min_requests, description=f"C={level} requests")

            def progress(done: int, _elapsed: float) -> None:
                bar.update(step, completed=min(done, plan.min_requests))

            def on_step(r) -> None:
                import time

                end = time.time()
                windows.append((r.steps[-1].concurrency, end - r.steps[-1].duration_s, end))
                bar.update(overall, completed=len(r.steps))
                _save(r, args.out, plot=False)  # a Ctrl-C keeps every finished step

            loop = asyncio.get_running_loop()
            if ctrl_c:
                loop.add_signal_handler(signal.SIGINT, _exit_interrupted, args, result, bar)
            try:
                await run_sweep(gen, levels, plan, stop=stop, result=result, on_step=on_step,
                                on_level=on_level, progress=progress)
            finally:
                if ctrl_c:
                    loop.remove_signal_handler(signal.SIGINT)


def _fmt(v: float, unit: str = "", digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        f"{v:.{digits}g}{unit}"


def _print_summary(result, paths) -> None:
    from rich.console import Console
    from rich.table import Table

    a = result.analysis
    verdicts = {v.concurrency: v for v in a.verdicts}
    t = Table(title=f"redline sweep: {result.model} @ {result.base_url}")
    for col in ("C", "in-flight", "p50", "p95", "p99", "TTFT p95", "req/s", "tok/s",
                "success", "retries/req", "Little err", "verdict"):
        t.add_column(col, justify="right")
    for s in result.steps:
        v = verdicts[s.concurrency]
        t.add_row(str(s.concurrency), _fmt(s.mean_in_flight), _fmt(s.latency_p50, "s"),
                  _fmt(s.latency_p95, "s"), _fmt(s.latency_p99, "s"), _fmt(s.ttft_p95, "s"),
                  _fmt(s.throughput_rps), _fmt(s.tokens_per_s), f"{s.success_rate:.1%}",
                  _fmt(s.retry_rate, digits=2), f"{s.little_rel_error:.1%}",
                  "accept" if v.accepted else "reject: " + "; ".join(v.reasons))
    console = Console(width=160)
    console.print(t)
    if result.stop_reason:
        console.print(f"stopped early: {result.stop_reason}")
    knee = "none" if a.knee is None else f"{a.knee:g}"
    cap = "none" if a.recommended_cap is None else str(a.recommended_cap)
    if result.unit == "sessions":
        _print_sessions(result, console)
        print(f"session knee (saturation_sessions): {knee}")
        print(f"recommended session cap (below the knee, accept rules passed): {cap}")
        if a.note:
            print(f"note: {a.note}")
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    print(f"knee (saturation_concurrency): {knee}")
    print(f"recommended cap (below the knee, accept rules passed): {cap}")
    if a.note:
        print(f"note: {a.note}")
    if result.server_view:
        _print_server_view(result.server_view, console)
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def _print_server_view(views, console) -> None:
    from rich.table import Table

    t = Table(title="client vs server, read back from Prometheus")
    for col in ("C", "client in-flight", "server running", "server waiting",
                "client - server", "outside engine", "client TTFT p95", "server TTFT p95",
                "TTFT gap"):
        t.add_column(col, justify="right")
    for v in views:
        t.add_row(str(v.concurrency), _fmt(v.client_in_flight), _fmt(v.server_running),
                  _fmt(v.server_waiting), _fmt(v.in_flight_gap, digits=2),
                  _fmt(v.outside_engine_in_flight, digits=2),
                  _fmt(v.client_ttft_p95, "s"), _fmt(v.server_ttft_p95, "s"),
                  _fmt(v.ttft_gap_s, "s", 2))
    console.print(t)


def _print_sessions(result, console) -> None:
    from rich.table import Table

    t = Table(title="sessions vs model calls (Little's law: calls in flight = sessions x duty)")
    for col in ("S", "sessions", "calls in flight", "duty", "design duty", "call p95",
                "TTFT p95", "session p95", "sessions/min", "calls/s", "success", "retries"):
        t.add_column(col, justify="right")
    for s in result.steps:
        t.add_row(str(s.concurrency), _fmt(s.sessions_in_flight), _fmt(s.mean_in_flight),
                  _fmt(s.duty_cycle, digits=2), _fmt(s.design_duty_cycle, digits=2),
                  _fmt(s.latency_p95, "s"), _fmt(s.ttft_p95, "s"), _fmt(s.session_p95, "s"),
                  _fmt(s.sessions_per_min), _fmt(s.throughput_rps),
                  f"{s.session_success_rate:.1%}", str(s.retries))
    console.print(t)
    sa = result.session_analysis
    k = "none" if sa.call_knee_used is None else f"{sa.call_knee_used:.3g}"
    print(f"model-call knee: {k} in flight ({sa.call_knee_source})")
    if sa.call_knee_source.startswith("this sweep"):
        print("  (taken from this sweep's own steps, so the prediction below checks little: "
              "pass --calls-knee K from a request-level sweep for an independent one)")
    if sa.predicted_sessions is not None:
        err = "" if sa.prediction_error is None else f", {sa.prediction_error:.0%} from the " \
            "measured session knee"
        print(f"predicted session capacity K / duty cycle = {k} / {sa.duty_cycle:.2f} = "
              f"{sa.predicted_sessions:.3g} sessions{err}")


def _write_threshold(args: argparse.Namespace, result) -> None:
    from redline.config import ConfigError
    from redline_operator.sweep.yaml_update import write_saturation

    knee = result.analysis.knee
    if knee is None:
        raise CliError(f"no knee found, so {args.config} was not changed: "
                       f"{result.analysis.note}")
    key = "saturation_sessions" if result.unit == "sessions" else "saturation_concurrency"
    try:
        old = write_saturation(args.config, args.target, knee, key=key)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    print(f"{args.config}: targets[{args.target}].{key} {old} -> {knee:g}")
