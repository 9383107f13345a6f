"""OpenAI Agents SDK (``openai-agents``): a tracing processor, the SDK's documented global hook.

``agents.add_trace_processor`` registers :class:`RedlineProcessor`, which sees every span:

* an **agent** span with no session above it opens a session (``gen_ai.agent.name`` = the
  agent's name); a handoff keeps the session open across to the next agent, which does not
  open another; an agent span nested under a tool (an agent used as a tool) or started
  inside an open session belongs to that session;
* a **function** span (a function tool, an MCP tool, a computer/shell tool) is a tool call
  (``gen_ai.tool.name``); its error (``span.error``) is ``error.type=tool_error``;
* a **handoff** span counts in ``redline.agent.handoffs`` under the agent handing off.

The SDK calls processors only while tracing is on: with ``OPENAI_AGENTS_DISABLE_TRACING=1``,
``set_tracing_disabled(True)`` or ``RunConfig(tracing_disabled=True)`` there is nothing to see.
Exporting traces to OpenAI is a separate processor, untouched.

Example:
    >>> from redline.instrumentors.frameworks.openai_agents import OpenAIAgentsInstrumentor
    >>> OpenAIAgentsInstrumentor().instrument()
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from redline._api.cardinality import fold_agent
from redline._api.guard import guarded
from redline._api.scopes import Scope, current_session
from redline.instruments import get_instruments
from redline.semconv import Attr

__all__ = ["OpenAIAgentsInstrumentor", "RedlineProcessor", "SUPPORTED"]

SUPPORTED = "openai-agents >= 0.2"
_COMPONENT = "openai_agents"


@dataclass
class _Run:
    session: Scope
    owned: bool  # opened by this processor (else: a session that was already open)
    handoff: bool = False
    spans: set[str] = field(default_factory=set)


def _error(span: Any, kind: str) -> str | None:
    return f"{kind}_error" if getattr(span, "error", None) else None


class RedlineProcessor:
    """A ``TracingProcessor`` that turns agent and function spans into redline scopes."""

    def __init__(self) -> None:
        self.enabled = True
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}  # span id -> the session it runs in
        self._roots: dict[str, _Run] = {}  # agent span id -> the session it opened/continued
        self._tools: dict[str, Scope] = {}  # function span id -> its tool call
        self._waiting: dict[str, list[_Run]] = {}  # trace id -> sessions handed off

    # --- traces ----------------------------------------------------------------------
    def on_trace_start(self, trace: Any) -> None:
        pass

    def on_trace_end(self, trace: Any) -> None:
        with guarded(_COMPONENT):
            with self._lock:
                left = self._waiting.pop(getattr(trace, "trace_id", None), [])
            for run in left:  # handed off to an agent that never started
                if run.owned:
                    run.session.end()

    # --- spans -----------------------------------------------------------------------
    def on_span_start(self, span: Any) -> None:
        if not self.enabled:
            return
        with guarded(_COMPONENT):
            data = span.span_data
            kind = data.type
            with self._lock:
                run = self._runs.get(span.parent_id) if span.parent_id else None
            if kind == "agent":
                run = run or self._open(span, data)
            elif kind == "function":
                tool = Scope("tool", data.name, session=run.session if run else None)
                tool.start()
                with self._lock:
                    self._tools[span.span_id] = tool
            if run is not None:
                with self._lock:
                    self._runs[span.span_id] = run

    def _open(self, span: Any, data: Any) -> _Run:
        with self._lock:
            waiting = self._waiting.get(span.trace_id)
            run = waiting.pop(0) if waiting else None
            if waiting == []:
                del self._waiting[span.trace_id]
        if run is None:
            current = current_session()
            if current is not None and not current.ended:
                run = _Run(current, owned=False)
            else:
                run = _Run(Scope("session", data.name), owned=True)
                run.session.start()
        with self._lock:
            self._roots[span.span_id] = run
        return run

    def on_span_end(self, span: Any) -> None:
        with guarded(_COMPONENT):
            data = span.span_data
            kind = data.type
            with self._lock:
                run = self._runs.pop(span.span_id, None)
                tool = self._tools.pop(span.span_id, None) if kind == "function" else None
                root = self._roots.pop(span.span_id, None) if kind == "agent" else None
            if tool is not None:
                tool.end(_error(span, "tool"))
            elif kind == "handoff":
                if run is not None and getattr(data, "to_agent", None):
                    run.handoff = True
                get_instruments().agent_handoffs.add(
                    1, {Attr.AGENT_NAME: fold_agent(str(getattr(data, "from_agent", "")))})
            elif root is not None:
                if root.handoff:  # the session goes on in the agent handed to
                    root.handoff = False
                    with self._lock:
                        self._waiting.setdefault(span.trace_id, []).append(root)
                elif root.owned:
                    root.session.end(_error(span, "agent"))

    # --- lifecycle ---------------------------------------------------------------------
    def shutdown(self, timeout: float | None = None) -> None:
        pass

    def force_flush(self) -> None:
        pass

    def close_all(self) -> None:
        """End every tool call and session still open (the processor is being removed)."""
        with self._lock:
            tools, self._tools = list(self._tools.values()), {}
            runs = [*self._roots.values(), *(r for w in self._waiting.values() for r in w)]
            self._roots, self._waiting, self._runs = {}, {}, {}
        for tool in tools:
            tool.end()
        for run in runs:
            if run.owned:
                run.session.end()

    def open_counts(self) -> tuple[int, int, int]:
        """(spans tracked, tool calls open, sessions waiting on a handoff): for tests."""
        with self._lock:
            return len(self._runs), len(self._tools), sum(map(len, self._waiting.values()))


class OpenAIAgentsInstrumentor(BaseInstrumentor):
    """Registers :class:`RedlineProcessor` with the Agents SDK; see the module docstring."""

    processor: RedlineProcessor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        import agents

        processor = RedlineProcessor()
        agents.add_trace_processor(processor)
        type(self).processor = processor

    def _uninstrument(self, **kwargs: Any) -> None:
        processor, type(self).processor = type(self).processor, None
        if processor is None:
            return
        processor.enabled = False
        from agents.tracing import get_trace_provider

        multi = getattr(get_trace_provider(), "_multi_processor", None)
        current = getattr(multi, "_processors", None)
        if multi is not None and isinstance(current, tuple):
            multi.set_processors([p for p in current if p is not processor])
        processor.close_all()  # what was open when it was removed will never end through it
