"""One inference request from arrival to last byte, whatever the API dialect.

The dialect modules (:mod:`.openai_api`, :mod:`.anthropic_api`)
only say how bodies and events look (a :class:`Dialect`); this module applies the fault,
queues the sequence, streams its tokens as they are produced, keeps the request log, and
cuts the connection when a drop fault says so.

A cut is a real one: the ASGI app returns without finishing the response, and uvicorn
closes the TCP connection, so the client sees a truncated body, not an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from redline_operator.sim.config import SimConfig
from redline_operator.sim.engine import Engine, QueueFull, Sequence
from redline_operator.sim.faults import DropFault, FaultPlan, ResetFault, SlowFault, StatusFault
from redline_operator.sim.requestlog import RequestLog, RequestRecord
from redline_operator.sim.tokens import TokenText

__all__ = [
    "BadRequest", "Context", "Dialect", "DropLogFilter", "SimState", "positive_int",
    "prompt_tokens_for", "read_body", "serve_request", "sse",
]

_UNFINISHED = "ASGI callable returned without completing response."


class DropLogFilter(logging.Filter):
    """Silences uvicorn's complaint about a response we cut on purpose, and only that."""

    def __init__(self) -> None:
        super().__init__()
        self.expected = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.expected > 0 and record.getMessage() == _UNFINISHED:
            self.expected -= 1
            return False
        return True


@dataclass
class SimState:
    """Everything the request handlers share; one per server."""

    config: SimConfig
    engine: Engine
    faults: FaultPlan
    log: RequestLog
    drop_filter: DropLogFilter


@dataclass
class Context:
    """What a dialect needs to render one response."""

    req_id: str
    model: str
    prompt_tokens: int
    max_tokens: int
    text: TokenText
    created: int = field(default_factory=lambda: int(time.time()))
    params: dict[str, Any] = field(default_factory=dict)
    seq: Sequence | None = None

    @property
    def output_tokens(self) -> int:
        """Tokens generated so far."""
        return 0 if self.seq is None else self.seq.generated


class Dialect(Protocol):
    """How one API spells its responses."""

    endpoint: str
    id_prefix: str

    def error_body(self, status: int, message: str) -> dict: ...
    def body(self, ctx: Context) -> dict: ...
    def head(self, ctx: Context) -> list[bytes]: ...
    def chunk(self, ctx: Context, index: int, text: str) -> bytes: ...
    def tail(self, ctx: Context) -> list[bytes]: ...


def sse(data: Any, event: str | None = None) -> bytes:
    """Encode one server-sent event (``data`` as compact JSON unless already a str)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def _retry_headers(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    # Retry-After is whole seconds by RFC 9110; retry-after-ms carries the exact value
    # (both SDKs read it first).
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}


async def serve_request(state: SimState, dialect: Dialect, ctx: Context, stream: bool) -> Response:
    """Run one request through faults and the engine and build its response.

    Args:
        state: The server's shared state.
        dialect: The API dialect rendering bodies and events.
        ctx: The request's context (ids, token counts, params).
        stream: Whether to answer with server-sent events.

    Returns:
        An error response, or an ASGI response that follows the sequence to its end.
    """
    rec = state.log.open(ctx.req_id, dialect.endpoint, ctx.model, stream)
    rec.prompt_tokens = ctx.prompt_tokens
    fault = state.faults.next()
    rec.fault = fault.describe() if fault is not None else None
    if isinstance(fault, StatusFault):
        message = fault.message or f"simulated fault: HTTP {fault.status}"
        return _error(rec, dialect, fault.status, message, fault.retry_after, "error")
    if isinstance(fault, ResetFault):
        rec.status, rec.outcome, rec.finished = 0, "reset", time.time()
        state.drop_filter.expected += 1
        return _Reset()
    if isinstance(fault, SlowFault):
        await asyncio.sleep(fault.delay)
    try:
        ctx.seq = state.engine.submit(ctx.prompt_tokens, ctx.max_tokens)
    except QueueFull:
        message = "simulated server overloaded: the request queue is full"
        return _error(rec, dialect, 429, message, state.config.queue_full_retry_after_s, "rejected")
    drop = fault if isinstance(fault, DropFault) else None
    cls = _StreamResponse if stream else _CompleteResponse
    return cls(state, dialect, ctx, rec, drop)


def _error(rec: RequestRecord, dialect: Dialect, status: int, message: str,
           retry_after: float | None, outcome: str) -> Response:
    rec.status, rec.outcome, rec.finished = status, outcome, time.time()
    headers = {"x-request-id": rec.id, "request-id": rec.id, **_retry_headers(retry_after)}
    return JSONResponse(dialect.error_body(status, message), status, headers=headers)


class _Reset(Response):
    """No response at all: the connection is aborted (uvicorn's transport, found through its
    ``receive`` callable), so the client's attempt fails with a connection error."""

    def __init__(self) -> None:
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:  # not uvicorn: the closest thing is an empty 502
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        transport.abort()


