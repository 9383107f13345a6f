"""The hooks into redline's client-side limiter (:mod:`redline.limiter.wiring`), if present.

The limiter decides; the instrumentors only ask. A slot is held around the whole model
call (a stream releases it when it ends), and ``retry_allowed`` is consulted inside the
SDK's retry decision so a retry budget can stop a retry storm. When the limiter module is
missing or nothing is configured, every call here is a no-op.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redline._api.guard import report

__all__ = ["Slot", "acquire_sync", "acquire_async", "retry_allowed", "configured"]


_MISSING = object()
_wiring_module: Any = _MISSING  # imported on first use (an import statement per call costs)


def _wiring() -> Any:
    global _wiring_module
    if _wiring_module is _MISSING:
        try:
            from redline.limiter import wiring
        except ImportError:
            wiring = None
        _wiring_module = wiring
    return _wiring_module


def configured() -> bool:
    """Whether the app configured a limiter (only then does redline ever act on a call)."""
    wiring = _wiring()
    registry = getattr(wiring, "registry", None) if wiring is not None else None
    try:
        return registry is not None and registry() is not None
    except Exception as err:
        report("limiter", err)
        return False


class Slot:
    """A held limiter slot; :meth:`release` / :meth:`arelease` give it back exactly once."""

    def __init__(self, cm: Any, is_async: bool) -> None:
        self._cm, self._async, self._released = cm, is_async, False
        self._loop = asyncio.get_running_loop() if is_async else None

    def _take(self) -> Any:
        if self._released:
            return None
        self._released = True
        return self._cm

    def release(self, exc: BaseException | None = None) -> None:
        """Give the slot back from synchronous code (close, ``__exit__``, garbage collection).

        redline's limiter slots release synchronously (a lock and a hand-over to the next
        waiter's own loop), so an async slot is released here too, even when its event loop
        has closed (a stream returned out of ``asyncio.run()`` and collected later). Only a
        foreign async-only slot falls back to running its ``__aexit__`` on its loop.
        """
        cm = self._take()
        if cm is None:
            return
        exc_info = (type(exc) if exc else None, exc, None)
        try:
            sync_exit = getattr(cm, "__exit__", None)
            if sync_exit is not None:
                sync_exit(*exc_info)
                return
            coro = cm.__aexit__(*exc_info)
            loop = self._loop
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(coro)
            elif loop is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(coro, loop)
            else:
                coro.close()
                report("limiter_release", RuntimeError(
                    "an async-only limiter slot outlived its event loop and was not released"))
        except Exception as err:
            report("limiter_release", err)

    async def arelease(self, exc: BaseException | None = None) -> None:
        """Give the slot back from a coroutine."""
        cm = self._take()
        if cm is None:
            return
        try:
            if self._async:
                await cm.__aexit__(type(exc) if exc else None, exc, None)
            else:
                cm.__exit__(type(exc) if exc else None, exc, None)
        except Exception as err:
            report("limiter_release", err)


def _slot_cm(name: str, attrs: dict) -> Any:
    if not configured():  # no limiter configured: observe only, never act
        return None
    wiring = _wiring()
    factory = getattr(wiring, name, None) if wiring is not None else None
    if factory is None:
        return None
    try:
        return factory(dict(attrs))
    except Exception as err:
        report("limiter", err)
        return None


def acquire_sync(attrs: dict) -> Slot | None:
    """Wait for a slot (the limiter may raise to refuse the call: that reaches the app)."""
    cm = _slot_cm("call_slot", attrs)
    if cm is None:
        return None
    cm.__enter__()
    return Slot(cm, is_async=False)


async def acquire_async(attrs: dict) -> Slot | None:
    """Async twin of :func:`acquire_sync`."""
    cm = _slot_cm("async_call_slot", attrs)
    if cm is None:
        return None
    await cm.__aenter__()
    return Slot(cm, is_async=True)


def retry_allowed(attrs: dict) -> bool:
    """Whether the retry budget lets the SDK retry (``True`` without a limiter)."""
    wiring = _wiring()
    check = getattr(wiring, "retry_allowed", None) if wiring is not None else None
    if check is None:
        return True
    try:
        return bool(check(dict(attrs)))
    except Exception as err:
        report("limiter_retry", err)
        return True
