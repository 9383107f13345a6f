"""Instrumentation of the ``openai`` SDK (3.x): chat completions, responses, embeddings.

Works for OpenAI itself and any OpenAI-compatible server reached through ``base_url``
(vLLM, SGLang, TGI, llama.cpp, Ollama...): ``server.address``/``server.port`` come from the
client's ``base_url``. No prompt or completion text, and no key, is ever read into telemetry:
only the model name, the streaming flag, token counts and timings.

Example:
    >>> from redline.instrumentors.openai import OpenAIInstrumentor
    >>> OpenAIInstrumentor().instrument(meter_provider=provider)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from redline._api.model_call import ModelCall
from redline.instrumentors import _attempts
from redline.instrumentors._operation import (
    Operation,
    async_operation,
    server_of,
    sync_operation,
)
from redline.instrumentors._streams import AsyncStream, RawResponse, SyncStream

__all__ = ["OpenAIInstrumentor", "SUPPORTED"]

SUPPORTED = "openai >= 3.0, < 4"
PROVIDER = "openai"

# (module, resource class whose ``create`` is wrapped, gen_ai.operation.name)
_OPERATIONS = (
    ("openai.resources.chat.completions.completions", "Completions", "chat"),
    ("openai.resources.chat.completions.completions", "AsyncCompletions", "chat"),
    ("openai.resources.responses.responses", "Responses", "chat"),
    ("openai.resources.responses.responses", "AsyncResponses", "chat"),
    ("openai.resources.embeddings", "Embeddings", "embeddings"),
    ("openai.resources.embeddings", "AsyncEmbeddings", "embeddings"),
)
_HOOKS = (  # inside the retry loop; see redline.instrumentors._attempts
    ("SyncAPIClient", "_send_request", _attempts.sync_attempt),
    ("AsyncAPIClient", "_send_request", _attempts.async_attempt),
    ("SyncAPIClient", "_sleep_for_retry", _attempts.sync_sleep),
    ("AsyncAPIClient", "_sleep_for_retry", _attempts.async_sleep),
    ("_RequestBodyReplay", "rewind", _attempts.veto_bool),
)


def _describe(operation: str):
    def describe(instance: Any, args: tuple, kwargs: dict) -> dict:
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


def on_chat_chunk(call: ModelCall, chunk: Any) -> None:
    """A ``ChatCompletionChunk``: content (text, tool call, refusal) or usage-only."""
    content = False
    for choice in chunk.choices or ():
        delta = choice.delta
        if delta is not None and (delta.content or delta.tool_calls or delta.refusal):
            content = True
            break
    call.chunk(content=content)
    if chunk.usage is not None:
        _usage(call, chunk.usage)


def on_response_event(call: ModelCall, event: Any) -> None:
    """A Responses API stream event: ``*.delta`` events are content; the final one has usage."""
    kind = getattr(event, "type", "") or ""
    call.chunk(content=kind.endswith(".delta"))
    if kind in ("response.completed", "response.incomplete", "response.failed"):
        _usage(call, getattr(getattr(event, "response", None), "usage", None))


def _finisher(on_chunk):
    def finish(op: Operation, result: Any, kwargs: dict) -> tuple[Any, bool]:
        import openai
        from openai._legacy_response import LegacyAPIResponse
        from openai._response import BaseAPIResponse

        if kwargs.get("stream") is True and isinstance(result,
                                                      (LegacyAPIResponse, BaseAPIResponse)):
            # with_raw_response / with_streaming_response: the body is still to come
            return RawResponse(result, op, on_chunk), True
        if isinstance(result, openai.Stream):
            return SyncStream(result, op, on_chunk), True
        if isinstance(result, openai.AsyncStream):
            return AsyncStream(result, op, on_chunk), True
        _usage(op.call, getattr(result, "usage", None))
        return result, False

    return finish


_ON_CHUNK = {"Completions": on_chat_chunk, "AsyncCompletions": on_chat_chunk,
             "Responses": on_response_event, "AsyncResponses": on_response_event,
             "Embeddings": on_chat_chunk, "AsyncEmbeddings": on_chat_chunk}


class OpenAIInstrumentor(BaseInstrumentor):
    """Records every model call made through the ``openai`` SDK; see the module docstring."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        for module, cls, operation in _OPERATIONS:
            factory = async_operation if cls.startswith("Async") else sync_operation
            wrap_function_wrapper(module, f"{cls}.create",
                                  factory(_describe(operation), _finisher(_ON_CHUNK[cls])))
        for cls, method, wrapper in _HOOKS:
            wrap_function_wrapper("openai._base_client", f"{cls}.{method}", wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        for module, cls, _ in _OPERATIONS:
            unwrap(getattr(importlib.import_module(module), cls), "create")
        base = importlib.import_module("openai._base_client")
        for cls, method, _ in _HOOKS:
            unwrap(getattr(base, cls), method)
