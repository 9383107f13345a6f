"""OpenAI dialect: chat completions, responses, legacy completions, embeddings, models.

Request headers steer what a test needs: ``x-sim-reasoning-tokens: N`` (chat: the first N
tokens stream as ``reasoning_content`` deltas), ``x-sim-outcome: failed|error`` (a
Responses stream ends with ``response.failed`` or an ``error`` event instead of
``response.completed``).

Shapes follow the OpenAI API reference closely enough for the official ``openai`` SDK
to parse them, streaming helpers included. A chat stream carries one chunk per output
token (the first also carries the role, the last the finish reason), then, when
``stream_options.include_usage`` is set, a usage chunk with empty ``choices``.
"""

from __future__ import annotations

import base64
import random
import struct
from typing import Any

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

__all__ = ["routes", "ChatDialect", "ChatToolDialect", "ResponsesDialect",
           "ResponsesToolDialect", "EmbeddingsDialect", "CompletionsDialect"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                404: "not_found_error", 429: "rate_limit_error"}


def _error_body(status: int, message: str) -> dict:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class ChatDialect:
    """``/v1/chat/completions``."""

    endpoint = "/v1/chat/completions"
    id_prefix = "chatcmpl-"
    chunk_object = "chat.completion.chunk"  # the ``object`` of a streamed event
    error_body = staticmethod(_error_body)

    def body(self, ctx: Context) -> dict:
        n = ctx.output_tokens
        return {
            "id": ctx.req_id, "object": "chat.completion", "created": ctx.created,
            "model": ctx.model, "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": ctx.text.text(n),
                                     "refusal": None}}],
            "usage": _usage(ctx),
        }

    def head(self, ctx: Context) -> list[bytes]:
        return []

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        # x-sim-reasoning-tokens: the first tokens come as reasoning deltas, like a
        # reasoning model served by vLLM (``reasoning_content``)
        key = "reasoning_content" if index < ctx.params.get("reasoning_tokens", 0) else "content"
        delta: dict[str, Any] = {"role": "assistant", key: text} if index == 0 else {key: text}
        last = index == ctx.max_tokens - 1
        return sse(self._chunk(ctx, [{"index": 0, "delta": delta, "logprobs": None,
                                       "finish_reason": "stop" if last else None}]))

    def tail(self, ctx: Context) -> list[bytes]:
        out = []
        if ctx.params.get("include_usage"):
            out.append(sse({**self._chunk(ctx, []), "usage": _usage(ctx)}))
        out.append(sse("[DONE]"))
        return out

    def _chunk(self, ctx: Context, choices: list) -> dict:
        return {"id": ctx.req_id, "object": self.chunk_object, "created": ctx.created,
                "model": ctx.model, "system_fingerprint": None, "choices": choices}


def _usage(ctx: Context) -> dict:
    return {"prompt_tokens": ctx.prompt_tokens, "completion_tokens": ctx.output_tokens,
            "total_tokens": ctx.prompt_tokens + ctx.output_tokens}


