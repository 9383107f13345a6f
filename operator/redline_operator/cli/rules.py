"""``redline rules``: generate alert rules, promtool tests, runbooks and Alertmanager config.

Usage::

    redline rules                      # write alerts/ and compose/alertmanager.yml
    redline rules --check              # exit 1 with a diff if the committed files drift
    redline rules --check-targets --prometheus http://127.0.0.1:9090
    redline rules --render-secrets     # *_env pager secrets -> pager.secrets_dir files
    redline rules --reload             # and make the running stack load them
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
        "rules", help="generate Prometheus alert rules and Alertmanager config",
        description="Generate alerts/*.rules.yml, their promtool tests, runbooks and "
                    "Alertmanager configs from redline.yaml.")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                   help="redline config (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="alerts directory (default: alerts/ next to the config)")
    p.add_argument("--compose-out", type=Path, default=None,
                   help="compose Alertmanager config (default: compose/alertmanager.yml "
                        "next to the config)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 with a diff if the files on disk differ")
    p.add_argument("--check-targets", action="store_true",
                   help="ask Prometheus whether every target's match selects any series")
    p.add_argument("--prometheus", default="http://127.0.0.1:9090",
                   help="Prometheus URL for --check-targets (default: %(default)s)")
    p.add_argument("--reload", action="store_true",
                   help="after writing, POST /-/reload to --prometheus and --alertmanager")
    p.add_argument("--alertmanager", default="http://127.0.0.1:9093",
                   help="Alertmanager URL for --reload (default: %(default)s)")
    p.add_argument("--render-secrets", nargs="?", const="", default=None, metavar="DIR",
                   help="write *_env pager secrets from the environment into DIR "
                        "(default: pager.secrets_dir) for the native Alertmanager")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from redline_operator.alerts import diff_files, generate, write_files

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    base = args.config.parent
    alerts_dir = args.out if args.out is not None else base / "alerts"
    compose = args.compose_out if args.compose_out is not None else (
        base / "compose" / "alertmanager.yml")
    files = generate(cfg, source=args.config.name, alerts_dir=str(alerts_dir),
                     compose_file=str(compose))
    if args.render_secrets is not None:
        return _render_secrets(cfg, args)
    if args.check_targets:
        return _check_targets(cfg, args)
    if args.check:
        diff = diff_files(files, alerts_dir)
        if diff:
            sys.stdout.write(diff)
            print(f"redline rules: generated files differ from {args.config}; "
                  f"run `redline rules` and commit the result", file=sys.stderr)
            return 1
        print(f"redline rules: {len(files)} generated files match {args.config}")
        return 0
    try:
        changed, removed = write_files(files, alerts_dir)
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror}; nothing was "
                       "changed") from None
    for path in changed:
        print(f"wrote {path}")
    for path in removed:
        print(f"removed {path} (no longer generated)")
    if not changed and not removed:
        print(f"redline rules: {len(files)} files up to date")
    if args.reload:
        _reload(args.prometheus, args.alertmanager)
    return 0


def _reload(*urls: str) -> None:
    import httpx

    for url in urls:
        try:
            httpx.post(f"{url.rstrip('/')}/-/reload", timeout=10).raise_for_status()
        except httpx.HTTPError as exc:
            raise CliError(f"files written, but {url} did not reload: {exc}") from None
        print(f"reloaded {url}")


def _check_targets(cfg, args) -> int:
    from redline_operator.alerts.targets import unmatched_targets
    from redline_operator.promql import PrometheusError

    try:
        problems = unmatched_targets(cfg, args.prometheus, source=str(args.config))
    except PrometheusError as exc:
        raise CliError(str(exc)) from None
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"redline rules: every target in {args.config} matches series in {args.prometheus}")
    return 0


def _render_secrets(cfg, args) -> int:
    from redline_operator.alerts import render_secrets
    from redline_operator.alerts.alertmanager import SecretsError

    try:
        written = render_secrets(cfg, args.render_secrets or None)
    except KeyError as exc:
        raise CliError(f"{args.config}: pager receivers read secrets from environment "
                       f"variables that are not set: {exc.args[0]}") from None
    except SecretsError as exc:
        raise CliError(f"{args.config}: key pager.secrets_dir: {exc}") from None
    for path in written:
        print(f"wrote {path} (mode 0600)")
    return 0
