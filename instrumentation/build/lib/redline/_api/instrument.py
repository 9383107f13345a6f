"""``instrument()`` / ``uninstrument()``: switch on every instrumentor redline has.

Example:
    >>> import redline
    >>> redline.configure_telemetry()
    >>> redline.instrument()      # openai and anthropic clients, the GPU sampler if present
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["instrument", "uninstrument", "start_gpu", "stop_gpu"]

_log = logging.getLogger("redline")
_gpu_handle: Any = None


def start_gpu(meter_provider: Any) -> None:
    """Call ``redline.gpu.maybe_start(meter_provider)`` if the module exists; never raises."""
    global _gpu_handle
    try:
        from redline import gpu  # written separately; optional
    except Exception:  # absent, or its own dependencies are (ImportError): no GPU metrics
        return
    try:
        if meter_provider is None:
            from opentelemetry import metrics

            from redline import instruments

            meter_provider = instruments._default_provider or metrics.get_meter_provider()
        _gpu_handle = gpu.maybe_start(meter_provider)
    except Exception:
        _log.warning("redline: GPU sampling did not start", exc_info=True)


def stop_gpu() -> None:
    """Stop the sampling :func:`start_gpu` started (``redline.gpu.stop()``); never raises."""
    global _gpu_handle
    started, _gpu_handle = _gpu_handle, None
    if not started:
        return
    try:
        from redline import gpu

        gpu.stop()
    except Exception:
        _log.warning("redline: stopping GPU sampling failed", exc_info=True)


def instrument(**kwargs: Any) -> None:
    """Instrument the ``openai`` and ``anthropic`` SDKs (whichever are importable) and start
    ``redline.gpu`` sampling if that module exists.

    Args:
        **kwargs: passed to :meth:`RedlineInstrumentor.instrument`; ``meter_provider=`` records
            into that provider (default: the one from :func:`configure_telemetry`, else the
            global one).
    """
    from redline.instrumentors import RedlineInstrumentor

    RedlineInstrumentor().instrument(**kwargs)


def uninstrument(**kwargs: Any) -> None:
    """Undo :func:`instrument`: the SDK methods are the originals again."""
    from redline.instrumentors import RedlineInstrumentor

    RedlineInstrumentor().uninstrument(**kwargs)
