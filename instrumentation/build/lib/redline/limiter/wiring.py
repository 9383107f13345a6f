"""The contract between the limiter and redline's SDK instrumentation.

The instrumentors ask; this module answers from the process-wide registry set by
:func:`configure`. With nothing configured every function is a no-op: ``call_slot`` and
``async_call_slot`` return ``None`` and ``retry_allowed`` returns ``True``.

``attrs`` is the call's GenAI attributes: ``gen_ai.request.model``, ``server.address``,
``server.port``, ``gen_ai.provider.name``. It picks the target (first
:class:`redline.config.Match` that fits).

* :func:`call_slot` / :func:`async_call_slot` — a context manager holding a ``model`` slot
  for the whole call (``None``: no limiter for this call). Entering may raise
  :class:`~redline.limiter.core.QueueFull` or :class:`~redline.limiter.core.DeadlineExceeded`
  (both :class:`~redline.limiter.core.Rejected`): those are meant for the app. Taking a slot
  also counts the request toward the target's retry budget; do not call
  :func:`record_request` for the same call.
* :func:`record_request` — counts a request toward the retry budget, for calls that do not
  take a slot.
* :func:`retry_allowed` — asked before each SDK retry; ``True`` spends one retry of the
  budget, ``False`` means give up and surface the last error.
* :func:`call_deadline` — a scope giving calls in it a deadline for their queue wait.

Example:
    >>> from redline.limiter import Limiter, RetryBudget, wiring
    >>> _ = wiring.configure(limiters=Limiter("llm", model_cap=8, retry_budget=RetryBudget(),
    ...                                       meter_provider=False))
    >>> with wiring.call_slot({"gen_ai.request.model": "m"}):
    ...     pass
    >>> wiring.reset()
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from redline.limiter.core import Limiter
from redline.limiter.registry import LimiterRegistry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from redline.config import Config

__all__ = ["configure", "reset", "registry", "call_slot", "async_call_slot", "retry_allowed",
           "record_request", "call_deadline"]

_registry: LimiterRegistry | None = None
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "redline_limiter_deadline", default=None)

LimitersArg = Limiter | Iterable[Limiter] | Mapping[str, Limiter] | LimiterRegistry | None


def configure(limiters: LimitersArg = None,
              config: Config | str | os.PathLike[str] | None = None, *,
              meter_provider: MeterProvider | None = None,
              service_name: str | None = None) -> LimiterRegistry:
    """Set the limiters the instrumented SDK calls go through (replacing any before).

    Args:
        limiters: limiters built in code: one, several, a mapping target name -> limiter
            (overriding that target's limiter from ``config``), or a ready registry.
            A limiter whose name is a ``config`` target uses that target's ``match``;
            others match every call.
        config: a :class:`~redline.config.Config` or the path of a ``redline.yaml``; its
            targets with ``limiter.enabled: true`` get a limiter.
        meter_provider: for the limiters built from ``config`` (default: global provider).
        service_name: this process's ``service.name`` for ``match.service``.

    Returns:
        The registry now in use.

    Raises:
        ConfigError: ``config`` is a path that cannot be read or validated.
    """
    global _registry
    if isinstance(limiters, LimiterRegistry):
        _registry = limiters
        return limiters
    if isinstance(config, str | os.PathLike):
        # the schema needs pydantic: the `redline[config]` extra, loaded only when asked for
        from redline.config import load_config

        config = load_config(config)
    if isinstance(limiters, Limiter):
        limiters = [limiters]
    by_name = dict(limiters) if isinstance(limiters, Mapping) else {
        lim.name: lim for lim in (limiters or ())}
    if config is not None:
        reg = LimiterRegistry.from_config(config, limiters=by_name,
                                          meter_provider=meter_provider,
                                          service_name=service_name)
    else:
        reg = LimiterRegistry(service_name)
        for lim in by_name.values():
            reg.add(lim)
    _registry = reg
    return reg


def reset() -> None:
    """Forget the configured limiters: every hook is a no-op again."""
    global _registry
    _registry = None


def registry() -> LimiterRegistry | None:
    """The registry in use, or ``None`` when nothing is configured."""
    return _registry


def _limiter(attrs: Mapping[str, Any]) -> Limiter | None:
    reg = _registry
    return None if reg is None else reg.for_attrs(attrs)


def _report(component: str, exc: BaseException) -> None:
    from redline._api.guard import report

    report(component, exc)


def call_slot(attrs: Mapping[str, Any]) -> contextlib.AbstractContextManager | None:
    """A ``model`` slot for a synchronous call, or ``None`` when no limiter applies."""
    try:
        limiter = _limiter(attrs)
        if limiter is None:
            return None
        limiter.record_request()
        return limiter.slot_sync("model", deadline=_deadline.get())
    except Exception as exc:
        _report("limiter_wiring", exc)
        return None


def async_call_slot(attrs: Mapping[str, Any]) -> contextlib.AbstractAsyncContextManager | None:
    """Async twin of :func:`call_slot` (hold it with ``async with``)."""
    try:
        limiter = _limiter(attrs)
        if limiter is None:
            return None
        limiter.record_request()
        return limiter.slot("model", deadline=_deadline.get())
    except Exception as exc:
        _report("limiter_wiring", exc)
        return None


def retry_allowed(attrs: Mapping[str, Any]) -> bool:
    """Whether the SDK may retry this call; when allowed, the retry is spent from the budget."""
    try:
        limiter = _limiter(attrs)
        return True if limiter is None else limiter.retry_allowed()
    except Exception as exc:
        _report("limiter_wiring", exc)
        return True


def record_request(attrs: Mapping[str, Any]) -> None:
    """Count a request toward its target's retry budget (calls that take no slot only)."""
    try:
        limiter = _limiter(attrs)
        if limiter is not None:
            limiter.record_request()
    except Exception as exc:
        _report("limiter_wiring", exc)


@contextlib.contextmanager
def call_deadline(timeout: float | None = None, *, deadline: float | None = None
                  ) -> Iterator[None]:
    """Give the instrumented calls made inside this scope a deadline for their queue wait.

    Args:
        timeout: seconds from now.
        deadline: absolute ``time.monotonic()`` time (the earlier of the two wins).

    Example:
        >>> with call_deadline(2.0):
        ...     pass  # client.chat.completions.create(...) waits at most 2 s for a slot
    """
    if timeout is not None:
        at = time.monotonic() + timeout
        deadline = at if deadline is None else min(deadline, at)
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)
