"""``agent_session`` and ``tool_call``: in-flight gauges and durations of agent work.

A session is also the context's *current* session: model calls (the SDK instrumentors) and
tool calls started inside it count in ``redline.agent.activity.in_flight`` under its agent,
which is what "where agents spend their concurrency" divides by the sessions in flight.
Agent and tool names are folded into ``_OTHER`` past ``REDLINE_MAX_AGENTS`` /
``REDLINE_MAX_TOOLS``.

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

import contextvars
import time
from typing import Any

from redline._api.cardinality import fold_agent, fold_tool
from redline._api.lifecycle import Lifecycle
from redline.instruments import get_instruments
from redline.semconv import Attr

__all__ = ["Scope", "agent_session", "tool_call", "current_session", "current_tool",
           "activity_start", "activity_end"]

_session: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "redline_session", default=None)
_tool: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("redline_tool", default=None)

_OPERATION = {"session": "invoke_agent", "tool": "execute_tool"}


def current_session() -> Scope | None:
    """The agent session open in this context (innermost), if any."""
    return _session.get()


def current_tool() -> Scope | None:
    """The tool call open in this context (innermost), if any."""
    return _tool.get()


# (agent, activity) -> the tally key of its attributes; agent names are folded, so bounded
_activity_keys: dict[tuple[str, str], frozenset] = {}


def activity_start(inst: Any, activity: str, session: Scope | None = None) -> frozenset | None:
    """Count a model or tool call in flight under ``session`` (default: the current one).

    Returns the key to hand to :func:`activity_end`, or ``None`` outside a session.
    """
    session = session if session is not None else _session.get()
    if session is None or session.ended:
        return None
    key = _activity_keys.get((session.name, activity))
    if key is None:
        key = frozenset({Attr.AGENT_NAME: session.name, Attr.ACTIVITY: activity}.items())
        if len(_activity_keys) < 4096:
            _activity_keys[(session.name, activity)] = key
    inst.agent_activity_in_flight.add_key(1, key)
    return key


def activity_end(inst: Any, key: frozenset | None) -> None:
    """Undo :func:`activity_start` (a no-op for ``None``)."""
    if key is not None:
        inst.agent_activity_in_flight.add_key(-1, key)


class Scope(Lifecycle):
    """An agent session or tool call: counted in flight while open, its duration on exit.

    Args:
        kind: ``"session"`` or ``"tool"``.
        name: the agent or tool name (``gen_ai.agent.name`` / ``gen_ai.tool.name``), folded
            into ``_OTHER`` past the cardinality limit.
        meter_provider: record into this provider instead of redline's default.
        session: (tools) the session the call belongs to, when it is not the context's
            current one (framework callbacks that run outside the session's context).
    """

    def __init__(self, kind: str, name: str, meter_provider: Any = None,
                 session: Scope | None = None) -> None:
        super().__init__()
        self.kind, self.raw_name, self._mp = kind, name, meter_provider
        self.name = str(name)
        self._component = f"{kind}_scope"
        self._parent = session
        self._attrs: dict[str, Any] = {}
        self._t0 = 0.0
        self._inst = None
        self._token: contextvars.Token | None = None
        self._prev: Scope | None = None
        self._activity: frozenset | None = None

    def _clone(self) -> Scope:
        return Scope(self.kind, self.raw_name, self._mp, self._parent)

    def _on_start(self) -> None:
        self._inst = inst = get_instruments(self._mp)
        if self.kind == "session":
            self.name = fold_agent(str(self.raw_name)) or ""
            self._attrs = {Attr.AGENT_NAME: self.name}
            inst.sessions_in_flight.add(1, self._attrs)
            var = _session
        else:
            self.name = fold_tool(str(self.raw_name)) or ""
            self._attrs = {Attr.TOOL_NAME: self.name}
            inst.tool_calls_in_flight.add(1, self._attrs)
            self._activity = activity_start(inst, "tool", self._parent)
            var = _tool
        self._t0 = time.perf_counter()
        self._prev = var.get()
        self._token = var.set(self)

    def _on_end(self, error: str | None, at: float | None) -> None:
        inst = self._inst
        if inst is None:
            return
        end = at if at is not None else time.perf_counter()
        if self.kind == "session":
            inst.sessions_in_flight.add(-1, self._attrs)
            hist, var = inst.invoke_agent_duration, _session
        else:
            inst.tool_calls_in_flight.add(-1, self._attrs)
            activity_end(inst, self._activity)
            hist, var = inst.execute_tool_duration, _tool
        attrs = {Attr.OPERATION: _OPERATION[self.kind], **self._attrs}
        if error:
            attrs[Attr.ERROR_TYPE] = error
        hist.record(max(end - self._t0, 0.0), attrs)
        self._leave(var)

    def _leave(self, var: contextvars.ContextVar) -> None:
        token, self._token = self._token, None
        try:
            if token is not None:
                var.reset(token)
                return
        except (ValueError, RuntimeError):  # ended from another context, or reset already
            pass
        if var.get() is self:
            var.set(self._prev)


def agent_session(name: str, *, meter_provider: Any = None) -> Scope:
    """An agent session named ``name``: ``with``/``async with``/decorator."""
    return Scope("session", name, meter_provider)


def tool_call(name: str, *, meter_provider: Any = None) -> Scope:
    """A tool call named ``name``: ``with``/``async with``/decorator."""
    return Scope("tool", name, meter_provider)
