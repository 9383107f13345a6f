"""``redline vllm``: the managed vLLM (CPU build) server, a real engine to sweep and watch.

Usage::

    make vllm                                   # install into .cache/vllm (once)
    redline vllm serve --max-num-seqs 4         # foreground; Ctrl-C stops it
    redline sweep --base-url http://127.0.0.1:PORT/v1 --model redline-vllm --fixed-length
"""

from __future__ import annotations

import argparse
import signal
import threading

from redline_operator.cli.main import CliError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vllm", help="the managed vLLM CPU server (install with `make vllm`)",
        description="Create the random-initialised model vLLM serves, or run vLLM on "
                    "loopback with its /metrics registered in the native Prometheus.")
    cmds = p.add_subparsers(dest="vllm_command", metavar="ACTION", required=True)
    prep = cmds.add_parser("prepare", help="check the install and create the model (idempotent)")
    prep.set_defaults(func=_prepare)
    serve = cmds.add_parser("serve", help="run vLLM in the foreground until Ctrl-C")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--max-num-seqs", type=int, default=4,
                       help="sequences batched at once, the engine's knee (default 4)")
    serve.add_argument("--max-model-len", type=int, default=1024)
    serve.add_argument("--enforce-eager", action="store_true",
                       help="skip torch.compile: starts faster, runs slower")
    serve.add_argument("--no-register", action="store_true",
                       help="do not add it to the native Prometheus' scrape targets")
    serve.set_defaults(func=_serve)


def _root():
    from redline_operator.stack import StackError, find_root

    try:
        return find_root()
    except StackError as exc:
        raise CliError(str(exc)) from None


def _prepare(args: argparse.Namespace) -> int:
    from redline_operator.engines.vllm import VllmError, VllmInstall

    install = VllmInstall(_root())
    try:
        model = install.ensure_model()
    except VllmError as exc:
        raise CliError(str(exc)) from None
    print(f"vLLM ready: {install.python}; model {model}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from redline_operator.engines.vllm import VllmError, VllmServer

    if args.max_num_seqs < 1:
        raise CliError(f"--max-num-seqs must be at least 1, got {args.max_num_seqs}")
    server = VllmServer(_root(), port=args.port, max_num_seqs=args.max_num_seqs,
                        max_model_len=args.max_model_len, enforce_eager=args.enforce_eager,
                        register=not args.no_register)
    print("starting vLLM (about a minute; log in .cache/vllm/logs/) ...", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with server:
            print(f"vLLM serving {server.model!r} at {server.url}/v1 "
                  f"(--max-num-seqs {server.max_num_seqs}); metrics at {server.url}/metrics"
                  + ("" if args.no_register else ", scraped by the native Prometheus as "
                     "job 'vllm'") + ". Ctrl-C stops it.", flush=True)
            stop.wait()
    except VllmError as exc:
        raise CliError(str(exc)) from None
    return 0