class ResponsesDialect:
    """``/v1/responses``: the full event sequence the SDK's stream helpers expect."""

    endpoint = "/v1/responses"
    id_prefix = "resp_"
    error_body = staticmethod(_error_body)

    def body(self, ctx: Context) -> dict:
        return self._response(ctx, "completed", [self._message(ctx, "completed")])

    def head(self, ctx: Context) -> list[bytes]:
        item = self._message(ctx, "in_progress", content=[])
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event(ctx, "response.created",
                        response=self._response(ctx, "in_progress", [])),
            self._event(ctx, "response.in_progress",
                        response=self._response(ctx, "in_progress", [])),
            self._event(ctx, "response.output_item.added", output_index=0, item=item),
            self._event(ctx, "response.content_part.added", item_id=self._item_id(ctx),
                        output_index=0, content_index=0, part=part),
        ]

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        return self._event(ctx, "response.output_text.delta", item_id=self._item_id(ctx),
                           output_index=0, content_index=0, delta=text, logprobs=[])

    def tail(self, ctx: Context) -> list[bytes]:
        outcome = ctx.params.get("outcome")  # x-sim-outcome: how the stream ends badly
        if outcome == "failed":
            failed = {**self._response(ctx, "failed", []),
                      "error": {"code": "server_error", "message": "simulated failure"}}
            return [self._event(ctx, "response.failed", response=failed)]
        if outcome == "error":
            return [self._event(ctx, "error", code="server_error", message="simulated error",
                                param=None)]
        item_id, text = self._item_id(ctx), ctx.text.text(ctx.output_tokens)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return [
            self._event(ctx, "response.output_text.done", item_id=item_id, output_index=0,
                        content_index=0, text=text, logprobs=[]),
            self._event(ctx, "response.content_part.done", item_id=item_id, output_index=0,
                        content_index=0, part=part),
            self._event(ctx, "response.output_item.done", output_index=0,
                        item=self._message(ctx, "completed")),
            self._event(ctx, "response.completed", response=self.body(ctx)),
        ]

    @staticmethod
    def _item_id(ctx: Context) -> str:
        return "msg_" + ctx.req_id.removeprefix("resp_")

    def _event(self, ctx: Context, kind: str, **fields: Any) -> bytes:
        number = ctx.params["sequence_number"] = ctx.params.get("sequence_number", -1) + 1
        return sse({"type": kind, "sequence_number": number, **fields}, event=kind)

    def _message(self, ctx: Context, status: str, content: list | None = None) -> dict:
        if content is None:
            content = [{"type": "output_text", "annotations": [], "logprobs": [],
                        "text": ctx.text.text(ctx.output_tokens)}]
        return {"id": self._item_id(ctx), "type": "message", "role": "assistant",
                "status": status, "content": content}

    @staticmethod
    def _response(ctx: Context, status: str, output: list) -> dict:
        usage = None
        if status == "completed":
            usage = {"input_tokens": ctx.prompt_tokens, "output_tokens": ctx.output_tokens,
                     "total_tokens": ctx.prompt_tokens + ctx.output_tokens,
                     "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens_details": {"reasoning_tokens": 0}}
        return {"id": ctx.req_id, "object": "response", "created_at": ctx.created,
                "status": status, "model": ctx.model, "output": output, "usage": usage,
                "error": None, "incomplete_details": None, "instructions": None,
                "max_output_tokens": ctx.max_tokens, "parallel_tool_calls": True,
                "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
                "text": {"format": {"type": "text"}}, "metadata": {}}


class ChatToolDialect(ChatDialect):
    """A chat answer made of tool calls (the rule: :mod:`.toolcalls`), streamed as
    ``delta.tool_calls`` argument fragments, one chunk per token."""

    def __init__(self, calls: list[ToolCall]) -> None:
        self.calls = calls

    def body(self, ctx: Context) -> dict:
        tool_calls = [{"id": c.call_id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}}
                      for c in self.calls]
        return {
            "id": ctx.req_id, "object": "chat.completion", "created": ctx.created,
            "model": ctx.model, "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                         "message": {"role": "assistant", "content": None, "refusal": None,
                                     "tool_calls": tool_calls}}],
            "usage": _usage(ctx),
        }

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        deltas = []
        for k, piece, first in fragments(self.calls, index, ctx.max_tokens):
            call = self.calls[k]
            fn: dict[str, Any] = {"arguments": piece}
            entry: dict[str, Any] = {"index": k, "function": fn}
            if first:
                entry.update(id=call.call_id, type="function")
                fn["name"] = call.name
            deltas.append(entry)
        delta: dict[str, Any] = {"tool_calls": deltas}
        if index == 0:
            delta.update(role="assistant", content=None)
        last = index == ctx.max_tokens - 1
        return sse(self._chunk(ctx, [{"index": 0, "delta": delta, "logprobs": None,
                                       "finish_reason": "tool_calls" if last else None}]))


