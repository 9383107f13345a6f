"""Bounded attribute values: model names and server addresses fold into ``_OTHER``.

A process that talks to a few models keeps their names; a process that sends arbitrary
user-chosen model strings cannot blow up Prometheus: past the limit (``REDLINE_MAX_MODELS``,
``REDLINE_MAX_SERVERS``) every new value is recorded as ``_OTHER``. Values already seen keep
their own series.
"""

from __future__ import annotations

import threading

from redline._api.env import (
    DEFAULT_MAX_MODELS,
    DEFAULT_MAX_SERVERS,
    OTHER,
    REDLINE_MAX_MODELS,
    REDLINE_MAX_SERVERS,
    int_from_env,
)

__all__ = ["ValueLimiter", "fold_model", "fold_server", "reset_limits"]


class ValueLimiter:
    """Admits at most ``limit`` distinct values; the rest map to ``_OTHER``.

    Example:
        >>> lim = ValueLimiter(limit=1)
        >>> lim.fold("gpt-4o"), lim.fold("gpt-4o"), lim.fold("other-model")
        ('gpt-4o', 'gpt-4o', '_OTHER')
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def fold(self, value: str | None) -> str | None:
        """``value`` if it is known or there is room for it, else ``_OTHER``."""
        if value is None or value in self._seen:
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
            return value


_models: ValueLimiter | None = None
_servers: ValueLimiter | None = None


def _limiters() -> tuple[ValueLimiter, ValueLimiter]:
    global _models, _servers
    if _models is None or _servers is None:
        _models = ValueLimiter(int_from_env(REDLINE_MAX_MODELS, DEFAULT_MAX_MODELS))
        _servers = ValueLimiter(int_from_env(REDLINE_MAX_SERVERS, DEFAULT_MAX_SERVERS))
    return _models, _servers


def fold_model(model: str | None) -> str | None:
    """The ``gen_ai.request.model`` value to record for ``model``."""
    return _limiters()[0].fold(model)


def fold_server(address: str | None) -> str | None:
    """The ``server.address`` value to record for ``address``."""
    return _limiters()[1].fold(address)


def reset_limits() -> None:
    """Forget the values seen and re-read the limits from the environment (tests)."""
    global _models, _servers
    _models = _servers = None
