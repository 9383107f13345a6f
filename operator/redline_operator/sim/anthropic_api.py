"""Anthropic dialect: ``POST /v1/messages``, plain and streaming.

The stream follows the Messages API event order: ``message_start``,
``content_block_start``, ``ping``, one ``content_block_delta`` (``text_delta``) per output
token, ``content_block_stop``, ``message_delta`` (stop reason and final
``usage.output_tokens``), ``message_stop``. Every event carries its ``event:`` line,
which the ``anthropic`` SDK requires.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redline_operator.sim.exchange import (
    BadRequest,
    Context,
    SimState,
    positive_int,
    prompt_tokens_for,
    read_body,
    serve_request,
    sse,
)
from redline_operator.sim.tokens import TokenText, estimate_tokens
from redline_operator.sim.toolcalls import ToolCall, fragments, plan_tool_calls

__all__ = ["routes", "MessagesDialect", "MessagesToolDialect"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 529: "overloaded_error"}


def _error_body(status: int, message: str) -> dict:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _event(kind: str, **fields: object) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


class MessagesDialect:
    """``/v1/messages``."""

    endpoint = "/v1/messages"
    id_prefix = "msg_"
    error_body = staticmethod(_error_body)

    def body(self, ctx: Context) -> dict:
        return self._message(ctx, [{"type": "text", "text": ctx.text.text(ctx.output_tokens)}],
                             "end_turn", ctx.output_tokens)

    def head(self, ctx: Context) -> list[bytes]:
        # Like the real API, message_start reports output_tokens=1 before any text.
        return [
            _event("message_start", message=self._message(ctx, [], None, 1)),
            _event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            _event("ping"),
        ]

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        return _event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})

    def tail(self, ctx: Context) -> list[bytes]:
        return [
            _event("content_block_stop", index=0),
            _event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                   usage={"output_tokens": ctx.output_tokens}),
            _event("message_stop"),
        ]

    @staticmethod
    def _message(ctx: Context, content: list, stop_reason: str | None, output: int) -> dict:
        # x-sim-cached-tokens: that many prompt tokens are reported as cache reads, apart
        # from input_tokens (as the real API does)
        cached = min(ctx.params.get("cached_tokens", 0), ctx.prompt_tokens)
        return {"id": ctx.req_id, "type": "message", "role": "assistant", "model": ctx.model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": ctx.prompt_tokens - cached, "output_tokens": output,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}}


class MessagesToolDialect(MessagesDialect):
    """A message made of ``tool_use`` blocks (the rule: :mod:`.toolcalls`), streamed as
    ``input_json_delta`` events, one per token; stop reason ``tool_use``."""

    def __init__(self, calls: list[ToolCall]) -> None:
        self.calls = calls

    def body(self, ctx: Context) -> dict:
        blocks = [{"type": "tool_use", "id": c.call_id, "name": c.name,
                   "input": json.loads(c.arguments)} for c in self.calls]
        return self._message(ctx, blocks, "tool_use", ctx.output_tokens)

    def head(self, ctx: Context) -> list[bytes]:
        return [_event("message_start", message=self._message(ctx, [], None, 1)), _event("ping")]

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        out = []
        for k, piece, first in fragments(self.calls, index, ctx.max_tokens):
            if first:
                if k > 0:
                    out.append(_event("content_block_stop", index=k - 1))
                call = self.calls[k]
                out.append(_event("content_block_start", index=k, content_block={
                    "type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}))
            out.append(_event("content_block_delta", index=k,
                              delta={"type": "input_json_delta", "partial_json": piece}))
        return b"".join(out)

    def tail(self, ctx: Context) -> list[bytes]:
        return [
            _event("content_block_stop", index=len(self.calls) - 1),
            _event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None},
                   usage={"output_tokens": ctx.output_tokens}),
            _event("message_stop"),
        ]


async def messages(request: Request) -> Response:
    state: SimState = request.app.state.sim
    cfg = state.config
    try:
        body = await read_body(request)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest("messages: must be a non-empty list")
        if body.get("max_tokens") is None:
            raise BadRequest("max_tokens: Field required")
        max_tokens = positive_int(body, "max_tokens", default=1)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: must be a non-empty string")
        prompt = prompt_tokens_for(request, cfg.prompt_tokens,
                                   estimate_tokens([body.get("system") or "", msgs],
                                                   cfg.chars_per_token))
        number = state.engine.next_number()
        ctx = Context(req_id=f"msg_{number:024d}", model=model, prompt_tokens=prompt,
                      max_tokens=max_tokens, text=TokenText(cfg.seed, number))
        calls = plan_tool_calls(request, body, msgs, ctx.req_id)
    except BadRequest as exc:
        return JSONResponse(_error_body(400, str(exc)), 400)
    cached = request.headers.get("x-sim-cached-tokens", "0")
    ctx.params["cached_tokens"] = int(cached) if cached.isdigit() else 0
    dialect = MessagesToolDialect(calls) if calls else MessagesDialect()
    return await serve_request(state, dialect, ctx, bool(body.get("stream")))


routes = [Route("/v1/messages", messages, methods=["POST"])]
