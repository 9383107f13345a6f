"""``redline plan``: from the knee to a capacity plan (seed notes 000 and 004).

Usage::

    redline plan --results sweep-out/results.json --baseline-rps 25 --peak-rps 80
    redline plan --prometheus http://127.0.0.1:9090 --window 1h     # live throughput,
                                                                   # 7-day traffic
    redline plan --results sweep-out/results.json --peak-users 400 --think-time 20 \\
        --baseline-rps 5 --json
    redline plan ... --write        # store throughput and replica counts in redline.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan", help="concurrency target, throughput and min/max replicas per target",
        description="Turn the knee into a capacity plan: the concurrency target per replica "
                    "(planning.target_fraction of the knee), the throughput one replica "
                    "serves there (from a sweep's results.json or live Prometheus data), "
                    "and min/max replicas for your traffic, each with its formula.")
    src = p.add_argument_group("throughput per replica (one of)")
    src.add_argument("--results", type=Path, metavar="FILE",
                     help="a sweep's results.json (one endpoint: one target)")
    src.add_argument("--prometheus", metavar="URL",
                     help="Prometheus: live throughput (without --results), 7-day traffic "
                          "and the numbers now")
    src.add_argument("--window", default="1h",
                     help="live throughput: how far back to look (default 1h)")
    src.add_argument("--step", default="5s", help="live throughput: resolution (default 5s)")
    src.add_argument("--rate-window", default="1m",
                     help="live throughput: rate window, >= 4 scrapes (default 1m)")
    tr = p.add_argument_group("traffic")
    tr.add_argument("--baseline-rps", type=float, metavar="RPS", help="baseline request rate")
    tr.add_argument("--peak-rps", type=float, metavar="RPS", help="peak request rate")
    tr.add_argument("--peak-users", type=float, metavar="N",
                    help="peak concurrent users (instead of --peak-rps)")
    tr.add_argument("--think-time", type=float, default=0.0, metavar="S",
                    help="seconds a user waits between a reply and the next request")
    tr.add_argument("--latency", type=float, metavar="S",
                    help="mean latency at the target, if the source has none")
    tr.add_argument("--traffic-window", default="7d",
                    help="with --prometheus, traffic not given is read over this window: "
                         "baseline = median, peak = max of the request rate (default 7d)")
    tr.add_argument("--traffic-rate-window", default="5m",
                    help="rate window of that request rate (default 5m)")
    p.add_argument("--config", type=Path, default=Path("redline.yaml"),
                   help="redline.yaml (default ./redline.yaml)")
    p.add_argument("--target", help="plan only this target")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--write", action="store_true",
                   help="write throughput_per_replica_rps, min_replicas and max_replicas "
                        "into targets[].planning of --config (for `redline autoscaling`)")
    p.set_defaults(func=run)


def _durations(args: argparse.Namespace) -> dict[str, float]:
    from redline.config import duration_seconds

    out = {}
    for flag in ("window", "step", "rate_window", "traffic_window", "traffic_rate_window"):
        try:
            out[flag] = duration_seconds(getattr(args, flag))
        except (AttributeError, KeyError):
            raise CliError(f"--{flag.replace('_', '-')} {getattr(args, flag)!r}: expected a "
                           f"Prometheus duration like 90s, 10m, 7d") from None
    return out


def _targets(args: argparse.Namespace, cfg) -> list:
    from redline.config import ConfigError

    if args.target:
        try:
            return [cfg.target(args.target)]
        except ConfigError as exc:
            raise CliError(f"{args.config}: {exc}") from None
    if args.results and len(cfg.targets) > 1:
        raise CliError(f"--results is one sweep of one endpoint; pass --target NAME (one "
                       f"of {[t.name for t in cfg.targets]} in {args.config})")
    return list(cfg.targets)


def _plans(args: argparse.Namespace, cfg, prom) -> list:
    from redline_operator import promql
    from redline_operator.plan import (
        TrafficInput,
        build_plan,
        now_from_prometheus,
        throughput_from_prometheus,
        throughput_from_results,
        traffic_from_prometheus,
    )

    secs = _durations(args)
    plans = []
    for target in _targets(args, cfg):
        sel = promql.target_matchers(target.match)
        at = target.concurrency_target
        if args.results:
            measured = throughput_from_results(args.results, at)
        else:
            measured = throughput_from_prometheus(prom, sel, at, window_s=secs["window"],
                                                  step_s=secs["step"],
                                                  rate_window=args.rate_window)
        baseline, peak, source = args.baseline_rps, args.peak_rps, "command line"
        if prom is not None and (baseline is None or (peak is None and args.peak_users is None)):
            rw = args.traffic_rate_window
            resolution = f"{max(1, int(secs['traffic_rate_window'] // 5))}s"
            traffic = traffic_from_prometheus(prom, sel, window=args.traffic_window,
                                              rate_window=rw, resolution=resolution)
            if baseline is None:
                baseline = traffic.baseline_rps
            if peak is None and args.peak_users is None:
                peak = traffic.peak_rps
            source = traffic.source
        plan = build_plan(target, measured, TrafficInput(
            baseline_rps=baseline, peak_rps=peak, peak_users=args.peak_users,
            think_time_s=args.think_time, latency_s=args.latency, source=source),
            now=now_from_prometheus(prom, sel) if prom is not None else None)
        plans.append(plan)
    return plans


def run(args: argparse.Namespace) -> int:
    from redline.config import ConfigError, load_config
    from redline_operator.plan import PlanError
    from redline_operator.promql import PrometheusClient, PrometheusError

    if not args.results and not args.prometheus:
        raise CliError("give --results FILE (a sweep's results.json) or --prometheus URL")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    prom = PrometheusClient(args.prometheus) if args.prometheus else None
    try:
        plans = _plans(args, cfg, prom)
    except (PlanError, PrometheusError) as exc:
        raise CliError(str(exc)) from None
    finally:
        if prom is not None:
            prom.close()
    _print(plans, args.json)
    if args.write:
        from redline_operator.plan.write import write_plan

        for plan in plans:
            try:
                write_plan(args.config, plan)
            except ConfigError as exc:
                raise CliError(str(exc)) from None
            print(f"{args.config}: targets[{plan.target}].planning: throughput_per_replica_rps "
                  f"{plan.throughput_per_replica_rps:.2f}, min_replicas {plan.min_replicas}, "
                  f"max_replicas {plan.max_replicas}; run `redline autoscaling`",
                  file=sys.stderr if args.json else sys.stdout)
    return 0


def _print(plans: list, as_json: bool) -> None:
    from rich.console import Console

    from redline_operator.plan.render import plan_json, plan_table

    if as_json:
        sys.stdout.write(plan_json(plans))
        return
    console = Console(width=140)
    for plan in plans:
        console.print(plan_table(plan))
        console.print(plan.sentence())
        for note in plan.notes:
            console.print(f"note: {note}")
