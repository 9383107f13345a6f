"""``model_call``: the record of one model call, used by hand and by the instrumentors.

Example:
    >>> import redline
    >>> with redline.model_call(provider="vllm", model="llama-3-8b",
    ...                         server_address="gpu-7", server_port=8000,
    ...                         streaming=True) as call:
    ...     for chunk in my_client.stream(prompt):   # your own client
    ...         call.chunk()                         # first one is the TTFT
    ...     call.usage(input_tokens=812, output_tokens=64)

    The same object works as ``async with`` and as a decorator (``@redline.model_call(...)``),
    and ends exactly once: the in-flight count goes back down whatever way the block exits.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from redline._api.attrs import attr_set
from redline._api.cardinality import fold_model
from redline._api.lifecycle import Lifecycle
from redline._api.scopes import activity_end, activity_start
from redline.instruments import Instruments, get_instruments
from redline.semconv import Attr

__all__ = ["ModelCall", "model_call", "current_model_call", "current_sdk_call"]

_current: contextvars.ContextVar[ModelCall | None] = contextvars.ContextVar(
    "redline_model_call", default=None)


# Calls started and not ended in this process, so a forked child can take its parent's
# open calls out of its in-flight count (gunicorn/uvicorn workers, multiprocessing).
_open: dict[int, ModelCall] = {}


def _reset_after_fork() -> None:
    calls = list(_open.values())
    _open.clear()
    _current.set(None)
    for call in calls:
        with contextlib.suppress(Exception):  # never break a fork
            call._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def current_model_call() -> ModelCall | None:
    """The model call running in this context (thread or asyncio task), if any."""
    call = _current.get()
    # An ended call can linger here: a generator finalized in another context cannot reset it.
    return None if call is None or call.ended else call


def current_sdk_call() -> ModelCall | None:
    """The running call of this context if an SDK instrumentor made it (``sdk_attempts``:
    its HTTP attempts are counted at the client's ``send``): asked once per attempt and once
    per SDK method call (a surface nested in another is part of the outer call)."""
    call = _current.get()
    if call is None or not call.sdk_attempts or call.ended:
        return None
    return call


class ModelCall(Lifecycle):
    """One model call: in-flight while it runs; duration, TTFT, chunk gaps, tokens, attempts.

    Args:
        provider: ``gen_ai.provider.name`` (``openai``, ``anthropic``, ``vllm``, ...).
        model: ``gen_ai.request.model`` (folded to ``_OTHER`` past ``REDLINE_MAX_MODELS``).
        server_address: ``server.address`` (folded past ``REDLINE_MAX_SERVERS``).
        server_port: ``server.port``.
        operation: ``gen_ai.operation.name`` (``chat``, ``embeddings``, ...).
        streaming: whether the response is streamed (TTFT and chunk gaps are recorded only then).
        meter_provider: record into this provider instead of redline's default.
    """

    _component = "model_call"

    def __init__(self, *, provider: str, model: str | None = None,
                 server_address: str | None = None, server_port: int | None = None,
                 operation: str = "chat", streaming: bool = False,
                 meter_provider: Any = None) -> None:
        super().__init__()
        self._args = (provider, model, server_address, server_port, operation, streaming,
                      meter_provider)
        self.streaming = streaming
        # built once per call shape and shared: the instruments' attributes, the limiter's
        # route, and the variants the end records (see redline._api.attrs)
        self._set = attr_set(provider, model, server_address, server_port, operation,
                             self._component)
        # read-only views: the sets are shared by every call of the shape
        self.attrs: Mapping[str, Any] = self._set.attrs_view
        self.route: Mapping[str, Any] = self._set.route_view
        self._inst: Instruments | None = None
        self._t0 = 0.0
        self._last_chunk: float | None = None
        self._first_chunk: float | None = None
        self._last_content = 0.0
        self._gaps = 0  # content chunks after the first
        self._ending = False
        self._error: str | None = None
        self._tokens: dict[str, int] = {}
        self._response_model: str | None = None
        # whether response_model() still has something to learn: a plain attribute, read
        # once per chunk
        self.wants_response_model = True
        self.attempt_count = 0
        self.last_cause: str | None = None
        self.last_attempt_end: float | None = None
        # set by the SDK instrumentors: count this call's HTTP attempts at the client's send,
        # and the client's max_retries (so the retry budget is not asked about a retry that
        # would not happen)
        self.sdk_attempts = False
        self.max_retries: int | None = None
        self._token: contextvars.Token | None = None
        self._activity: frozenset | None = None  # counted under the current agent session

    def _clone(self) -> ModelCall:
        provider, model, address, port, operation, streaming, mp = self._args
        return ModelCall(provider=provider, model=model, server_address=address,
                         server_port=port, operation=operation, streaming=streaming,
                         meter_provider=mp)

    def _on_start(self) -> None:
        self._inst = inst = get_instruments(self._args[6])
        self._t0 = perf_counter()
        inst.requests_in_flight.add_key(1, self._set.key)
        self._activity = activity_start(inst, "model")
        _open[id(self)] = self

    def _forget_after_fork(self) -> None:
        """In a forked child: this call is the parent's; take it out of the child's count
        and never record its end here."""
        if self._inst is not None and self._end_once.acquire(blocking=False):
            self._inst.requests_in_flight.add_key(-1, self._set.key)
            activity_end(self._inst, self._activity)

    # --- what happened during the call ----------------------------------------------
    def first_chunk(self) -> None:
        """Mark the first content chunk now: records the time to first chunk (once)."""
        if self._first_chunk is None and self._inst is not None and not self._ending:
            now = perf_counter()
            self._first_chunk = self._last_chunk = self._last_content = now
            self._inst.time_to_first_chunk.record(now - self._t0, self._set.attrs)

    def chunk(self, content: bool = True) -> None:
        """Mark an output chunk now. The first content chunk gives the TTFT; the later ones
        the time per output chunk (recorded once per call, at its end, as the mean gap
        between content chunks after the first: one histogram sample per call keeps the
        per-chunk cost to a clock read). ``content=False`` (a usage-only or keep-alive
        event) only moves the end of the stream."""
        if content and self._first_chunk is not None and not self._ending:
            # every content chunk after the first: the per-chunk path, a clock read
            self._last_content = self._last_chunk = perf_counter()
            self._gaps += 1
            return
        if self._inst is None or self._ending:
            return
        if content:  # the first content chunk
            self.first_chunk()
            return
        self._last_chunk = perf_counter()

    @property
    def last_chunk_at(self) -> float | None:
        """``time.perf_counter()`` of the last chunk seen, if any."""
        return self._last_chunk

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """Token counts of the call (recorded when it ends; a later value replaces)."""
        if input_tokens is not None:
            self._tokens["input"] = int(input_tokens)
        if output_tokens is not None:
            self._tokens["output"] = int(output_tokens)

    def response_model(self, model: Any) -> None:
        """``gen_ai.response.model`` as the response names it (folded like request models)."""
        if model and self._response_model is None:
            self._response_model = fold_model(str(model))
            self.wants_response_model = False

    def error(self, error: BaseException | str) -> None:
        """Mark the call failed (``error.type`` = the exception's class name, or the string)."""
        from redline._api.lifecycle import error_type

        self._error = error_type(error)

    def attempt(self, cause: str, duration: float, retry_after: float | None = None) -> None:
        """One HTTP attempt ended with ``cause`` (``ok``, ``http_429``, ``timeout``...)."""
        if self._inst is None:
            return
        attrs, key = self._set.variant(((Attr.ATTEMPT_CAUSE, cause),))
        self.attempt_count += 1
        self.last_cause = cause
        self._inst.attempts.add_key(1, key)
        self._inst.attempt_duration.record(max(duration, 0.0), attrs)
        if retry_after is not None and retry_after >= 0:
            self._inst.retry_after.record(retry_after, attrs)

    def retry(self, backoff: float) -> None:
        """The SDK waited ``backoff`` seconds and is about to retry after the last attempt."""
        if self._inst is None:
            return
        attrs, key = self._set.variant(((Attr.ATTEMPT_CAUSE, self.last_cause or "unknown"),))
        self._inst.retries.add_key(1, key)
        self._inst.retry_backoff.record(max(backoff, 0.0), attrs)

    # --- the end ------------------------------------------------------------------------
    def _on_end(self, error: str | None, at: float | None) -> None:
        _open.pop(id(self), None)
        inst = self._inst
        if inst is None:
            return
        self._ending = True
        error = error or self._error or None  # "" is no error.type, as before
        shape = self._set
        if self._gaps and self._first_chunk is not None:
            inst.time_per_output_chunk.record(
                (self._last_content - self._first_chunk) / self._gaps, shape.attrs)
        inst.requests_in_flight.add_key(-1, shape.key)
        activity_end(inst, self._activity)
        end = at if at is not None else perf_counter()
        ending = shape.ending(self._response_model, error, self.streaming)
        inst.requests.add_key(1, ending.requests_key)
        inst.operation_duration.record(max(end - self._t0, 0.0), ending.duration)
        for kind, n in self._tokens.items():
            inst.token_usage.record(n, ending.tokens[kind])

    # --- context: attempts made inside the block belong to this call ----------------------
    def activate(self) -> contextvars.Token:
        """Make this the current call of the context; returns the token for :meth:`deactivate`."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token) -> None:
        """Undo :meth:`activate`."""
        # ValueError: reset from another context (a generator finalized elsewhere)
        with contextlib.suppress(ValueError):
            _current.reset(token)

    def __enter__(self) -> ModelCall:
        self.start()
        self._token = self.activate()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._token is not None:
            self.deactivate(self._token)
            self._token = None
        self.end(exc)

    async def __aenter__(self) -> ModelCall:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)


def model_call(*, provider: str, model: str | None = None, server_address: str | None = None,
               server_port: int | None = None, operation: str = "chat",
               streaming: bool = False, meter_provider: Any = None) -> ModelCall:
    """Record one model call; see :class:`ModelCall` for the arguments and the handle.

    Returns:
        A :class:`ModelCall`, usable as ``with``/``async with`` (yielding itself) or as a
        decorator.
    """
    return ModelCall(provider=provider, model=model, server_address=server_address,
                     server_port=server_port, operation=operation, streaming=streaming,
                     meter_provider=meter_provider)
