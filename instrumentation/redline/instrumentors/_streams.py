"""Stream proxies that end their model call exactly once, however the stream ends.

The app iterates the SDK's stream through a ``wrapt.ObjectProxy``; every chunk goes to a
provider-specific ``on_chunk(call, chunk)`` (TTFT, chunk gaps, usage). The call ends on the
first of: the last chunk (``StopIteration``), an error from the SDK while reading,
``close()``, ``__exit__``, or garbage collection of an abandoned stream. A stream the app
abandons (break, close, an exception in its own loop) ends without ``error.type`` and its
duration runs to the last chunk received.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import wrapt

from redline._api.guard import report
from redline._api.model_call import ModelCall

__all__ = ["SyncStream", "AsyncStream", "RawResponse", "OnChunk"]

OnChunk = Callable[[ModelCall, Any], None]


class _Finalizing:
    """The shared once-only end of both proxies (mixed into the ObjectProxy subclasses)."""

    def _self_end(self, error: BaseException | None, abandoned: bool = False) -> None:
        op = getattr(self, "_self_op", None)
        if op is None or op.call.ended:
            return
        try:
            op.finish(error, at=op.call.last_chunk_at if abandoned else None)
        except Exception as exc:
            report("stream_end", exc)

    async def _self_aend(self, error: BaseException | None, abandoned: bool = False) -> None:
        op = getattr(self, "_self_op", None)
        if op is None or op.call.ended:
            return
        try:
            await op.afinish(error, at=op.call.last_chunk_at if abandoned else None)
        except Exception as exc:
            report("stream_end", exc)

    def __del__(self) -> None:
        self._self_end(None, abandoned=True)


class SyncStream(_Finalizing, wrapt.ObjectProxy):
    """Proxy of a synchronous SDK stream (``openai.Stream``, ``anthropic.Stream``).

    Args:
        wrapped: the SDK's stream.
        op: the running operation (:class:`redline.instrumentors._operation.Operation`).
        on_chunk: called with the model call and each chunk.
    """

    def __init__(self, wrapped: Any, op: Any, on_chunk: OnChunk) -> None:
        super().__init__(wrapped)
        self._self_op = op
        self._self_on_chunk = on_chunk
        self._self_call = op.call  # per chunk: one attribute, not two

    def __iter__(self) -> Any:
        # A generator, as the SDK streams' own __iter__ is: resuming one per chunk costs less
        # than a Python-level __next__ call (``for chunk in stream``, the common use).
        return self._self_iterate(iter(self.__wrapped__))

    def _self_iterate(self, chunks: Any) -> Any:
        on_chunk, call = self._self_on_chunk, self._self_call
        try:
            for chunk in chunks:
                try:
                    on_chunk(call, chunk)
                except Exception as exc:
                    report("stream_chunk", exc)
                yield chunk
        except GeneratorExit:  # the loop was left (break): close() or GC ends the call
            raise
        except BaseException as exc:
            self._self_end(exc)
            raise
        self._self_end(None)

    def __next__(self) -> Any:
        try:
            chunk = self.__wrapped__.__next__()
        except StopIteration:
            self._self_end(None)
            raise
        except BaseException as exc:
            self._self_end(exc)
            raise
        try:  # once per chunk: kept to one call and two attribute reads
            self._self_on_chunk(self._self_call, chunk)
        except Exception as exc:
            report("stream_chunk", exc)
        return chunk

    def __enter__(self) -> SyncStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_end(None, abandoned=True)

    def close(self) -> None:
        """Close the SDK stream and end the call."""
        try:
            self.__wrapped__.close()
        finally:
            self._self_end(None, abandoned=True)


class AsyncStream(_Finalizing, wrapt.ObjectProxy):
    """Async twin of :class:`SyncStream` (``openai.AsyncStream``, ``anthropic.AsyncStream``)."""

    def __init__(self, wrapped: Any, op: Any, on_chunk: OnChunk) -> None:
        super().__init__(wrapped)
        self._self_op = op
        self._self_on_chunk = on_chunk
        self._self_call = op.call

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            await self._self_aend(None)
            raise
        except BaseException as exc:
            await self._self_aend(exc)
            raise
        try:  # once per chunk: kept to one call and two attribute reads
            self._self_on_chunk(self._self_call, chunk)
        except Exception as exc:
            report("stream_chunk", exc)
        return chunk

    async def __aenter__(self) -> AsyncStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            await self._self_aend(None, abandoned=True)

    async def close(self) -> None:
        """Close the SDK stream and end the call."""
        try:
            await self.__wrapped__.close()
        finally:
            await self._self_aend(None, abandoned=True)


class RawResponse(_Finalizing, wrapt.ObjectProxy):
    """Proxy of the SDK's response object for a streamed call made through
    ``with_raw_response`` or ``with_streaming_response``: the call runs until the body ends,
    not until the headers arrive.

    ``parse()`` returns the SDK stream behind a :class:`SyncStream` / :class:`AsyncStream`,
    which then owns the end; otherwise ``close()`` (the end of a ``with_streaming_response``
    block) or garbage collection ends the call.
    """

    def __init__(self, wrapped: Any, op: Any, on_chunk: OnChunk) -> None:
        super().__init__(wrapped)
        self._self_op = op
        self._self_on_chunk = on_chunk
        self._self_parsed: tuple[Any, Any] | None = None  # (the SDK's stream, our proxy)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        """The SDK's ``parse()``; a stream comes back proxied."""
        value = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(value):  # AsyncAPIResponse.parse
            return self._self_aparse(value)
        return self._self_hand_over(value)

    async def _self_aparse(self, pending: Any) -> Any:
        return self._self_hand_over(await pending)

    def _self_hand_over(self, value: Any) -> Any:
        parsed = self._self_parsed
        if parsed is not None:
            return parsed[1] if value is parsed[0] else value
        try:
            cls = (AsyncStream if hasattr(value, "__anext__")
                   else SyncStream if hasattr(value, "__next__") else None)
            if cls is None or self._self_op.call.ended:
                return value
            self._self_parsed = (value, cls(value, self._self_op, self._self_on_chunk))
            return self._self_parsed[1]
        except Exception as exc:
            report("stream_raw", exc)
            return value

    def close(self) -> Any:
        """Close the response and end the call (``AsyncAPIResponse.close`` is awaited)."""
        try:
            result = self.__wrapped__.close()
        except BaseException:
            self._self_end(None, abandoned=True)
            raise
        if inspect.isawaitable(result):
            return self._self_aclose(result)
        self._self_end(None, abandoned=self._self_parsed is not None)
        return result

    async def _self_aclose(self, pending: Any) -> Any:
        try:
            return await pending
        finally:
            await self._self_aend(None, abandoned=self._self_parsed is not None)

    def __del__(self) -> None:
        if self._self_parsed is None:  # else the stream proxy ends the call
            self._self_end(None, abandoned=True)
