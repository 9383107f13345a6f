"""Agent frameworks: sessions and tool calls in flight with no code change.

One instrumentor per framework, each in its own module and each loaded only when its
framework is installed at a supported version (checked from package metadata, without
importing it), so an app without the framework pays nothing and sees no log line:

* :mod:`.openai_agents` — OpenAI Agents SDK: a registered tracing processor.
* :mod:`.langchain` — LangChain / LangGraph: a callback handler in every callback manager.
* :mod:`.mcp` — MCP client: ``ClientSession.call_tool``.
* :mod:`.pydantic_ai` — pydantic-ai: ``Agent.iter`` (every run) and
  ``ToolManager.execute_tool_call``.

Model calls the frameworks make through the openai/anthropic SDKs are recorded by the SDK
instrumentors, and count under the session that made them
(``redline.agent.activity.in_flight``). A framework run that starts inside an open session
(a nested run, an agent used as a tool, a run inside ``redline.agent_session``) is part of
that session, not a new one.
"""

from __future__ import annotations

import importlib
import logging

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

__all__ = ["FRAMEWORKS", "framework_instrumentors"]

_log = logging.getLogger("redline")

# (module, class, the requirement checked against installed package metadata)
FRAMEWORKS = (
    ("redline.instrumentors.frameworks.openai_agents", "OpenAIAgentsInstrumentor",
     "openai-agents >= 0.2"),
    ("redline.instrumentors.frameworks.langchain", "LangChainInstrumentor",
     "langchain-core >= 0.3"),
    ("redline.instrumentors.frameworks.mcp", "MCPInstrumentor", "mcp >= 1.0"),
    ("redline.instrumentors.frameworks.pydantic_ai", "PydanticAIInstrumentor",
     "pydantic-ai-slim >= 1.0"),
)


def framework_instrumentors() -> list[BaseInstrumentor]:
    """An instrumentor for every supported framework that is installed (none imported else)."""
    found: list[BaseInstrumentor] = []
    for module, cls, requirement in FRAMEWORKS:
        if get_dependency_conflicts([requirement]) is not None:
            _log.debug("redline: %s not installed; its instrumentor is skipped", requirement)
            continue
        try:
            found.append(getattr(importlib.import_module(module), cls)())
        except Exception:  # a framework that is installed but does not import
            _log.warning("redline: %s could not be loaded", module, exc_info=True)
    return found
