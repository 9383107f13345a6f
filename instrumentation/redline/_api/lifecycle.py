"""The shape shared by :func:`model_call`, :func:`agent_session` and :func:`tool_call`.

Each is an object you can use four ways, all ending it exactly once:

* ``with x: ...`` and ``async with x: ...`` — one use per object;
* ``@x`` on a function, a coroutine function, a generator or an async generator function —
  a fresh copy per invocation, open for as long as the call runs (for a generator: from the
  first ``next`` to its end, ``close()`` or garbage collection, not just its creation);
* ``x.start()`` / ``x.end()`` by hand (``end`` is idempotent).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from redline._api.guard import guarded
from redline.semconv import CANCELLED

__all__ = ["Lifecycle", "error_type"]

F = TypeVar("F", bound=Callable[..., Any])
_CANCELLATIONS = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)


def error_type(error: BaseException | str | None) -> str | None:
    """The bounded ``error.type`` value of an exception (its class name) or a given string."""
    if error is None or isinstance(error, str):
        return error
    if isinstance(error, _CANCELLATIONS):  # the caller gave up: recorded, but not a failure
        return CANCELLED
    return type(error).__name__


class Lifecycle:
    """Start/end bookkeeping with an end that runs once, whatever the way out."""

    _component = "lifecycle"

    def __init__(self) -> None:
        self._started = False
        self._end_once = threading.Lock()  # acquired (never released) by the one real end

    # --- to implement ---------------------------------------------------------------
    def _on_start(self) -> None:
        raise NotImplementedError

    def _on_end(self, error: str | None, at: float | None) -> None:
        raise NotImplementedError

    def _clone(self) -> Lifecycle:
        raise NotImplementedError

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> Lifecycle:
        """Begin: count it in flight and start the clock. Returns ``self``."""
        if not self._started:
            self._started = True
            with guarded(self._component):
                self._on_start()
        return self

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` has run."""
        return self._end_once.locked()

    def end(self, error: BaseException | str | None = None, *, at: float | None = None) -> None:
        """Finish: record, and leave the in-flight count. Only the first call does anything.

        Args:
            error: the exception (or ``error.type`` string) the operation ended with.
            at: ``time.perf_counter()`` value of the end, when it was earlier than now.
        """
        if not self._started or not self._end_once.acquire(blocking=False):
            return
        with guarded(self._component):
            self._on_end(error_type(error), at)

    # --- protocols ------------------------------------------------------------------
    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(exc)

    async def __aenter__(self) -> Any:
        return self.start()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.end(exc)

    def __call__(self, func: F) -> F:
        """Decorate ``func``: each invocation runs inside a fresh copy.

        Sync and ``async`` functions are timed over the call; generator and async generator
        functions over the iteration (values sent and exceptions thrown in are passed on).
        """
        if inspect.isasyncgenfunction(func):
            return self._wrap_async_gen(func)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._clone():
                    return (yield from func(*args, **kwargs))

            return gen_wrapper  # type: ignore[return-value]
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._clone():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._clone():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _wrap_async_gen(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            # async generators have no `yield from`: delegate asend/athrow/aclose by hand
            inner = func(*args, **kwargs)
            with self._clone():
                sent: Any = None
                while True:
                    try:
                        item = await inner.asend(sent)
                    except StopAsyncIteration:
                        return
                    while True:
                        try:
                            sent = yield item
                            break
                        except GeneratorExit:
                            await inner.aclose()
                            raise
                        except BaseException as exc:  # thrown in by the consumer
                            try:
                                item = await inner.athrow(exc)
                            except StopAsyncIteration:
                                return

        return agen_wrapper
