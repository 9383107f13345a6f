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

# (where the resource class has lived across releases, gen_ai.operation.name, chunk handler key)
_SURFACES = (
    (("openai.resources.chat.completions:Completions",), "chat", "chat"),
    (("openai.resources.chat.completions:AsyncCompletions",), "chat", "chat"),
    (("openai.resources.responses:Responses",), "chat", "responses"),  # openai >= 1.66
    (("openai.resources.responses:AsyncResponses",), "chat", "responses"),
    (("openai.resources.embeddings:Embeddings",), "embeddings", "chat"),
    (("openai.resources.embeddings:AsyncEmbeddings",), "embeddings", "chat"),
)
BUDGET_NOTE = ("the retry budget can stop HTTP-status retries (429, 5xx) on every supported "
               "openai version, and timeout/connection-error retries on openai >= 3.0")


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


_ON_CHUNK = {"chat": on_chat_chunk, "responses": on_response_event}


def _targets() -> tuple[list[Target], list[str]]:
    """What to wrap in the installed openai, and what this version lacks (for the log)."""
    targets, missing = [], []
    for paths, operation, kind in _SURFACES:
        cls = find_class(*paths)
        if cls is None:
            missing.append(paths[0].rpartition(":")[2])
            continue
        factory = async_operation if cls.__name__.startswith("Async") else sync_operation
        targets.append(Target(cls, "create",
                              factory(_describe(operation), _finisher(_ON_CHUNK[kind]))))
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
