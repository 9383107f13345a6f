"""Hooks inside the SDKs' own retry loops: every HTTP attempt, its cause, the backoff.

openai 3.x and anthropic 2.x (both Stainless-generated) run a ``for retries_taken in ...``
loop in ``SyncAPIClient.request`` / ``AsyncAPIClient.request``; each iteration sends one
HTTP request, and ``_sleep_for_retry`` waits before the next. Redline wraps, per SDK:

* the per-attempt send (openai ``_send_request``, anthropic ``_attempt_request``): one
  ``redline.client.attempts`` sample with its cause and ``redline.client.attempt.duration``
  (request sent -> response headers, or -> the failure), and any ``Retry-After``;
* ``_sleep_for_retry``: ``redline.client.retries`` and ``redline.client.retry.backoff``;
* the retry decision (openai ``_RequestBodyReplay.rewind``, anthropic ``_should_retry`` /
  ``_should_retry_exception``): the limiter's retry budget can veto a retry, and the SDK
  then raises the error it would raise with no retries left.

Attempts find their model call through a context variable set by the operation wrapper,
so concurrent calls (threads or asyncio tasks) never mix their attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redline._api.guard import guarded
from redline._api.model_call import current_model_call
from redline.instrumentors import _limits

__all__ = [
    "cause_of_status",
    "cause_of_exception",
    "sync_attempt",
    "async_attempt",
    "sync_sleep",
    "async_sleep",
    "veto_bool",
    "veto_pair",
]


def cause_of_status(status: int) -> str:
    """``ok`` for 2xx/3xx, else ``http_<code>`` (a bounded set: HTTP status codes)."""
    return "ok" if status < 400 else f"http_{int(status)}"


def cause_of_exception(exc: BaseException) -> str:
    """``timeout``, ``cancelled`` or ``connection_error`` for an attempt that got no response."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    for cls in type(exc).__mro__:
        if "Timeout" in cls.__name__:
            return "timeout"
    return "connection_error"


def _response_of(result: Any) -> Any:
    # openai's _send_request returns the response; anthropic's _attempt_request (response, options)
    return result[0] if isinstance(result, tuple) else result


def _record(instance: Any, start: float, result: Any = None,
            exc: BaseException | None = None) -> None:
    call = current_model_call()
    if call is None:
        return
    with guarded("attempt"):
        duration = time.perf_counter() - start
        if exc is not None:
            call.attempt(cause_of_exception(exc), duration)
            return
        response = _response_of(result)
        status = int(response.status_code)
        retry_after = None
        if status >= 400:
            retry_after = instance._parse_retry_after_header(response.headers)
        call.attempt(cause_of_status(status), duration, retry_after)


def _note_remaining(instance: Any, args: tuple, kwargs: dict) -> None:
    """anthropic's ``_attempt_request(options, retries_taken=...)``: retries left after it."""
    call = current_model_call()
    if call is None or "retries_taken" not in kwargs or not args:
        return
    with guarded("attempt"):
        max_retries = args[0].get_max_retries(instance.max_retries)
        call.retries_remaining = max_retries - int(kwargs["retries_taken"])


def sync_attempt(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Wrapper of the per-attempt send of a synchronous client."""
    _note_remaining(instance, args, kwargs)
    start = time.perf_counter()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _record(instance, start, exc=exc)
        raise
    _record(instance, start, result)
    return result


async def async_attempt(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Async twin of :func:`sync_attempt`."""
    _note_remaining(instance, args, kwargs)
    start = time.perf_counter()
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _record(instance, start, exc=exc)
        raise
    _record(instance, start, result)
    return result


def _record_retry(start: float) -> None:
    call = current_model_call()
    if call is not None:
        with guarded("retry"):
            call.retry(time.perf_counter() - start)


def sync_sleep(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Wrapper of ``_sleep_for_retry``: the backoff actually waited, then a retry follows."""
    start = time.perf_counter()
    result = wrapped(*args, **kwargs)
    _record_retry(start)
    return result


async def async_sleep(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Async twin of :func:`sync_sleep`."""
    start = time.perf_counter()
    result = await wrapped(*args, **kwargs)
    _record_retry(start)
    return result


def _allowed() -> bool:
    call = current_model_call()
    if call is None:
        return True
    if call.retries_remaining is not None and call.retries_remaining <= 0:
        return True  # no retry would happen anyway: do not spend budget on it
    return _limits.retry_allowed(call.attrs)


def veto_bool(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> bool:
    """Wrapper of a retry decision returning ``bool``: the retry budget may turn it off."""
    decision = wrapped(*args, **kwargs)
    if decision:
        decision = _allowed()
    return decision


def veto_pair(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Wrapper of anthropic's ``_should_retry_exception`` -> ``(retry, response)``.

    Only the no-response case is decided here; with a response, ``_should_retry`` (wrapped
    by :func:`veto_bool`) already asked the budget.
    """
    decision = wrapped(*args, **kwargs)
    try:
        retry, response = decision
    except (TypeError, ValueError):
        return decision
    if retry and response is None and not _allowed():
        return False, None
    return decision
