"""``redline autoscaling``: KEDA ScaledObject, HPA and prometheus-adapter rule from the plan.

Usage::

    redline autoscaling            # write autoscaling/ from redline.yaml (targets[].planning)
    redline autoscaling --check    # exit 1 with a diff if the committed files drift
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redline.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "autoscaling", help="generate KEDA/HPA autoscaler configs from the capacity plan",
        description="Generate autoscaling/<target>.keda.yaml (KEDA ScaledObject), "
                    "autoscaling/<target>.hpa.yaml (HPA on an External metric) and "
                    "autoscaling/prometheus-adapter.yaml for every target with "
                    "planning.autoscale in redline.yaml.")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                   help="redline config (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: autoscaling/ next to the config)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 with a diff if the files on disk differ")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from redline_operator.autoscaling import diff, generate, write

    out = args.out if args.out is not None else args.config.parent / "autoscaling"
    try:
        files = generate(load_config(args.config), source=args.config.name, out_dir=str(out))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.check:
        text = diff(files, out)
        if text:
            sys.stdout.write(text)
            print(f"redline autoscaling: generated files differ from {args.config}; run "
                  f"`redline autoscaling` and commit the result", file=sys.stderr)
            return 1
        print(f"redline autoscaling: {len(files)} generated files match {args.config}")
        return 0
    try:
        changed, removed = write(files, out)
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror}") from None
    for path in changed:
        print(f"wrote {path}")
    for path in removed:
        print(f"removed {path} (no longer generated)")
    if not changed and not removed:
        print(f"redline autoscaling: {len(files)} files up to date")
    return 0
