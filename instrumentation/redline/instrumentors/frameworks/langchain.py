"""LangChain / LangGraph: a callback handler injected into every callback manager.

Wrapping ``BaseCallbackManager.__init__`` (the established way: every run, sync or async,
builds one) adds :class:`RedlineCallbackHandler` as an inheritable handler, so no
``callbacks=[...]`` is needed anywhere:

* a **root chain run** (``parent_run_id`` is ``None``: ``graph.invoke``, ``agent.ainvoke``,
  ``chain.stream``...) is a session named by the run (``name=``, else the runnable's name,
  e.g. ``LangGraph``); nested runs (nodes, sub-graphs, sub-chains) are part of it, never
  counted again; a root run inside an already open session is part of that session;
* ``on_tool_start`` / ``on_tool_end`` / ``on_tool_error`` is a tool call (``gen_ai.tool.name``),
  counted under its root session;
* retries the SDK instrumentor cannot see (each is a new SDK call): a run tagged
  ``retry:attempt:N`` (how ``Runnable.with_retry`` marks attempts after the first) and
  ``on_retry`` (the LLM retry decorators) count in ``redline.client.retries``, with
  ``redline.attempt.cause`` from the error of the attempt before.

The handler runs inline (``run_inline``), so it runs in the run's own context and the
SDK instrumentors attribute the run's model calls to its session.

Example:
    >>> from redline.instrumentors.frameworks.langchain import LangChainInstrumentor
    >>> LangChainInstrumentor().instrument()
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any
from uuid import UUID

from langchain_core.callbacks.base import BaseCallbackHandler
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from redline._api.guard import guarded
from redline._api.scopes import Scope, current_session
from redline.instrumentors.frameworks._patch import Patches
from redline.instruments import get_instruments
from redline.semconv import Attr

__all__ = ["LangChainInstrumentor", "RedlineCallbackHandler", "SUPPORTED", "retry_cause"]

SUPPORTED = "langchain-core >= 0.3"
_COMPONENT = "langchain"


def _run_name(serialized: Any, kwargs: dict, default: str) -> str:
    name = kwargs.get("name")
    if not name and isinstance(serialized, dict):
        name = serialized.get("name") or (serialized.get("id") or [None])[-1]
    return str(name or default)


def retry_cause(exc: BaseException | None) -> str:
    """The ``redline.attempt.cause`` of an exception that made a runnable retry."""
    if exc is None:
        return "unknown"
    status = getattr(exc, "status_code", None) or getattr(
        getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return f"http_{status}"
    name = type(exc).__name__.lower()
    if "timeout" in name:
        return "timeout"
    if "connection" in name:
        return "connection_error"
    return "error"


class RedlineCallbackHandler(BaseCallbackHandler):
    """Sessions for root runs, tool calls for tool runs, retries for ``on_retry``."""

    run_inline = True  # in the run's own context: model calls see the session
    raise_error = False

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._sessions: dict[UUID, Scope] = {}  # root run id -> the session it opened
        self._root: dict[UUID, Scope | None] = {}  # chain/tool run id -> its session
        self._tools: dict[UUID, Scope] = {}
        self._failed: dict[UUID, BaseException] = {}  # parent run -> its child's last error
        self.enabled = True  # off once uninstrumented (managers built before keep a reference)

    # --- retries ----------------------------------------------------------------------
    def _retry_of(self, parent_run_id: UUID | None, tags: Any) -> None:
        if parent_run_id is None or not tags:
            return
        if any(isinstance(t, str) and t.startswith("retry:attempt:") for t in tags):
            with self._lock:
                error = self._failed.pop(parent_run_id, None)
            get_instruments().retries.add(1, {Attr.ATTEMPT_CAUSE: retry_cause(error)})

    def _failed_under(self, parent_run_id: UUID | None, error: BaseException) -> None:
        if parent_run_id is not None:
            with self._lock:
                self._failed[parent_run_id] = error

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: Any = None,
                            **kwargs: Any) -> None:
        if self.enabled:
            with guarded(_COMPONENT):
                self._retry_of(parent_run_id, tags)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: Any = None,
                     **kwargs: Any) -> None:
        if self.enabled:
            with guarded(_COMPONENT):
                self._retry_of(parent_run_id, tags)

    def on_llm_error(self, error: BaseException, *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        with guarded(_COMPONENT):
            self._failed_under(parent_run_id, error)

    # --- sessions -----------------------------------------------------------------------
    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: Any = None,
                       **kwargs: Any) -> None:
        if not self.enabled:
            return
        with guarded(_COMPONENT):
            self._retry_of(parent_run_id, tags)
            if parent_run_id is not None:
                with self._lock:
                    self._root[run_id] = self._root.get(parent_run_id)
                return
            session = current_session()
            if session is None or session.ended:
                session = Scope("session", _run_name(serialized, kwargs, "chain"))
                session.start()
                with self._lock:
                    self._sessions[run_id] = session
            with self._lock:
                self._root[run_id] = session

    def _end_chain(self, run_id: UUID, error: BaseException | None) -> None:
        with guarded(_COMPONENT):
            with self._lock:
                self._root.pop(run_id, None)
                self._failed.pop(run_id, None)
                session = self._sessions.pop(run_id, None)
            if session is not None:
                session.end(error)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_chain(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        with guarded(_COMPONENT):
            self._failed_under(parent_run_id, error)
        self._end_chain(run_id, error)

    # --- tools ------------------------------------------------------------------------------
    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: Any = None,
                      **kwargs: Any) -> None:
        if not self.enabled:
            return
        with guarded(_COMPONENT):
            self._retry_of(parent_run_id, tags)
            with self._lock:
                session = self._root.get(parent_run_id) if parent_run_id else None
                self._root[run_id] = session
            tool = Scope("tool", _run_name(serialized, kwargs, "tool"), session=session)
            tool.start()
            with self._lock:
                self._tools[run_id] = tool

    def _end_tool(self, run_id: UUID, error: BaseException | None) -> None:
        with guarded(_COMPONENT):
            with self._lock:
                self._root.pop(run_id, None)
                self._failed.pop(run_id, None)
                tool = self._tools.pop(run_id, None)
            if tool is not None:
                tool.end(error)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_tool(run_id, None)

    def on_tool_error(self, error: BaseException, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        with guarded(_COMPONENT):
            self._failed_under(parent_run_id, error)
        self._end_tool(run_id, error)

    def on_retry(self, retry_state: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if not self.enabled:
            return
        with guarded(_COMPONENT):
            outcome = getattr(retry_state, "outcome", None)
            exc = outcome.exception() if outcome is not None and outcome.failed else None
            get_instruments().retries.add(1, {Attr.ATTEMPT_CAUSE: retry_cause(exc)})

    def close_all(self) -> None:
        """End every session and tool call still open (the handler is being removed)."""
        self.enabled = False
        with self._lock:
            open_ = [*self._tools.values(), *self._sessions.values()]
            self._tools, self._sessions, self._root, self._failed = {}, {}, {}, {}
        for scope in open_:
            scope.end()

    def open_counts(self) -> tuple[int, int, int]:
        """(runs tracked, tool calls open, sessions open, errors kept): for tests."""
        with self._lock:
            return len(self._root), len(self._tools), len(self._sessions), len(self._failed)


class LangChainInstrumentor(BaseInstrumentor):
    """Adds :class:`RedlineCallbackHandler` to every callback manager; see the module."""

    handler: RedlineCallbackHandler | None = None
    _patches: Patches | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SUPPORTED,)

    def _instrument(self, **kwargs: Any) -> None:
        handler = RedlineCallbackHandler()

        def init(wrapped: Any, instance: Any, args: tuple, kw: dict) -> None:
            wrapped(*args, **kw)
            with guarded(_COMPONENT):
                if not any(h is handler for h in instance.inheritable_handlers):
                    instance.add_handler(handler, True)

        patches = Patches([("langchain_core.callbacks.base", "BaseCallbackManager.__init__",
                            init)])
        patches.apply()
        cls = type(self)
        cls.handler, cls._patches = handler, patches

    def _uninstrument(self, **kwargs: Any) -> None:
        cls = type(self)
        patches, handler = cls._patches, cls.handler
        cls._patches = cls.handler = None
        if patches is not None:
            patches.remove()
        if handler is not None:
            handler.close_all()