class ResponsesToolDialect(ResponsesDialect):
    """A response whose output is ``function_call`` items, streamed as
    ``response.function_call_arguments.delta`` events, one per token."""

    def __init__(self, calls: list[ToolCall]) -> None:
        self.calls = calls

    def _item(self, ctx: Context, k: int, status: str, arguments: str | None = None) -> dict:
        call = self.calls[k]
        return {"id": f"fc_{ctx.req_id.removeprefix('resp_')}_{k}", "type": "function_call",
                "call_id": call.call_id, "name": call.name, "status": status,
                "arguments": call.arguments if arguments is None else arguments}

    def body(self, ctx: Context) -> dict:
        items = [self._item(ctx, k, "completed") for k in range(len(self.calls))]
        return self._response(ctx, "completed", items)

    def head(self, ctx: Context) -> list[bytes]:
        return [self._event(ctx, "response.created",
                            response=self._response(ctx, "in_progress", [])),
                self._event(ctx, "response.in_progress",
                            response=self._response(ctx, "in_progress", []))]

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        out = []
        for k, piece, first in fragments(self.calls, index, ctx.max_tokens):
            item = self._item(ctx, k, "in_progress", "")
            if first:
                out.append(self._event(ctx, "response.output_item.added", output_index=k,
                                       item=item))
            out.append(self._event(ctx, "response.function_call_arguments.delta",
                                   item_id=item["id"], output_index=k, delta=piece))
        return b"".join(out)

    def tail(self, ctx: Context) -> list[bytes]:
        out = []
        for k, call in enumerate(self.calls):
            item = self._item(ctx, k, "completed")
            out.append(self._event(ctx, "response.function_call_arguments.done",
                                   item_id=item["id"], output_index=k, name=call.name,
                                   arguments=call.arguments))
            out.append(self._event(ctx, "response.output_item.done", output_index=k, item=item))
        out.append(self._event(ctx, "response.completed", response=self.body(ctx)))
        return out


def _tool_dialect(request: Request, body: dict, conversation: Any, ctx: Context,
                  cls: type) -> Any:
    """``cls(calls)`` when the tool-call rule (:mod:`.toolcalls`) says to call tools."""
    calls = plan_tool_calls(request, body, conversation, ctx.req_id)
    return cls(calls) if calls else None


class EmbeddingsDialect:
    """``/v1/embeddings``: prefill-only sequences with deterministic unit vectors."""

    endpoint = "/v1/embeddings"
    id_prefix = "emb-"
    error_body = staticmethod(_error_body)

    def body(self, ctx: Context) -> dict:
        dim, seed, b64 = ctx.params["dim"], ctx.params["seed"], ctx.params["base64"]
        data = []
        for i, text in enumerate(ctx.params["inputs"]):
            vec = _unit_vector(f"{seed}:{text}", dim)
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": ctx.model,
                "usage": {"prompt_tokens": ctx.prompt_tokens, "total_tokens": ctx.prompt_tokens}}

    def head(self, ctx: Context) -> list[bytes]:
        raise NotImplementedError("embeddings never stream")

    chunk = tail = head


def _unit_vector(key: str, dim: int) -> list[float]:
    rng = random.Random(key)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


def _state(request: Request) -> SimState:
    return request.app.state.sim


def _new_ctx(state: SimState, prefix: str, model: Any, prompt: int, max_tokens: int) -> Context:
    if not isinstance(model, str) or not model:
        raise BadRequest("model must be a non-empty string")
    number = state.engine.next_number()
    return Context(req_id=f"{prefix}{number:08d}", model=model, prompt_tokens=prompt,
                   max_tokens=max_tokens, text=TokenText(state.config.seed, number))


async def chat_completions(request: Request) -> Response:
    state, cfg = _state(request), _state(request).config
    try:
        body = await read_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        prompt = prompt_tokens_for(request, cfg.prompt_tokens,
                                   estimate_tokens(messages, cfg.chars_per_token))
        max_tokens = positive_int(body, "max_completion_tokens", "max_tokens",
                                  default=cfg.default_output_tokens)
        ctx = _new_ctx(state, ChatDialect.id_prefix, body.get("model"), prompt, max_tokens)
        dialect = _tool_dialect(request, body, messages, ctx, ChatToolDialect) or ChatDialect()
    except BadRequest as exc:
        return JSONResponse(_error_body(400, str(exc)), 400)
    ctx.params["include_usage"] = bool((body.get("stream_options") or {}).get("include_usage"))
    ctx.params["reasoning_tokens"] = _header_int(request, "x-sim-reasoning-tokens")
    return await serve_request(state, dialect, ctx, bool(body.get("stream")))


def _header_int(request: Request, name: str) -> int:
    raw = request.headers.get(name, "0")
    return int(raw) if raw.isdigit() else 0


