"""Every environment variable redline itself reads (the ``OTEL_*`` ones are OpenTelemetry's).

* ``REDLINE_MAX_MODELS`` (default 32): distinct ``gen_ai.request.model`` values kept per
  process; later ones are recorded as ``_OTHER``.
* ``REDLINE_MAX_SERVERS`` (default 16): distinct ``server.address`` values kept per process;
  later ones are recorded as ``_OTHER`` (and lose ``server.port``).
"""

from __future__ import annotations

import logging
import os

__all__ = ["REDLINE_MAX_MODELS", "REDLINE_MAX_SERVERS", "OTHER", "int_from_env"]

REDLINE_MAX_MODELS = "REDLINE_MAX_MODELS"
REDLINE_MAX_SERVERS = "REDLINE_MAX_SERVERS"
DEFAULT_MAX_MODELS = 32
DEFAULT_MAX_SERVERS = 16

OTHER = "_OTHER"
"""The value an attribute takes once its cardinality limit is reached."""

_log = logging.getLogger("redline")


def int_from_env(name: str, default: int) -> int:
    """A non-negative integer from the environment, or ``default`` (with a warning) if invalid."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        _log.warning("redline: %s=%r is not a non-negative integer; using %d", name, raw, default)
        return default
