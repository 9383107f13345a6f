"""Every HTTP attempt of an SDK call, seen where every supported SDK version sends it.

Both SDKs (openai 1.x-3.x, anthropic 0.28-2.x; all Stainless-generated) send each attempt
of their retry loop through their HTTP client's public ``send(request, stream=...)``: an
``httpx.Client`` / ``httpx.AsyncClient`` (or, in recent releases, the ``httpx2`` fork with
the same API). Redline wraps ``send`` on those classes, and records only while an
instrumented SDK call is current in the context
(:func:`redline._api.model_call.current_sdk_call`), so the app's own HTTP traffic is never
touched or counted.

Per attempt: ``redline.client.attempts`` with its cause (``ok``, ``http_<code>``,
``timeout``, ``connection_error``, ``cancelled``), ``redline.client.attempt.duration``
(request sent -> response headers, or -> the failure) and the server's ``Retry-After``.
An attempt after the first is a retry: ``redline.client.retries`` with the cause of the
attempt before it, and ``redline.client.retry.backoff`` = the time between the end of that
attempt and the start of this one (the SDK's sleep, ``Retry-After`` honoured or not).

The hook is shared by both SDK instrumentors: :func:`acquire` installs it on first use,
:func:`release` removes it when the last one uninstruments.
"""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import Callable
from typing import Any

from redline._api.guard import guarded
from redline._api.model_call import ModelCall, current_sdk_call
from redline.instrumentors._patching import PatchSet, Target, find_class

__all__ = ["acquire", "release", "cause_of_status", "cause_of_exception", "retry_after_of"]

_lock = threading.Lock()
_users: set[str] = set()
_patches = PatchSet("httpx")


def cause_of_status(status: int) -> str:
    """``ok`` for 2xx/3xx, else ``http_<code>`` (a bounded set: HTTP status codes)."""
    return "ok" if status < 400 else f"http_{int(status)}"


def cause_of_exception(exc: BaseException) -> str:
    """``timeout``, ``cancelled`` or ``connection_error`` for an attempt that got no response."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    for cls in type(exc).__mro__:
        if "Timeout" in cls.__name__:
            return "timeout"
    return "connection_error"


def retry_after_of(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if any."""
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return float(raw) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _begin(call: ModelCall) -> float:
    now = time.perf_counter()
    if call.attempt_count and call.last_attempt_end is not None:  # a retry
        with guarded("retry"):
            call.retry(now - call.last_attempt_end)
    return now


def _end(call: ModelCall, start: float, response: Any = None,
         exc: BaseException | None = None) -> None:
    with guarded("attempt"):
        now = time.perf_counter()
        if exc is not None:
            call.attempt(cause_of_exception(exc), now - start)
        else:
            status = int(response.status_code)
            retry_after = retry_after_of(response.headers) if status >= 400 else None
            call.attempt(cause_of_status(status), now - start, retry_after)
        call.last_attempt_end = now


def _sync_send(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    call = current_sdk_call()
    if call is None:
        return wrapped(*args, **kwargs)
    start = _begin(call)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        _end(call, start, exc=exc)
        raise
    _end(call, start, response)
    return response


async def _async_send(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    call = current_sdk_call()
    if call is None:
        return await wrapped(*args, **kwargs)
    start = _begin(call)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _end(call, start, exc=exc)
        raise
    _end(call, start, response)
    return response


def _targets() -> list[Target]:
    targets = []
    for lib in ("httpx", "httpx2"):
        sync_cls = find_class(f"{lib}:Client")
        async_cls = find_class(f"{lib}:AsyncClient")
        # only classes that define send themselves (a subclass would be wrapped twice)
        if sync_cls is not None and "send" in vars(sync_cls):
            targets.append(Target(sync_cls, "send", _sync_send))
        if async_cls is not None and "send" in vars(async_cls):
            targets.append(Target(async_cls, "send", _async_send))
    return targets


def acquire(user: str) -> bool:
    """Install the hook for ``user`` (an SDK instrumentor); ``False`` if it could not be."""
    with _lock:
        if not _patches.active:
            targets = _targets()
            if not targets or not _patches.apply(targets):
                return False
        _users.add(user)
        return True


def release(user: str) -> None:
    """``user`` no longer needs the hook; the last one out removes it."""
    with _lock:
        _users.discard(user)
        if not _users:
            _patches.restore()
