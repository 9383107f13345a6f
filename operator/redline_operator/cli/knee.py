"""``redline knee``: estimate the knee from live Prometheus data (no load is generated).

Usage::

    redline knee --prometheus http://127.0.0.1:9090 --config redline.yaml --target sim \\
        --window 6h
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "knee", help="estimate the knee from live data in Prometheus",
        description="Read in-flight concurrency and p95 latency over a window from "
                    "Prometheus (query_range), group by concurrency level and find the knee "
                    "of p95 vs concurrency with the same Kneedle method as `redline sweep`.")
    p.add_argument("--prometheus", required=True, metavar="URL",
                   help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--window", default="1h",
                   help="how far back to look, a Prometheus duration (default 1h)")
    p.add_argument("--step", default="15s", help="query_range resolution (default 15s)")
    p.add_argument("--rate-window", default="1m",
                   help="window of the p95's rate(); at least 4 scrape intervals (default 1m)")
    p.add_argument("--min-samples", type=int, default=3,
                   help="samples a concurrency level needs to count (default 3)")
    p.add_argument("--config", type=Path, default=Path("redline.yaml"),
                   help="redline.yaml whose target selects the series (default ./redline.yaml)")
    p.add_argument("--target", help="target name: its match block becomes the selector")
    p.add_argument("--selector", help="PromQL label selector body instead of --target, "
                                      'e.g. \'job="agent"\'')
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument("--write-threshold", action="store_true",
                   help="write the knee to targets[TARGET].saturation_concurrency")
    p.set_defaults(func=run)


def _selector(args: argparse.Namespace) -> str:
    from redline.config import ConfigError, load_config
    from redline_operator.promql import target_matchers

    if args.selector is not None:
        return args.selector
    if not args.target:
        if args.write_threshold:
            raise CliError("--write-threshold needs --target NAME")
        return ""
    try:
        match = load_config(args.config).target(args.target).match
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return target_matchers(match)


def run(args: argparse.Namespace) -> int:
    from redline.config import ConfigError, duration_seconds
    from redline_operator.promql import PrometheusClient, PrometheusError
    from redline_operator.sweep.live import estimate_live_knee

    try:
        window_s, step_s = duration_seconds(args.window), duration_seconds(args.step)
        duration_seconds(args.rate_window)
    except ValueError:
        raise CliError("--window, --step and --rate-window take Prometheus durations like "
                       "90s, 10m, 6h") from None
    if args.write_threshold and not args.target:
        raise CliError("--write-threshold needs --target NAME")
    if not 1 <= args.min_samples <= 1_000_000:
        raise CliError(f"--min-samples must be between 1 and 1000000, got {args.min_samples}")
    if window_s <= 0 or step_s <= 0 or window_s / step_s > 11_000:
        raise CliError(f"--window {args.window} / --step {args.step}: both must be positive "
                       "and give at most 11000 points (Prometheus' query_range limit)")
    sel = _selector(args)
    try:
        with PrometheusClient(args.prometheus) as prom:
            est = estimate_live_knee(prom, window_s=window_s, step_s=step_s,
                                     rate_window=args.rate_window, sel=sel,
                                     min_samples=args.min_samples)
    except PrometheusError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump(est.to_dict(), sys.stdout, indent=2)
        print()
    else:
        for level, p95, thr, n in zip(est.levels, est.p95, est.throughput, est.samples,
                                      strict=True):
            print(f"  concurrency {level:>5}: p95 {p95:.3f} s  {thr:8.2f} req/s  ({n} samples)")
        print(f"knee (saturation_concurrency): {'none' if est.knee is None else f'{est.knee:g}'}")
        if est.note:
            print(f"note: {est.note}")
    if args.write_threshold:
        if est.knee is None:
            raise CliError(f"no knee found, so {args.config} was not changed: {est.note}")
        from redline_operator.sweep.yaml_update import write_saturation

        try:
            old = write_saturation(args.config, args.target, est.knee)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        print(f"{args.config}: targets[{args.target}].saturation_concurrency {old} -> "
              f"{est.knee:g}")
    return 0
