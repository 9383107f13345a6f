"""Instrumentation of the ``anthropic`` SDK (0.28 - 2.x): ``messages`` and ``beta.messages``.

``messages.create(stream=True)`` returns a raw event stream, proxied like openai's.
``messages.stream(...)`` returns a context manager; the model call starts when it is entered
(that is when the request goes out) and the raw event stream inside the ``MessageStream``
is proxied, so ``text_stream``, ``until_done()`` and ``get_final_message()`` are all seen.

Example:
    >>> from redline.instrumentors.anthropic import AnthropicInstrumentor
    >>> AnthropicInstrumentor().instrument(meter_provider=provider)
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from redline._api.guard import report
from redline._api.model_call import ModelCall
from redline.instrumentors import _attempts, _limits, _transport
from redline.instrumentors._operation import (
    Operation,
    async_operation,
    sdk_call,
    server_of,
    sync_operation,
)
from redline.instrumentors._patching import PatchSet, Target, find_class
from redline.instrumentors._streams import AsyncStream, RawResponse, SyncStream

__all__ = ["AnthropicInstrumentor", "SUPPORTED", "on_event"]

# 0.28 is the first release whose MessageStream reads a separate raw event stream
# (``_raw_stream``): that is what lets redline see every event of ``messages.stream()``
# whichever helper (text_stream, until_done, get_final_message) the app reads it through.
SUPPORTED = "anthropic >= 0.28, < 3"
PROVIDER = "anthropic"
_log = logging.getLogger("redline")
_MESSAGES = "anthropic.resources.messages"  # a module before 0.4x, a package after
BUDGET_NOTE = ("the retry budget can stop HTTP-status retries (429, 5xx) on every supported "
               "anthropic version, and timeout/connection-error retries on releases with "
               "BaseClient._should_retry_exception (recent 0.x, 1.x, 2.x)")


def _describe(instance: Any, args: tuple, kwargs: dict, *, streaming: bool | None = None) -> dict:
    address, port = server_of(instance)
    return dict(provider=PROVIDER, model=kwargs.get("model"), server_address=address,
                server_port=port, operation="chat",
                streaming=(kwargs.get("stream") is True) if streaming is None else streaming)


def _input_tokens(usage: Any) -> int | None:
    """Every prompt token the model took in, cached or not: ``input_tokens`` plus
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (anthropic reports them
    apart; openai's ``prompt_tokens`` already includes its cached tokens)."""
    parts = [getattr(usage, name, None) for name in
             ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
    if parts[0] is None:
        return None
    return sum(int(p) for p in parts if isinstance(p, int))


def _record_usage(call: ModelCall, usage: Any) -> None:
    if usage is not None:
        call.usage(input_tokens=_input_tokens(usage),
                   output_tokens=getattr(usage, "output_tokens", None))


def _block_start_is_output(event: Any) -> bool:
    """A ``content_block_start`` of a tool call carries generated output (the tool's name)."""
    block = getattr(event, "content_block", None)
    kind = getattr(block, "type", "") or ""
    return kind.endswith("tool_use") or bool(getattr(block, "text", None))


def on_event(call: ModelCall, event: Any) -> None:
    """A raw Messages stream event: every ``content_block_delta`` (text, thinking, tool
    input) and a tool call's ``content_block_start`` are generated output; start and delta
    carry usage."""
    kind = getattr(event, "type", None)
    call.chunk(content=kind == "content_block_delta"
               or (kind == "content_block_start" and _block_start_is_output(event)))
    if kind == "message_start":
        message = getattr(event, "message", None)
        call.response_model(getattr(message, "model", None))
        _record_usage(call, getattr(message, "usage", None))
    elif kind == "message_delta":
        _record_usage(call, getattr(event, "usage", None))


def _raw_response_types() -> tuple[type, ...]:
    """``with_raw_response`` gives a ``LegacyAPIResponse`` in many releases, else an APIResponse."""
    found = [find_class("anthropic._response:BaseAPIResponse"),
             find_class("anthropic._legacy_response:LegacyAPIResponse")]
    return tuple(cls for cls in found if cls is not None)


def _finish(op: Operation, result: Any, kwargs: dict) -> tuple[Any, bool]:
    import anthropic

    if kwargs.get("stream") is True and isinstance(result, _raw_response_types()):
        # with_raw_response / with_streaming_response: the body is still to come
        return RawResponse(result, op, on_event), True
    if isinstance(result, anthropic.Stream):
        return SyncStream(result, op, on_event), True
    if isinstance(result, anthropic.AsyncStream):
        return AsyncStream(result, op, on_event), True
    _record_usage(op.call, getattr(result, "usage", None))
    op.call.response_model(getattr(result, "model", None))
    return result, False


# --- messages.stream(): a context manager whose __enter__ sends the request ----------------
def _proxy_raw_stream(message_stream: Any, op: Operation, proxy_cls: type) -> None:
    """Swap the ``MessageStream``'s raw event stream for our proxy (before it is iterated)."""
    try:
        message_stream._raw_stream = proxy_cls(message_stream._raw_stream, op, on_event)
    except Exception as exc:  # an SDK layout we do not know: end the call now, keep the app
        report("anthropic_stream", exc)
        op.finish()


class _StreamManager(wrapt.ObjectProxy):
    """Proxy of ``MessageStreamManager``: the call runs from ``__enter__`` to the stream's end."""

    def __init__(self, wrapped: Any, spec: dict | None, resource: Any) -> None:
        super().__init__(wrapped)
        self._self_spec = spec
        self._self_resource = resource
        self._self_op: Operation | None = None

    def __enter__(self) -> Any:
        if self._self_spec is None:
            return self.__wrapped__.__enter__()
        call = sdk_call(self._self_spec, self._self_resource)
        op = self._self_op = Operation(call, _limits.acquire_sync(call.route))
        call.start()
        token = call.activate()
        try:
            stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            op.finish(exc)
            raise
        finally:
            call.deactivate(token)
        _proxy_raw_stream(stream, op, SyncStream)
        return stream

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            op = self._self_op
            if op is not None and not op.call.ended:
                op.finish(None, at=op.call.last_chunk_at)


class _AsyncStreamManager(wrapt.ObjectProxy):
    """Async twin of :class:`_StreamManager` (``AsyncMessageStreamManager``)."""

    def __init__(self, wrapped: Any, spec: dict | None, resource: Any) -> None:
        super().__init__(wrapped)
        self._self_spec = spec
        self._self_resource = resource
        self._self_op: Operation | None = None

    async def __aenter__(self) -> Any:
        if self._self_spec is None:
            return await self.__wrapped__.__aenter__()
        call = sdk_call(self._self_spec, self._self_resource)
        op = self._self_op = Operation(call, await _limits.acquire_async(call.route))
        call.start()
        token = call.activate()
        try:
            stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            await op.afinish(exc)
            raise
        finally:
            call.deactivate(token)
        _proxy_raw_stream(stream, op, AsyncStream)
        return stream

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            op = self._self_op
            if op is not None and not op.call.ended:
                await op.afinish(None, at=op.call.last_chunk_at)


def _stream_wrapper(manager_cls: type):
    def traced(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        manager = wrapped(*args, **kwargs)
        try:
            spec = _describe(instance, args, kwargs, streaming=True)
        except Exception as exc:
            report("describe", exc)
            spec = None
        return manager_cls(manager, spec, instance)

    return traced


_BETA = "anthropic.resources.beta.messages"


def _targets() -> list[Target]:
    messages = find_class(f"{_MESSAGES}:Messages")
    amessages = find_class(f"{_MESSAGES}:AsyncMessages")
    if messages is None or amessages is None:
        return []
    targets = []
    # messages.* and beta.messages.* (where the release has them): create, parse, stream
    for sync_cls, async_cls in ((messages, amessages),
                                (find_class(f"{_BETA}:Messages"),
                                 find_class(f"{_BETA}:AsyncMessages"))):
        if sync_cls is None or async_cls is None:
            continue
        for method in ("create", "parse"):
            if callable(getattr(sync_cls, method, None)):
                targets.append(Target(sync_cls, method, sync_operation(_describe, _finish)))
            if callable(getattr(async_cls, method, None)):
                targets.append(Target(async_cls, method, async_operation(_describe, _finish)))
        if callable(getattr(sync_cls, "stream", None)):
            targets.append(Target(sync_cls, "stream", _stream_wrapper(_StreamManager)))
        if callable(getattr(async_cls, "stream", None)):
            targets.append(Target(async_cls, "stream", _stream_wrapper(_AsyncStreamManager)))
    base = find_class("anthropic._base_client:BaseClient")
    if base is not None:
        targets.append(Target(base, "_should_retry", _attempts.veto_bool))
        if callable(getattr(base, "_should_retry_exception", None)):
            targets.append(Target(base, "_should_retry_exception", _attempts.veto_pair))
    return targets


class AnthropicInstrumentor(BaseInstrumentor):
    """Records every model call made through the ``anthropic`` SDK; see the module docstring.

    All-or-nothing: every wrapper is applied or none is (one INFO line says why);
    ``uninstrument()`` restores every original.
    """

    _patches = PatchSet("anthropic")

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        if self._patches.active:
            return
        targets = _targets()
        if not targets:
            _log.info("redline: anthropic: no Messages resource found; not instrumenting")
            return
        if not _transport.acquire("anthropic"):
            _log.info("redline: anthropic: no HTTP client hook; not instrumenting anthropic")
            return
        if not self._patches.apply(targets):
            _transport.release("anthropic")
            return
        if not any(t.name == "_should_retry_exception" for t in targets):
            _log.info("redline: anthropic: %s", BUDGET_NOTE)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._patches.restore()
        _transport.release("anthropic")