async def responses(request: Request) -> Response:
    state, cfg = _state(request), _state(request).config
    try:
        body = await read_body(request)
        if body.get("input") in (None, "", []):
            raise BadRequest("input must be a non-empty string or list of input items")
        parts = [body.get("input"), body.get("instructions") or ""]
        prompt = prompt_tokens_for(request, cfg.prompt_tokens,
                                   estimate_tokens(parts, cfg.chars_per_token))
        max_tokens = positive_int(body, "max_output_tokens", default=cfg.default_output_tokens)
        ctx = _new_ctx(state, ResponsesDialect.id_prefix, body.get("model"), prompt, max_tokens)
        dialect = (_tool_dialect(request, body, body.get("input"), ctx, ResponsesToolDialect)
                   or ResponsesDialect())
    except BadRequest as exc:
        return JSONResponse(_error_body(400, str(exc)), 400)
    ctx.params["outcome"] = request.headers.get("x-sim-outcome")
    return await serve_request(state, dialect, ctx, bool(body.get("stream")))


async def retrieve_response(request: Request) -> Response:
    """``GET /v1/responses/{id}?stream=true``: the sim stores nothing, so resuming a
    response's stream streams a fresh one (``sim-model``, the default length)."""
    state, cfg = _state(request), _state(request).config
    if request.query_params.get("stream") != "true":
        return JSONResponse(_error_body(404, "the sim keeps no responses"), 404)
    ctx = _new_ctx(state, ResponsesDialect.id_prefix, "sim-model", cfg.prompt_tokens or 1,
                   cfg.default_output_tokens)
    return await serve_request(state, ResponsesDialect(), ctx, True)


class CompletionsDialect(ChatDialect):
    """Legacy ``/v1/completions`` (what many vLLM clients still call): ``choices[].text``.

    The stream's envelope and tail (usage, ``[DONE]``) are the chat dialect's; only the
    ``object`` and the choice shape differ."""

    endpoint = "/v1/completions"
    id_prefix = "cmpl-"
    chunk_object = "text_completion"

    def body(self, ctx: Context) -> dict:
        return {**self._chunk(ctx, [{"index": 0, "text": ctx.text.text(ctx.output_tokens),
                                      "finish_reason": "stop", "logprobs": None}]),
                "usage": _usage(ctx)}

    def chunk(self, ctx: Context, index: int, text: str) -> bytes:
        last = index == ctx.max_tokens - 1
        return sse(self._chunk(ctx, [{"index": 0, "text": text, "logprobs": None,
                                      "finish_reason": "stop" if last else None}]))


async def completions(request: Request) -> Response:
    state, cfg = _state(request), _state(request).config
    try:
        body = await read_body(request)
        prompt_text = body.get("prompt")
        if prompt_text in (None, "", []):
            raise BadRequest("prompt must be a non-empty string or list")
        prompt = prompt_tokens_for(request, cfg.prompt_tokens,
                                   estimate_tokens([prompt_text], cfg.chars_per_token))
        max_tokens = positive_int(body, "max_tokens", default=cfg.default_output_tokens)
        ctx = _new_ctx(state, CompletionsDialect.id_prefix, body.get("model"), prompt,
                       max_tokens)
    except BadRequest as exc:
        return JSONResponse(_error_body(400, str(exc)), 400)
    ctx.params["include_usage"] = bool((body.get("stream_options") or {}).get("include_usage"))
    return await serve_request(state, CompletionsDialect(), ctx, bool(body.get("stream")))


async def embeddings(request: Request) -> Response:
    state, cfg = _state(request), _state(request).config
    try:
        body = await read_body(request)
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("input must be a non-empty string or list")
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]
        estimate = sum(estimate_tokens([t], cfg.chars_per_token) for t in texts)
        prompt = prompt_tokens_for(request, cfg.prompt_tokens, estimate)
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise BadRequest(f"encoding_format must be 'float' or 'base64', got {fmt!r}")
        dim = positive_int(body, "dimensions", default=cfg.embedding_dim)
        ctx = _new_ctx(state, EmbeddingsDialect.id_prefix, body.get("model"), prompt, 0)
    except BadRequest as exc:
        return JSONResponse(_error_body(400, str(exc)), 400)
    ctx.params.update(inputs=texts, dim=dim, seed=cfg.seed, base64=fmt == "base64")
    return await serve_request(state, EmbeddingsDialect(), ctx, stream=False)


async def models(request: Request) -> Response:
    cfg = _state(request).config
    return JSONResponse({"object": "list", "data": [
        {"id": cfg.model, "object": "model", "created": 0, "owned_by": "redline-sim"}]})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
