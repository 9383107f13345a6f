"""Redline's own failures stay inside redline: swallowed, logged once, counted.

Every piece of instrumentation code that runs inside the app's call path goes through
:func:`guarded` (a context manager) or :func:`report`. The app never sees the exception;
``redline.instrumentation.errors{redline.component=...}`` counts it, and the first one of
each component is logged with its traceback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redline.semconv import Attr

__all__ = ["guarded", "report"]

_log = logging.getLogger("redline")
_logged: set[str] = set()
_lock = threading.Lock()


def report(component: str, exc: BaseException) -> None:
    """Count and (the first time per component) log an exception raised inside redline."""
    try:
        with _lock:
            first = component not in _logged
            _logged.add(component)
        if first:
            _log.warning("redline: internal error in %s (swallowed; later ones only counted)",
                         component, exc_info=exc)
        from redline.instruments import get_instruments

        get_instruments().instrumentation_errors.add(1, {Attr.COMPONENT: component})
    except Exception:  # pragma: no cover - reporting itself must never raise
        pass


class guarded:
    """Run a block of instrumentation code; an ``Exception`` in it is reported, not raised.

    A plain class, not ``contextlib.contextmanager``: it runs several times per model call,
    and a generator-based context manager costs about five times as much to enter and exit.
    ``BaseException`` (``KeyboardInterrupt``, ``CancelledError``) passes through.
    """

    __slots__ = ("component",)

    def __init__(self, component: str) -> None:
        self.component = component

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, Exception):
            report(self.component, exc)  # type: ignore[arg-type]
            return True
        return False
