"""The ``redline`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
args, returning an exit code). Modules are discovered, so adding a command never touches
this file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import redline_operator.cli as _pkg

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """An error the user can act on: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redline",
        description="Concurrency, tail latency and saturation telemetry for LLM services.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"{_pkg.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # one line per HTTP request drowns the output the user asked for
        for noisy in ("httpx", "httpx2", "httpcore", "openai", "anthropic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"redline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the user named: say which and why
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"redline {args.command}: error: {where}{exc.strerror or exc}; nothing was "
              f"changed", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"redline {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
