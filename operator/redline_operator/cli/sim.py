"""``redline sim``: serve the simulated continuous-batching inference server.

Every :class:`redline_operator.sim.SimConfig` field is a flag of the same name (``slots`` ->
``--slots``, ``decode_base_s`` -> ``--decode-base-s``), so the config stays the one place
that declares knobs, defaults and help.
"""

from __future__ import annotations

import argparse
import types
import typing

import pydantic

from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sim`` parser."""
    from redline_operator.sim.config import SimConfig

    parser = subparsers.add_parser(
        "sim",
        help="run a simulated continuous-batching LLM server (OpenAI + Anthropic APIs)",
        description="Simulated continuous-batching inference server with OpenAI and "
        "Anthropic APIs, fault injection (/sim/faults), a request log (/sim/log) and "
        "vLLM-style /metrics. See docs/sim.md.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    for name, field in SimConfig.model_fields.items():
        kind = _scalar_type(field.annotation)
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=kind, default=None,
            metavar=kind.__name__.upper(),
            help=f"{field.description} (default: {field.default})",
        )
    parser.set_defaults(func=_run, _config_fields=tuple(SimConfig.model_fields))


def _scalar_type(annotation: object) -> type:
    """``int | None`` -> ``int``; the argparse converter of a config field."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    assert isinstance(annotation, type)
    return annotation


def _run(args: argparse.Namespace) -> int:
    from redline_operator.sim.config import SimConfig
    from redline_operator.sim.server import serve

    given = {k: getattr(args, k) for k in args._config_fields if getattr(args, k) is not None}
    try:
        config = SimConfig(**given)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            (f"--{str(e['loc'][0]).replace('_', '-')}: " if e["loc"] else "") + e["msg"]
            for e in exc.errors(include_url=False)
        )
        raise CliError(problems) from None
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be within 0..65535, got {args.port}")
    try:
        serve(config, host=args.host, port=args.port)
    except OSError as exc:
        raise CliError(f"{exc.strerror or exc}; pick another --port or stop what uses it") from None
    return 0
