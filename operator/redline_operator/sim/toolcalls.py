"""When the simulated model answers with tool calls, and what it calls them with.

The rule (the same for chat completions, responses and messages):

* The request carries ``tools`` and ``tool_choice`` is not ``none``, and
* fewer tool results are in the conversation than ``x-sim-tool-rounds`` (header, default 1),
  or ``tool_choice`` forces a tool (``required``, Anthropic ``any``, or a named tool):
  then the answer is ``x-sim-parallel-tool-calls`` (header, default 1) tool calls instead of
  text. Otherwise the model answers with text as usual.
* The tool called is the one ``tool_choice`` names, else the tools in order, cycling, starting
  at the number of tool results so far (round 2 calls the second tool).
* Arguments fill every required property of the tool's JSON schema with a value of its
  type (``"sim"``, ``1``, ``1.0``, ``true``, ``[]``, ``{}``; the first ``enum`` value; the
  ``default`` where one is given), so frameworks that validate arguments accept them.
* Timing is unchanged: the engine still produces ``max_tokens`` tokens, and a stream carries
  one chunk per token, the arguments JSON split evenly across them (streamed tool-call
  deltas); the first chunk of each call names it.

A tool result is a ``role: tool`` (or ``function``) message, a ``function_call_output``
input item, or a ``tool_result`` content block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redline_operator.sim.exchange import BadRequest

__all__ = ["ToolCall", "plan_tool_calls", "fragments", "count_tool_results"]


@dataclass(frozen=True)
class ToolCall:
    """One call the simulated model makes."""

    call_id: str
    name: str
    arguments: str  # JSON text


def _header_int(request: Any, name: str, default: int) -> int:
    raw = request.headers.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


def _tool_name_and_schema(tool: Any) -> tuple[str, dict] | None:
    """(name, parameters schema) of an OpenAI chat, responses or Anthropic tool entry."""
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return None
    schema = fn.get("parameters", fn.get("input_schema")) or {}
    return name, schema if isinstance(schema, dict) else {}


def _forced(tool_choice: Any) -> tuple[bool, str | None]:
    """(whether a tool must be called, the tool named by ``tool_choice`` if any)."""
    if tool_choice in ("required", "any"):
        return True, None
    if isinstance(tool_choice, dict):
        kind = tool_choice.get("type")
        if kind in ("any",):
            return True, None
        name = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return True, name
    return False, None


def _disabled(tool_choice: Any) -> bool:
    return tool_choice == "none" or (isinstance(tool_choice, dict)
                                     and tool_choice.get("type") == "none")


def count_tool_results(conversation: Any) -> int:
    """Tool results in a chat ``messages`` list, a responses ``input`` or Anthropic messages."""
    if not isinstance(conversation, list):
        return 0
    n = 0
    for item in conversation:
        if not isinstance(item, dict):
            continue
        if item.get("role") in ("tool", "function") or item.get("type") == "function_call_output":
            n += 1
        content = item.get("content")
        if isinstance(content, list):
            n += sum(1 for block in content
                     if isinstance(block, dict) and block.get("type") == "tool_result")
    return n


def _value_for(schema: Any, defs: dict) -> Any:
    if not isinstance(schema, dict):
        return "sim"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        return _value_for(defs[ref.rsplit("/", 1)[-1]], defs)
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _value_for(schema[key][0], defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return _object_for(schema, defs)
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [],
            "null": None}.get(kind, "sim")


def _object_for(schema: dict, defs: dict) -> dict:
    props = schema.get("properties") or {}
    required = schema.get("required") or []
    return {key: _value_for(props.get(key), defs) for key in required if isinstance(key, str)}


def arguments_for(schema: dict) -> str:
    """JSON arguments that satisfy ``schema``'s required properties."""
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return json.dumps(_object_for(schema, defs), separators=(",", ":"))


def plan_tool_calls(request: Any, body: dict, conversation: Any, req_id: str) -> list[ToolCall]:
    """The tool calls to answer with (empty: answer with text), by the module's rule.

    Raises:
        BadRequest: A ``x-sim-*`` header is not a positive integer, or ``tool_choice``
            names a tool the request does not carry.
    """
    tools = [t for t in map(_tool_name_and_schema, body.get("tools") or []) if t is not None]
    choice = body.get("tool_choice")
    if not tools or _disabled(choice):
        return []
    rounds = _header_int(request, "x-sim-tool-rounds", 1)
    parallel = _header_int(request, "x-sim-parallel-tool-calls", 1)
    done = count_tool_results(conversation)
    forced, named = _forced(choice)
    if not forced and done >= rounds:
        return []
    if named is not None:
        by_name = dict(tools)
        if named not in by_name:
            raise BadRequest(f"tool_choice names {named!r}, which is not in tools")
        chosen = [(named, by_name[named])] * parallel
    else:
        chosen = [tools[(done + i) % len(tools)] for i in range(parallel)]
    stem = req_id.split("-", 1)[-1].split("_", 1)[-1]
    return [ToolCall(f"call_{stem}_{i}", name, arguments_for(schema))
            for i, (name, schema) in enumerate(chosen)]


def fragments(calls: list[ToolCall], index: int, total: int) -> list[tuple[int, str, bool]]:
    """The argument pieces token ``index`` of ``total`` carries: ``(call, text, first)``.

    The calls' arguments are laid end to end and cut into ``total`` even slices; ``first`` is
    true on the piece that opens a call (its delta also names the call). Every token carries
    at least one piece (an empty one when the arguments are shorter than the stream).
    """
    bounds, start = [], 0
    for call in calls:
        bounds.append((start, start + len(call.arguments)))
        start += len(call.arguments)
    length = start
    if length >= total:
        lo, hi = index * length // total, (index + 1) * length // total
    else:  # shorter than the stream: a character per token, then empty deltas
        lo, hi = min(index, length), min(index + 1, length)
    out = []
    for k, (a, b) in enumerate(bounds):
        s, e = max(lo, a), min(hi, b)
        if s < e:
            out.append((k, calls[k].arguments[s - a:e - a], lo <= a))
    if not out:
        out.append((len(calls) - 1, "", False))
    return out