class _Following(Response):
    """Base of responses that follow a sequence; watches for the client going away."""

    media_type = "application/json"

    def __init__(self, state: SimState, dialect: Dialect, ctx: Context, rec: RequestRecord,
                 drop: DropFault | None) -> None:
        self.state, self.dialect, self.ctx, self.rec, self.drop = state, dialect, ctx, rec, drop
        self.background = None

    def _headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", self.media_type.encode()),
                (b"x-request-id", self.rec.id.encode()), (b"request-id", self.rec.id.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seq = self.ctx.seq
        assert seq is not None
        watcher = asyncio.create_task(self._watch_disconnect(receive, seq))
        try:
            await self._respond(send, seq)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.state.engine.cancel(seq)  # no-op when finished
            self._close_record(seq)

    async def _watch_disconnect(self, receive: Receive, seq: Sequence) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not seq.done:
            self.rec.outcome = "cancelled"
            self.state.engine.cancel(seq)

    def _cut(self) -> None:
        """Return without finishing the response: uvicorn then closes the socket."""
        self.rec.outcome = "dropped"
        self.state.drop_filter.expected += 1

    def _close_record(self, seq: Sequence) -> None:
        log, rec = self.state.log, self.rec
        rec.admitted = log.epoch(seq.admitted)
        rec.first_token = log.epoch(seq.first_token)
        rec.finished = log.epoch(seq.finished) if seq.finished is not None else time.time()
        rec.output_tokens = seq.generated

    async def _respond(self, send: Send, seq: Sequence) -> None:
        raise NotImplementedError


class _CompleteResponse(_Following):
    """A non-streaming JSON answer, sent when the sequence finishes."""

    async def _respond(self, send: Send, seq: Sequence) -> None:
        while not seq.done and not seq.cancelled:
            await seq.wait_beyond(seq.generated)
        if seq.cancelled:
            return
        body = json.dumps(self.dialect.body(self.ctx), separators=(",", ":")).encode()
        headers = [*self._headers(), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.drop is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2],
                        "more_body": True})
            self._cut()
            return
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self.rec.chunks_sent = 1


class _StreamResponse(_Following):
    """Server-sent events: head at once, one chunk per token as produced, then tail."""

    media_type = "text/event-stream; charset=utf-8"

    async def _respond(self, send: Send, seq: Sequence) -> None:
        headers = [*self._headers(), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        limit = self.drop.after_chunks if self.drop is not None else None
        head = self.dialect.head(self.ctx)
        if head:
            await send({"type": "http.response.body", "body": b"".join(head), "more_body": True})
        sent = 0
        while True:
            if limit is not None and sent >= limit:
                self._cut()
                return
            await seq.wait_beyond(sent)
            if seq.cancelled:
                return
            upto = seq.generated if limit is None else min(seq.generated, limit)
            # Tokens that piled up while we were descheduled go out in one write, but
            # still as one chunk each.
            parts = [self.dialect.chunk(self.ctx, i, self.ctx.text.word(i))
                     for i in range(sent, upto)]
            sent = upto
            self.rec.chunks_sent = sent
            finished = seq.done and sent == seq.generated
            if finished:
                parts.extend(self.dialect.tail(self.ctx))
            await send({"type": "http.response.body", "body": b"".join(parts),
                        "more_body": not finished})
            if finished:
                return


class BadRequest(Exception):
    """The request body cannot be served; the message says what to fix (HTTP 400)."""


async def read_body(request: Any) -> dict:
    """The request's JSON object body.

    Raises:
        BadRequest: The body is not a JSON object.
    """
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def positive_int(body: dict, *keys: str, default: int) -> int:
    """The first of ``keys`` present in ``body`` as a positive int, else ``default``.

    Raises:
        BadRequest: The value is not a positive integer.
    """
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"{key} must be a positive integer, got {value!r}")
        return value
    return default


def prompt_tokens_for(request: Any, fixed: int | None, estimate: int) -> int:
    """Prompt length: ``x-sim-prompt-tokens`` header, else the configured fixed length,
    else the estimate from the text.

    Raises:
        BadRequest: The header is not a positive integer.
    """
    header = request.headers.get("x-sim-prompt-tokens")
    if header is not None:
        if not header.isdigit() or int(header) < 1:
            raise BadRequest(f"x-sim-prompt-tokens must be a positive integer, got {header!r}")
        return int(header)
    return fixed if fixed is not None else estimate
