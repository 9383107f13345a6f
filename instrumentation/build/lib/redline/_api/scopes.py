"""``agent_session`` and ``tool_call``: in-flight gauges and durations of agent work.

Example:
    >>> import redline
    >>> async with redline.agent_session("support-bot"):
    ...     reply = await llm(...)
    ...     async with redline.tool_call("search"):
    ...         hits = await search(reply)
    >>> @redline.tool_call("lookup")
    ... def lookup(key): ...
"""

from __future__ import annotations

import time
from typing import Any

from redline._api.lifecycle import Lifecycle
from redline.instruments import get_instruments
from redline.semconv import Attr

__all__ = ["Scope", "agent_session", "tool_call"]


class Scope(Lifecycle):
    """An agent session or tool call: counted in flight while open, its duration on exit.

    Args:
        kind: ``"session"`` or ``"tool"``.
        name: the agent or tool name (``gen_ai.agent.name`` / ``gen_ai.tool.name``).
        meter_provider: record into this provider instead of redline's default.
    """

    def __init__(self, kind: str, name: str, meter_provider: Any = None) -> None:
        super().__init__()
        self.kind, self.name, self._mp = kind, name, meter_provider
        self._component = f"{kind}_scope"
        self._attrs = {(Attr.AGENT_NAME if kind == "session" else Attr.TOOL_NAME): name}
        self._t0 = 0.0
        self._inst = None

    def _clone(self) -> Scope:
        return Scope(self.kind, self.name, self._mp)

    def _gauge_and_hist(self):
        inst = self._inst
        if self.kind == "session":
            return inst.sessions_in_flight, inst.session_duration
        return inst.tool_calls_in_flight, inst.tool_call_duration

    def _on_start(self) -> None:
        self._inst = get_instruments(self._mp)
        self._t0 = time.perf_counter()
        self._gauge_and_hist()[0].add(1, self._attrs)

    def _on_end(self, error: str | None, at: float | None) -> None:
        if self._inst is None:
            return
        gauge, hist = self._gauge_and_hist()
        gauge.add(-1, self._attrs)
        attrs = {**self._attrs, Attr.ERROR_TYPE: error} if error else self._attrs
        hist.record((at if at is not None else time.perf_counter()) - self._t0, attrs)


def agent_session(name: str, *, meter_provider: Any = None) -> Scope:
    """An agent session named ``name``: ``with``/``async with``/decorator."""
    return Scope("session", name, meter_provider)


def tool_call(name: str, *, meter_provider: Any = None) -> Scope:
    """A tool call named ``name``: ``with``/``async with``/decorator."""
    return Scope("tool", name, meter_provider)
