"""The simulated server: the Starlette app, its admin API, and ways to run it.

``run_in_thread`` is for tests and the demo (uvicorn on a background thread, port 0 picks
a free port); ``serve`` blocks, for ``redline sim`` and ``python -m redline_operator.sim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pydantic
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redline_operator.sim import anthropic_api, openai_api
from redline_operator.sim.config import SimConfig
from redline_operator.sim.engine import Engine
from redline_operator.sim.exchange import DropLogFilter, SimState
from redline_operator.sim.faults import FaultPlan, FaultScript
from redline_operator.sim.metrics import CONTENT_TYPE, SimMetrics
from redline_operator.sim.requestlog import RequestLog

__all__ = ["build_app", "bind", "serve", "run_in_thread", "SimServer"]

log = logging.getLogger(__name__)


def build_app(config: SimConfig | None = None) -> Starlette:
    """Build the ASGI app; its engine loop runs for the app's lifespan.

    Args:
        config: The simulation config; defaults to ``SimConfig()``.

    Returns:
        A Starlette app with ``app.state.sim`` (a :class:`SimState`) and
        ``app.state.metrics`` (a :class:`SimMetrics`).
    """
    config = config or SimConfig()
    engine = Engine(config)
    metrics = SimMetrics(engine, config.model)
    engine.on_finish = metrics.observe_finished
    state = SimState(config=config, engine=engine, faults=FaultPlan(config),
                     log=RequestLog(config.log_limit), drop_filter=DropLogFilter())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(state.drop_filter)
        task = asyncio.create_task(engine.run(), name="redline-sim-engine")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            uvicorn_log.removeFilter(state.drop_filter)

    routes = [
        *openai_api.routes,
        *anthropic_api.routes,
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        Route("/sim/faults", _set_faults, methods=["POST"]),
        Route("/sim/faults", _get_faults, methods=["GET"]),
        Route("/sim/log", _get_log, methods=["GET"]),
        Route("/sim/reset", _reset, methods=["POST"]),
        Route("/sim/config", _get_config, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sim = state
    app.state.metrics = metrics
    return app


async def _metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)


async def _health(request: Request) -> Response:
    return Response(b"", 200)


async def _set_faults(request: Request) -> Response:
    state: SimState = request.app.state.sim
    try:
        faults = FaultScript.validate_json(await request.body())
    except pydantic.ValidationError as exc:
        errors = [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors(include_url=False)]
        return JSONResponse({"error": "invalid fault script", "details": errors}, 422)
    state.faults.load(faults)
    return JSONResponse({"pending": state.faults.pending()})


async def _get_faults(request: Request) -> Response:
    return JSONResponse({"pending": request.app.state.sim.faults.pending()})


async def _get_log(request: Request) -> Response:
    return JSONResponse({"requests": request.app.state.sim.log.dump()})


async def _reset(request: Request) -> Response:
    state: SimState = request.app.state.sim
    state.faults.reset()
    state.log.clear()
    return JSONResponse({"reset": True})


async def _get_config(request: Request) -> Response:
    return JSONResponse(request.app.state.sim.config.model_dump())


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket (port 0 picks a free one).

    Raises:
        OSError: The address is in use or cannot be bound; the message names it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on accepted
    # sockets whose proto says TCP, and without it Nagle plus delayed ACK adds ~40 ms
    # between the response headers and body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: Starlette, log_level: str) -> uvicorn.Config:
    # log_config=None: never reconfigure the host process's logging (tests, the demo).
    return uvicorn.Config(app, log_level=log_level, log_config=None, access_log=False,
                          lifespan="on", timeout_graceful_shutdown=2, backlog=2048)


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (SIGINT/SIGTERM), in the calling thread.

    Raises:
        OSError: The address cannot be bound.
    """
    sock = bind(host, port)
    server = uvicorn.Server(_uvicorn_config(build_app(config), "info"))
    log.info("serving %s on http://%s:%d (slots=%d, queue_limit=%d)", config.model, host,
             sock.getsockname()[1], config.slots, config.queue_limit)
    server.run(sockets=[sock])


class SimServer:
    """A running simulator, as yielded by :func:`run_in_thread`.

    Example:
        >>> with run_in_thread(SimConfig(slots=4)) as sim:
        ...     sim.set_faults([{"kind": "status", "status": 500}])
        ...     sim.url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.config: SimConfig = app.state.sim.config

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, self.url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def set_faults(self, faults: list[dict]) -> list[dict]:
        """Append scripted faults (see :mod:`.faults`); returns those pending."""
        return self._call("POST", "/sim/faults", json=faults).json()["pending"]

    def log(self) -> list[dict]:
        """The request log, oldest first (see :class:`.requestlog.RequestRecord`)."""
        return self._call("GET", "/sim/log").json()["requests"]

    def reset(self) -> None:
        """Drop pending scripted faults and the request log."""
        self._call("POST", "/sim/reset")

    def metrics(self) -> str:
        """The Prometheus exposition of ``/metrics``."""
        return self._call("GET", "/metrics").text


@contextlib.contextmanager
def run_in_thread(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> Iterator[SimServer]:
    """Run the simulator on a background thread for the duration of a ``with`` block.

    Args:
        config: The simulation config; defaults to ``SimConfig()``.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (read it from ``sim.port``).
        startup_timeout_s: How long to wait for the server to accept connections.

    Yields:
        The running :class:`SimServer`.

    Raises:
        OSError: The address cannot be bound.
        RuntimeError: The server did not start in time.
    """
    app = build_app(config)
    sock = bind(host, port)
    server = uvicorn.Server(_uvicorn_config(app, "warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="redline-sim", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"redline sim did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield SimServer(app, host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
