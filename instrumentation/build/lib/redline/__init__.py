"""redline: how close is my agent or inference service to saturation, and will someone be
paged before users feel it?

The instrumentation API:

* :func:`configure_telemetry` / :func:`shutdown_telemetry` / :func:`force_flush` — metrics
  to the Collector over OTLP, from the standard ``OTEL_*`` environment.
* :func:`instrument` / :func:`uninstrument` — the ``openai`` and ``anthropic`` SDKs.
* :func:`model_call`, :func:`agent_session`, :func:`tool_call` — by hand, for anything else.
* :class:`Limiter` / :class:`RetryBudget` — a bounded in-flight cap per target with queue
  telemetry, deadlines and a retry budget.
"""

from redline._api.instrument import instrument, uninstrument
from redline._api.model_call import ModelCall, current_model_call, model_call
from redline._api.scopes import Scope, agent_session, tool_call
from redline.telemetry import configure_telemetry, force_flush, shutdown_telemetry

__all__ = [
    "configure_telemetry",
    "shutdown_telemetry",
    "force_flush",
    "instrument",
    "uninstrument",
    "model_call",
    "ModelCall",
    "current_model_call",
    "agent_session",
    "tool_call",
    "Scope",
    "Limiter",
    "RetryBudget",
]


def __getattr__(name: str):
    # the limiter pulls in the config schema (pydantic, ruamel); apps that only
    # instrument should not pay for that at import time
    if name in ("Limiter", "RetryBudget"):
        from redline import limiter

        return getattr(limiter, name)
    raise AttributeError(f"module 'redline' has no attribute {name!r}")
