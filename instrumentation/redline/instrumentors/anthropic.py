"""Instrumentation of the ``anthropic`` SDK (2.x): ``messages.create`` and ``messages.stream``.

``messages.create(stream=True)`` returns a raw event stream, proxied like openai's.
``messages.stream(...)`` returns a context manager; the model call starts when it is entered
(that is when the request goes out) and the raw event stream inside the ``MessageStream``
is proxied, so ``text_stream``, ``until_done()`` and ``get_final_message()`` are all seen.

Example:
    >>> from redline.instrumentors.anthropic import AnthropicInstrumentor
    >>> AnthropicInstrumentor().instrument(meter_provider=provider)
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from redline._api.guard import report
from redline._api.model_call import ModelCall
from redline.instrumentors import _attempts, _limits
from redline.instrumentors._operation import (
    Operation,
    async_operation,
    server_of,
    sync_operation,
)
from redline.instrumentors._streams import AsyncStream, RawResponse, SyncStream

__all__ = ["AnthropicInstrumentor", "SUPPORTED", "on_event"]

SUPPORTED = "anthropic >= 2.0, < 3"
PROVIDER = "anthropic"
_MESSAGES = "anthropic.resources.messages.messages"
_HOOKS = (  # inside the retry loop; see redline.instrumentors._attempts
    ("SyncAPIClient", "_attempt_request", _attempts.sync_attempt),
    ("AsyncAPIClient", "_attempt_request", _attempts.async_attempt),
    ("SyncAPIClient", "_sleep_for_retry", _attempts.sync_sleep),
    ("AsyncAPIClient", "_sleep_for_retry", _attempts.async_sleep),
    ("BaseClient", "_should_retry", _attempts.veto_bool),
    ("BaseClient", "_should_retry_exception", _attempts.veto_pair),
)


def _describe(instance: Any, args: tuple, kwargs: dict, *, streaming: bool | None = None) -> dict:
    address, port = server_of(instance)
    return dict(provider=PROVIDER, model=kwargs.get("model"), server_address=address,
                server_port=port, operation="chat",
                streaming=(kwargs.get("stream") is True) if streaming is None else streaming)


def on_event(call: ModelCall, event: Any) -> None:
    """A raw Messages stream event: content deltas are chunks; start and delta carry usage."""
    kind = getattr(event, "type", None)
    call.chunk(content=kind == "content_block_delta")
    if kind == "message_start":
        usage = getattr(getattr(event, "message", None), "usage", None)
        if usage is not None:
            call.usage(input_tokens=getattr(usage, "input_tokens", None),
                       output_tokens=getattr(usage, "output_tokens", None))
    elif kind == "message_delta":
        usage = getattr(event, "usage", None)
        if usage is not None:
            call.usage(input_tokens=getattr(usage, "input_tokens", None),
                       output_tokens=getattr(usage, "output_tokens", None))


def _finish(op: Operation, result: Any, kwargs: dict) -> tuple[Any, bool]:
    import anthropic
    from anthropic._response import BaseAPIResponse

    if kwargs.get("stream") is True and isinstance(result, BaseAPIResponse):
        # with_raw_response / with_streaming_response: the body is still to come
        return RawResponse(result, op, on_event), True
    if isinstance(result, anthropic.Stream):
        return SyncStream(result, op, on_event), True
    if isinstance(result, anthropic.AsyncStream):
        return AsyncStream(result, op, on_event), True
    usage = getattr(result, "usage", None)
    if usage is not None:
        op.call.usage(input_tokens=getattr(usage, "input_tokens", None),
                      output_tokens=getattr(usage, "output_tokens", None))
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

    def __init__(self, wrapped: Any, spec: dict | None) -> None:
        super().__init__(wrapped)
        self._self_spec = spec
        self._self_op: Operation | None = None

    def __enter__(self) -> Any:
        if self._self_spec is None:
            return self.__wrapped__.__enter__()
        call = ModelCall(**self._self_spec)
        op = self._self_op = Operation(call, _limits.acquire_sync(call.attrs))
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

    def __init__(self, wrapped: Any, spec: dict | None) -> None:
        super().__init__(wrapped)
        self._self_spec = spec
        self._self_op: Operation | None = None

    async def __aenter__(self) -> Any:
        if self._self_spec is None:
            return await self.__wrapped__.__aenter__()
        call = ModelCall(**self._self_spec)
        op = self._self_op = Operation(call, await _limits.acquire_async(call.attrs))
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
        return manager_cls(manager, spec)

    return traced


class AnthropicInstrumentor(BaseInstrumentor):
    """Records every model call made through the ``anthropic`` SDK; see the module docstring."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        wrap_function_wrapper(_MESSAGES, "Messages.create", sync_operation(_describe, _finish))
        wrap_function_wrapper(_MESSAGES, "AsyncMessages.create",
                              async_operation(_describe, _finish))
        wrap_function_wrapper(_MESSAGES, "Messages.stream", _stream_wrapper(_StreamManager))
        wrap_function_wrapper(_MESSAGES, "AsyncMessages.stream",
                              _stream_wrapper(_AsyncStreamManager))
        for cls, method, wrapper in _HOOKS:
            wrap_function_wrapper("anthropic._base_client", f"{cls}.{method}", wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        messages = importlib.import_module(_MESSAGES)
        for cls in ("Messages", "AsyncMessages"):
            unwrap(getattr(messages, cls), "create")
            unwrap(getattr(messages, cls), "stream")
        base = importlib.import_module("anthropic._base_client")
        for cls, method, _ in _HOOKS:
            unwrap(getattr(base, cls), method)
