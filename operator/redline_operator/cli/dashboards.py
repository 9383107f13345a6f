"""``redline dashboards``: generate the Grafana dashboards from ``redline.yaml``.

Usage::

    redline dashboards                      # write dashboards/*.json
    redline dashboards --check              # exit 1 with a diff if the committed files drift
    redline dashboards --render-png docs/img/concurrency-vs-p95.png \\
        --prometheus http://127.0.0.1:9090  # draw the lead view from live data
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from redline.config import DEFAULT_CONFIG_PATH, ConfigError, duration_seconds, load_config
from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboards", help="generate Grafana dashboards from redline.yaml",
        description="Generate the Grafana dashboards (dashboards/*.json) from redline.yaml.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="redline.yaml path")
    p.add_argument("--out", default="dashboards", help="output folder (default: dashboards)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and print a diff if the files differ")
    p.add_argument("--render-png", metavar="PATH",
                   help="draw concurrency vs p95 from live Prometheus data into PATH")
    p.add_argument("--prometheus", default="http://127.0.0.1:9090",
                   help="Prometheus URL for --render-png")
    p.add_argument("--target", help="target for --render-png (default: the first)")
    p.add_argument("--range", default="15m", help="time range for --render-png (default 15m)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per query is noise
    from redline_operator.dashboards import build_dashboards, check_dashboards, write_dashboards

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.render_png:
        return _render(args, cfg)
    models = build_dashboards(cfg)
    if args.check:
        diff = check_dashboards(models, args.out)
        if diff:
            sys.stdout.write(diff)
            print(f"redline dashboards: {args.out}/ differs from {args.config}; "
                  "run `redline dashboards` and commit the result", file=sys.stderr)
            return 1
        print(f"{args.out}/: {len(models)} dashboards up to date")
        return 0
    changed = write_dashboards(models, args.out)
    for name in sorted(models):
        state = "written" if Path(args.out) / name in changed else "unchanged"
        print(f"{Path(args.out) / name}: {state}")
    return 0


def _render(args: argparse.Namespace, cfg) -> int:
    from redline_operator.dashboards.render import fetch_knee, render_png
    from redline_operator.promql import PrometheusClient, PrometheusError

    try:
        target = cfg.target(args.target) if args.target else cfg.targets[0]
    except ConfigError as exc:
        raise CliError(f"--target: {exc} in {args.config}") from None
    try:
        seconds = duration_seconds(args.range)
    except ValueError:
        raise CliError(f"--range {args.range!r}: expected a duration like 90s, 15m") from None
    try:
        with PrometheusClient(args.prometheus) as prom:
            picture = fetch_knee(prom, cfg, target, seconds=seconds)
        path = render_png(picture, target, args.render_png)
    except (PrometheusError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"{path}: written")
    return 0
