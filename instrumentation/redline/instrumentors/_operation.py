"""Wrapper factories shared by the SDK instrumentors: one model call per SDK method call.

``sync_operation(describe, finish)`` returns ``traced(wrapped, instance, args, kwargs)`` for
``wrapt.wrap_function_wrapper``; ``async_operation`` is its twin. ``describe`` says what the
call is (or ``None`` to leave it alone); ``finish(op, result, kwargs)`` returns
``(value, owned)``: the value the app gets and whether that value (a stream proxy) now owns
the end of the call. When it does not, the wrapper ends the call as soon as ``finish`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redline._api.guard import report
from redline._api.model_call import ModelCall, current_sdk_call
from redline.instrumentors import _limits
from redline.instrumentors._limits import Slot

__all__ = ["Operation", "sync_operation", "async_operation", "server_of", "sdk_call"]


class Operation:
    """A running model call and the limiter slot it holds; :meth:`finish` ends both, once."""

    def __init__(self, call: ModelCall, slot: Slot | None) -> None:
        self.call, self.slot = call, slot

    def finish(self, error: BaseException | str | None = None, *, at: float | None = None) -> None:
        """End the call and release the slot (from synchronous code: close, GC, ``__exit__``)."""
        self.call.end(error, at=at)
        if self.slot is not None:
            self.slot.release(error if isinstance(error, BaseException) else None)

    async def afinish(self, error: BaseException | str | None = None, *,
                      at: float | None = None) -> None:
        """Async twin of :meth:`finish`."""
        self.call.end(error, at=at)
        if self.slot is not None:
            await self.slot.arelease(error if isinstance(error, BaseException) else None)


Describe = Callable[[Any, tuple, dict], "dict | None"]
Finish = Callable[[Operation, Any, dict], "tuple[Any, bool]"]


_DEFAULT_PORTS = {"https": 443, "http": 80}
# id(base_url) -> (the URL object, its address and port); a client keeps its URL object until
# base_url is set again, so the identity check below sees a change
_servers: dict[int, tuple[Any, str | None, int | None]] = {}


def server_of(instance: Any) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` from the resource's client ``base_url``."""
    client = instance._client
    # the URL object itself: openai 3.x's base_url property runs an import per read
    url = getattr(client, "_base_url", None)
    if url is None:
        url = client.base_url
    found = _servers.get(id(url))
    if found is not None and found[0] is url:
        return found[1], found[2]
    address, port = url.host or None, url.port or _DEFAULT_PORTS.get(url.scheme)
    if len(_servers) >= 64:  # many clients or URLs: keep the newest only
        _servers.clear()
    _servers[id(url)] = (url, address, port)
    return address, port


def sdk_call(spec: dict, instance: Any) -> ModelCall:
    """A :class:`ModelCall` for an SDK resource method: its HTTP attempts are counted at the
    client's ``send`` (:mod:`redline.instrumentors._transport`), and its client's
    ``max_retries`` bounds what the retry budget is asked."""
    call = ModelCall(**spec)
    call.sdk_attempts = True
    max_retries = getattr(getattr(instance, "_client", None), "max_retries", None)
    call.max_retries = max_retries if isinstance(max_retries, int) else None
    return call


def _call_for(describe: Describe, instance: Any, args: tuple, kwargs: dict) -> ModelCall | None:
    try:
        spec = describe(instance, args, kwargs)
        return None if spec is None else sdk_call(spec, instance)
    except Exception as exc:
        report("describe", exc)
        return None


def sync_operation(describe: Describe, finish: Finish) -> Callable[..., Any]:
    """The wrapper of a synchronous SDK method that makes one model call."""

    def traced(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        # an SDK call already running in this context: a surface that calls another
        # instrumented one (a 1.x ``beta...parse`` calling ``create``) is one call, not two
        call = (None if current_sdk_call() is not None
                else _call_for(describe, instance, args, kwargs))
        if call is None:
            return wrapped(*args, **kwargs)
        slot = _limits.acquire_sync(call.route)
        op = Operation(call, slot)
        call.start()
        token = call.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            op.finish(exc)
            raise
        finally:
            call.deactivate(token)
        value, owned = _finish(finish, op, result, kwargs)
        if not owned:
            op.finish()
        return value

    return traced


def async_operation(describe: Describe, finish: Finish) -> Callable[..., Any]:
    """Async twin of :func:`sync_operation`."""

    async def traced(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        # an SDK call already running in this context: a surface that calls another
        # instrumented one (a 1.x ``beta...parse`` calling ``create``) is one call, not two
        call = (None if current_sdk_call() is not None
                else _call_for(describe, instance, args, kwargs))
        if call is None:
            return await wrapped(*args, **kwargs)
        slot = await _limits.acquire_async(call.route)
        op = Operation(call, slot)
        call.start()
        token = call.activate()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            await op.afinish(exc)
            raise
        finally:
            call.deactivate(token)
        value, owned = _finish(finish, op, result, kwargs)
        if not owned:
            await op.afinish()
        return value

    return traced


def _finish(finish: Finish, op: Operation, result: Any, kwargs: dict) -> tuple[Any, bool]:
    """Hand ``result`` to ``finish``; if that fails, the app gets ``result`` as it came."""
    try:
        return finish(op, result, kwargs)
    except Exception as exc:
        report("finish", exc)
        return result, False
