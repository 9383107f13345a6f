"""pydantic-ai: agent runs as sessions, tool executions as tool calls.

Every run — ``Agent.run``, ``run_sync``, ``run_stream``, ``run_stream_events``, ``iter`` —
goes through ``Agent.iter``, so wrapping it once counts each run once: the session is open
from entering the run to leaving it (``gen_ai.agent.name`` = the agent's ``name``, else
``agent``). A run started inside an open session (agent delegation from a tool, a run inside
``redline.agent_session``) is part of that session. Each tool execution
(``pydantic_ai.tool_manager.ToolManager.execute_tool_call``, after argument validation, so
a call the model got wrong and is asked to retry is not a tool call) is a tool call named
by the tool.

Example:
    >>> from redline.instrumentors.frameworks.pydantic_ai import PydanticAIInstrumentor
    >>> PydanticAIInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from redline._api.guard import guarded
from redline._api.scopes import Scope, current_session
from redline.instrumentors.frameworks._patch import Patches

__all__ = ["PydanticAIInstrumentor", "SUPPORTED"]

SUPPORTED = "pydantic-ai-slim >= 1.0"
_COMPONENT = "pydantic_ai"


class _RunContext:
    """The run's async context manager, with the session open while it is entered."""

    def __init__(self, wrapped: Any, name: str) -> None:
        self._wrapped, self._name, self._session = wrapped, name, None

    async def __aenter__(self) -> Any:
        with guarded(_COMPONENT):
            current = current_session()
            if current is None or current.ended:
                self._session = Scope("session", self._name).start()
        try:
            return await self._wrapped.__aenter__()
        except BaseException as exc:
            if self._session is not None:
                self._session.end(exc)
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self._wrapped.__aexit__(exc_type, exc, tb)
        finally:
            if self._session is not None:
                self._session.end(exc)


def _iter(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    manager = wrapped(*args, **kwargs)
    name = "agent"
    with guarded(_COMPONENT):
        name = getattr(instance, "name", None) or "agent"
    return _RunContext(manager, name)


async def _execute_tool_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    tool = None
    with guarded(_COMPONENT):
        validated = args[0] if args else kwargs.get("validated")
        tool = Scope("tool", str(validated.call.tool_name))
    if tool is None:
        return await wrapped(*args, **kwargs)
    with tool:
        return await wrapped(*args, **kwargs)


class PydanticAIInstrumentor(BaseInstrumentor):
    """Wraps ``Agent.iter`` and ``ToolManager.execute_tool_call``; see the module docstring."""

    _patches: Patches | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        patches = Patches([
            ("pydantic_ai.agent", "Agent.iter", _iter),
            ("pydantic_ai.tool_manager", "ToolManager.execute_tool_call", _execute_tool_call),
        ])
        patches.apply()
        type(self)._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        patches, type(self)._patches = type(self)._patches, None
        if patches is not None:
            patches.remove()
