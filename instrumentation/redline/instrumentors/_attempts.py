"""The retry budget's say in the SDK's retry decision (acting only when one is configured).

Attempts and retries are *counted* in :mod:`redline.instrumentors._transport`, at the
HTTP client's ``send``, on every supported version. *Stopping* a retry needs the SDK's
own decision point, which differs per version; each instrumentor feature-detects these:

* HTTP-status retries (429, 5xx...) on every supported version: ``BaseClient._should_retry``
  (openai 1.x-2.x, anthropic), or openai 3.x's ``_RequestBodyReplay.rewind``, which that
  loop asks before *every* retry, status or timeout/connection error;
* timeout/connection-error retries: openai >= 3.0 (``rewind``), anthropic releases with
  ``_should_retry_exception`` (see :data:`redline.instrumentors.anthropic.BUDGET_NOTE`).

A veto makes the SDK raise the error it would raise with no retries left. With no limiter
configured (:func:`redline.limiter.wiring.configure`), every wrapper here returns the SDK's
own decision untouched: the instrumentation observes and never acts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redline._api.model_call import current_model_call
from redline.instrumentors import _limits

__all__ = ["veto_bool", "veto_pair"]


def _allowed() -> bool:
    call = current_model_call()
    if call is None or not call.sdk_attempts:
        return True
    if call.max_retries is not None and call.attempt_count > call.max_retries:
        return True  # no retry would happen anyway: do not spend budget on it
    return _limits.retry_allowed(call.route)


def veto_bool(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> bool:
    """Wrapper of a retry decision returning ``bool``: the retry budget may turn it off."""
    decision = wrapped(*args, **kwargs)
    if decision and _limits.configured():
        decision = _allowed()
    return decision


def veto_pair(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Wrapper of anthropic's ``_should_retry_exception`` -> ``(retry, response)``.

    Only the no-response case is decided here; with a response, ``_should_retry`` (wrapped
    by :func:`veto_bool`) already asked the budget.
    """
    decision = wrapped(*args, **kwargs)
    if not _limits.configured():
        return decision
    try:
        retry, response = decision
    except (TypeError, ValueError):
        return decision
    if retry and response is None and not _allowed():
        return False, None
    return decision
