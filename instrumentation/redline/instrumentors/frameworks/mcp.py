"""MCP client (``mcp``): every ``ClientSession.call_tool`` (and mcp 2's ``Client.call_tool``)
is a tool call in flight.

The tool is named by the MCP tool name (``gen_ai.tool.name``, folded past
``REDLINE_MAX_TOOLS``); a result with ``isError`` set (``is_error`` in mcp 2) is recorded with
``error.type=tool_error``, an exception with its class name. A call made while a framework
already counts a tool call of the same name in this context (an Agents SDK or pydantic-ai
MCP tool, whose tool call *is* this MCP call) is not counted twice.

Example:
    >>> from redline.instrumentors.frameworks.mcp import MCPInstrumentor
    >>> MCPInstrumentor().instrument()
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from redline._api.guard import guarded
from redline._api.scopes import Scope, current_tool
from redline.instrumentors.frameworks._patch import Patches

__all__ = ["MCPInstrumentor", "SUPPORTED", "TOOL_ERROR"]

SUPPORTED = "mcp >= 1.0"
TOOL_ERROR = "tool_error"
_COMPONENT = "mcp"


def _tool_for(args: tuple, kwargs: dict) -> Scope | None:
    name = args[0] if args else kwargs.get("name")
    current = current_tool()
    if current is not None and not current.ended and current.raw_name == name:
        return None
    return Scope("tool", str(name))


async def _call_tool(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    tool = None
    with guarded(_COMPONENT):
        tool = _tool_for(args, kwargs)
    if tool is None:
        return await wrapped(*args, **kwargs)
    tool.start()
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        tool.end(exc)
        raise
    tool.end(TOOL_ERROR if _is_error(result) else None)
    return result


def _is_error(result: Any) -> bool:
    # the wire's isError: ``is_error`` on mcp 2's types, ``isError`` on mcp 1's
    return getattr(result, "is_error", None) is True or getattr(result, "isError", None) is True


class MCPInstrumentor(BaseInstrumentor):
    """Wraps ``mcp.client.session.ClientSession.call_tool``; see the module docstring."""

    _patches: Patches | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        # mcp 2's high-level Client.call_tool may send several tools/call requests for one
        # call (input-required rounds, a re-list and resend): the outer call is the tool call
        patches = Patches([("mcp.client.session", "ClientSession.call_tool", _call_tool)],
                          optional=[("mcp.client.client", "Client.call_tool", _call_tool)])
        patches.apply()
        type(self)._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        patches, type(self)._patches = type(self)._patches, None
        if patches is not None:
            patches.remove()
