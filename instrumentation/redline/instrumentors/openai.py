"""Instrumentation of the ``openai`` SDK (1.26 - 3.x): chat completions, responses, embeddings.

Works for OpenAI itself and any OpenAI-compatible server reached through ``base_url``
(vLLM, SGLang, TGI, llama.cpp, Ollama...): ``server.address``/``server.port`` come from the
client's ``base_url``. No prompt or completion text, and no key, is ever read into telemetry:
only the model name, the streaming flag, token counts and timings.

Example:
    >>> from redline.instrumentors.openai import OpenAIInstrumentor
    >>> OpenAIInstrumentor().instrument(meter_provider=provider)
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from redline._api.model_call import ModelCall
from redline.instrumentors import _attempts, _transport
from redline.instrumentors._operation import (
    Operation,
    async_operation,
    server_of,
    sync_operation,
)
from redline.instrumentors._patching import PatchSet, Target, find_class
from redline.instrumentors._streams import AsyncStream, RawResponse, SyncStream

__all__ = ["OpenAIInstrumentor", "SUPPORTED"]

# 1.26 is the first release with ``stream_options={"include_usage": True}``, without which a
# streamed call reports no tokens; it is also the floor of the official OTel GenAI openai
# instrumentation. Older 1.x releases are refused (one ERROR line from BaseInstrumentor).
SUPPORTED = "openai >= 1.26, < 4"
PROVIDER = "openai"
_log = logging.getLogger("redline")

_CHAT = "openai.resources.chat.completions"
_BETA_CHAT = "openai.resources.beta.chat.completions"  # parse() lived here in 1.x
_RESP = "openai.resources.responses"
# (where the resource class has lived across releases, method, gen_ai.operation.name,
#  chunk handler); a surface a release lacks is skipped (feature detection)
_SURFACES = (
    ((f"{_CHAT}:Completions",), "create", "chat", "chat"),
    ((f"{_CHAT}:AsyncCompletions",), "create", "chat", "chat"),
    ((f"{_CHAT}:Completions",), "parse", "chat", "chat"),  # structured outputs
    ((f"{_CHAT}:AsyncCompletions",), "parse", "chat", "chat"),
    ((f"{_BETA_CHAT}:Completions",), "parse", "chat", "chat"),
    ((f"{_BETA_CHAT}:AsyncCompletions",), "parse", "chat", "chat"),
    (("openai.resources.completions:Completions",), "create", "text_completion", "completion"),
    (("openai.resources.completions:AsyncCompletions",), "create", "text_completion",
     "completion"),
    ((f"{_RESP}:Responses",), "create", "chat", "responses"),  # openai >= 1.66
    ((f"{_RESP}:AsyncResponses",), "create", "chat", "responses"),
    ((f"{_RESP}:Responses",), "parse", "chat", "responses"),
    ((f"{_RESP}:AsyncResponses",), "parse", "chat", "responses"),
    ((f"{_RESP}:Responses",), "retrieve", "chat", "responses"),  # only with stream=True
    ((f"{_RESP}:AsyncResponses",), "retrieve", "chat", "responses"),
    (("openai.resources.embeddings:Embeddings",), "create", "embeddings", "chat"),
    (("openai.resources.embeddings:AsyncEmbeddings",), "create", "embeddings", "chat"),
)
# The chat.completions.stream() / responses.stream() helpers close the HTTP response
# themselves, around redline's stream proxy: their close() must end the call too.
_HELPER_STREAMS = ("openai.lib.streaming.chat:ChatCompletionStream",
                   "openai.lib.streaming.chat:AsyncChatCompletionStream",
                   "openai.lib.streaming.responses:ResponseStream",
                   "openai.lib.streaming.responses:AsyncResponseStream")
BUDGET_NOTE = ("the retry budget can stop HTTP-status retries (429, 5xx) on every supported "
               "openai version, and timeout/connection-error retries on openai >= 3.0")


def _describe(operation: str, method: str = "create"):
    def describe(instance: Any, args: tuple, kwargs: dict) -> dict | None:
        if method == "retrieve" and kwargs.get("stream") is not True:
            return None  # fetching a stored response is not a model call; resuming its stream is
        address, port = server_of(instance)
        return dict(provider=PROVIDER, model=kwargs.get("model"), server_address=address,
                    server_port=port, operation=operation,
                    streaming=kwargs.get("stream") is True)

    return describe


# --- what a chunk or a response tells us ---------------------------------------------------
def _usage(call: ModelCall, usage: Any) -> None:
    if usage is None:
        return
    inp = getattr(usage, "prompt_tokens", None)
    if inp is None:
        inp = getattr(usage, "input_tokens", None)
    out = getattr(usage, "completion_tokens", None)
    if out is None:
        out = getattr(usage, "output_tokens", None)
    call.usage(input_tokens=inp, output_tokens=out)


# What counts as generated output for the TTFT (one rule for every API; see the metric
# table): text, a tool or legacy function call, reasoning (``reasoning_content`` from vLLM /
# DeepSeek-style servers, ``reasoning`` from others), or a refusal.
_DELTA_OUTPUT = ("content", "tool_calls", "function_call", "refusal", "reasoning_content",
                 "reasoning")


def _has_output(delta: Any) -> bool:
    if delta is None:
        return False
    # An SDK model keeps its fields in __dict__ and (pydantic 2) undeclared ones such as
    # vLLM's reasoning_content in __pydantic_extra__: dict lookups, where getattr of an
    # absent name goes through pydantic's __getattr__ and an AttributeError (4 us a delta).
    fields = getattr(delta, "__dict__", None)
    if fields is None:
        return any(getattr(delta, name, None) for name in _DELTA_OUTPUT)
    extra = getattr(delta, "__pydantic_extra__", None) or {}
    for name in _DELTA_OUTPUT:  # noqa: SIM110 - a plain loop is the cheaper per chunk
        if fields.get(name) or extra.get(name):
            return True
    return False


def on_chat_chunk(call: ModelCall, chunk: Any) -> None:
    """A ``ChatCompletionChunk``: generated output (see ``_DELTA_OUTPUT``) or usage-only."""
    choices = chunk.choices
    if choices and (delta := choices[0].delta) is not None and delta.content:
        call.chunk()  # text in the first choice: the common case, once per chunk
    else:
        content = False
        for choice in choices or ():
            delta = choice.delta
            if delta is not None and (delta.content or _has_output(delta)):
                content = True
                break
        call.chunk(content)
    if call.wants_response_model:
        call.response_model(getattr(chunk, "model", None))
    if chunk.usage is not None:
        _usage(call, chunk.usage)


def on_completion_chunk(call: ModelCall, chunk: Any) -> None:
    """A legacy ``Completion`` chunk (``completions.create(stream=True)``): ``choices[].text``."""
    call.chunk(content=any(getattr(c, "text", None) for c in chunk.choices or ()))
    if call.wants_response_model:
        call.response_model(getattr(chunk, "model", None))
    if getattr(chunk, "usage", None) is not None:
        _usage(call, chunk.usage)


# Responses stream events that end the response badly (the SDK does not raise for them)
_FAILED_EVENTS = {"response.failed": "response_failed", "error": "stream_error"}


def on_response_event(call: ModelCall, event: Any) -> None:
    """A Responses API stream event: every ``*.delta`` event is generated output (text,
    reasoning, function-call arguments, refusal, audio); the final one has usage; a
    ``response.failed`` or ``error`` event makes the call an error."""
    kind = getattr(event, "type", "") or ""
    call.chunk(content=kind.endswith(".delta"))
    failed = _FAILED_EVENTS.get(kind)
    if failed is not None:
        call.error(failed)
    response = getattr(event, "response", None)
    if response is not None and call.wants_response_model:
        call.response_model(getattr(response, "model", None))
    if kind in ("response.completed", "response.incomplete", "response.failed"):
        _usage(call, getattr(response, "usage", None))


_types: tuple[type, type, tuple[type, ...]] | None = None


def _sdk_types() -> tuple[type, type, tuple[type, ...]]:
    """(Stream, AsyncStream, raw response classes) of the installed openai, imported once."""
    global _types
    if _types is None:
        import openai
        from openai._legacy_response import LegacyAPIResponse
        from openai._response import BaseAPIResponse

        _types = (openai.Stream, openai.AsyncStream, (LegacyAPIResponse, BaseAPIResponse))
    return _types


def _finisher(on_chunk):
    def finish(op: Operation, result: Any, kwargs: dict) -> tuple[Any, bool]:
        stream, async_stream, raw = _types or _sdk_types()
        if isinstance(result, stream):
            return SyncStream(result, op, on_chunk), True
        if isinstance(result, async_stream):
            return AsyncStream(result, op, on_chunk), True
        if kwargs.get("stream") is True and isinstance(result, raw):
            # with_raw_response / with_streaming_response: the body is still to come
            return RawResponse(result, op, on_chunk), True
        _usage(op.call, getattr(result, "usage", None))
        op.call.response_model(getattr(result, "model", None))
        if getattr(result, "status", None) == "failed":  # a Responses object that failed
            op.call.error("response_failed")
        return result, False

    return finish


_ON_CHUNK = {"chat": on_chat_chunk, "responses": on_response_event,
             "completion": on_completion_chunk}


def _helper_close(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        raw = getattr(instance, "_raw_stream", None)
        if isinstance(raw, SyncStream | AsyncStream):
            raw._self_end(None, abandoned=True)


async def _ahelper_close(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        raw = getattr(instance, "_raw_stream", None)
        if isinstance(raw, SyncStream | AsyncStream):
            await raw._self_aend(None, abandoned=True)


def _targets() -> tuple[list[Target], list[str]]:
    """What to wrap in the installed openai, and what this version lacks (for the log)."""
    targets, missing = [], []
    for paths, method, operation, kind in _SURFACES:
        cls = find_class(*paths)
        if cls is None or not callable(getattr(cls, method, None)):
            missing.append(f"{paths[0].rpartition(':')[2]}.{method}")
            continue
        factory = async_operation if cls.__name__.startswith("Async") else sync_operation
        targets.append(Target(cls, method, factory(_describe(operation, method),
                                                   _finisher(_ON_CHUNK[kind]))))
    for path in _HELPER_STREAMS:
        cls = find_class(path)
        if cls is not None and callable(getattr(cls, "close", None)):
            wrapper = _ahelper_close if cls.__name__.startswith("Async") else _helper_close
            targets.append(Target(cls, "close", wrapper))
    # the retry budget's veto: openai 3.x asks _RequestBodyReplay.rewind before every retry;
    # earlier loops ask BaseClient._should_retry before HTTP-status retries only
    replay = find_class("openai._base_client:_RequestBodyReplay")
    if replay is not None:
        targets.append(Target(replay, "rewind", _attempts.veto_bool))
    else:
        base = find_class("openai._base_client:BaseClient")
        if base is not None:
            targets.append(Target(base, "_should_retry", _attempts.veto_bool))
    return targets, missing


class OpenAIInstrumentor(BaseInstrumentor):
    """Records every model call made through the ``openai`` SDK; see the module docstring.

    All-or-nothing: every wrapper is applied or none is (one INFO line says why);
    ``uninstrument()`` restores every original.
    """

    _patches = PatchSet("openai")

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        if self._patches.active:
            return
        targets, missing = _targets()
        if not _transport.acquire("openai"):
            _log.info("redline: openai: no HTTP client hook; not instrumenting openai")
            return
        if not self._patches.apply(targets):
            _transport.release("openai")
            return
        if missing:
            _log.debug("redline: openai: this version has no %s", ", ".join(missing))
        if find_class("openai._base_client:_RequestBodyReplay") is None:
            _log.info("redline: openai: %s", BUDGET_NOTE)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._patches.restore()
        _transport.release("openai")
