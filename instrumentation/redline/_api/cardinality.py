"""Bounded attribute values: model, server, agent and tool names fold into ``_OTHER``.

A process that talks to a few models keeps their names; a process that sends arbitrary
user-chosen model strings (or tool names with an id in them) cannot blow up Prometheus: past
the limit (``REDLINE_MAX_MODELS``, ``REDLINE_MAX_SERVERS``, ``REDLINE_MAX_AGENTS``,
``REDLINE_MAX_TOOLS``) every new value is recorded as ``_OTHER``. Values already seen keep
their own series.
"""

from __future__ import annotations

import threading

from redline._api.env import (
    DEFAULT_MAX_AGENTS,
    DEFAULT_MAX_MODELS,
    DEFAULT_MAX_SERVERS,
    DEFAULT_MAX_TOOLS,
    OTHER,
    REDLINE_MAX_AGENTS,
    REDLINE_MAX_MODELS,
    REDLINE_MAX_SERVERS,
    REDLINE_MAX_TOOLS,
    int_from_env,
)

__all__ = ["ValueLimiter", "fold_agent", "fold_model", "fold_server", "fold_tool",
           "on_reset", "reset_limits"]

# caches of folded values (redline._api.attrs), emptied with the limits
_on_reset: list = []


def on_reset(clear) -> None:
    """Call ``clear()`` whenever :func:`reset_limits` forgets the values seen."""
    _on_reset.append(clear)


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
_names: dict[str, ValueLimiter] = {}
_NAME_LIMITS = {"agent": (REDLINE_MAX_AGENTS, DEFAULT_MAX_AGENTS),
                "tool": (REDLINE_MAX_TOOLS, DEFAULT_MAX_TOOLS)}


def _limiters() -> tuple[ValueLimiter, ValueLimiter]:
    global _models, _servers
    if _models is None or _servers is None:
        _models = ValueLimiter(int_from_env(REDLINE_MAX_MODELS, DEFAULT_MAX_MODELS))
        _servers = ValueLimiter(int_from_env(REDLINE_MAX_SERVERS, DEFAULT_MAX_SERVERS))
    return _models, _servers


def _name_limiter(kind: str) -> ValueLimiter:
    found = _names.get(kind)
    if found is None:
        env, default = _NAME_LIMITS[kind]
        found = _names.setdefault(kind, ValueLimiter(int_from_env(env, default)))
    return found


def fold_model(model: str | None) -> str | None:
    """The ``gen_ai.request.model`` value to record for ``model``."""
    return _limiters()[0].fold(model)


def fold_server(address: str | None) -> str | None:
    """The ``server.address`` value to record for ``address``."""
    return _limiters()[1].fold(address)


def fold_agent(name: str | None) -> str | None:
    """The ``gen_ai.agent.name`` value to record for ``name``."""
    return _name_limiter("agent").fold(name)


def fold_tool(name: str | None) -> str | None:
    """The ``gen_ai.tool.name`` value to record for ``name``."""
    return _name_limiter("tool").fold(name)


def reset_limits() -> None:
    """Forget the values seen and re-read the limits from the environment (tests)."""
    global _models, _servers
    _models = _servers = None
    _names.clear()
    for clear in _on_reset:
        clear()
