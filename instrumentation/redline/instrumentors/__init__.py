"""``RedlineInstrumentor``: the one entry point ``opentelemetry-instrument`` finds.

It switches on one instrumentor per SDK (:mod:`redline.instrumentors.openai`,
:mod:`redline.instrumentors.anthropic`) and one per agent framework
(:mod:`redline.instrumentors.frameworks`: OpenAI Agents SDK, LangChain/LangGraph, MCP
client, pydantic-ai). An SDK or framework that is not installed is skipped without a word
(DEBUG only); an installed one outside the supported range gets one ERROR line from
``BaseInstrumentor`` and is left alone. It also starts ``redline.gpu`` sampling when that
module exists, so ``opentelemetry-instrument`` gets everything ``redline.instrument()`` does.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

__all__ = ["RedlineInstrumentor"]

_log = logging.getLogger("redline")


def _installed(sdk: str) -> bool:
    try:
        return importlib.util.find_spec(sdk) is not None
    except (ImportError, ValueError):
        return False


def _sdk_instrumentors() -> list[BaseInstrumentor]:
    """One instrumentor per SDK that is installed (an absent SDK is not worth a log line)."""
    found: list[BaseInstrumentor] = []
    for sdk, module, cls in (("openai", "redline.instrumentors.openai", "OpenAIInstrumentor"),
                             ("anthropic", "redline.instrumentors.anthropic",
                              "AnthropicInstrumentor")):
        if not _installed(sdk):
            _log.debug("redline: %s is not installed; not instrumenting it", sdk)
            continue
        try:
            mod = __import__(module, fromlist=[cls])
            found.append(getattr(mod, cls)())
        except ImportError:
            _log.debug("redline: %s not available", module)
    from redline.instrumentors.frameworks import framework_instrumentors

    return found + framework_instrumentors()


class RedlineInstrumentor(BaseInstrumentor):
    """Instruments every supported LLM SDK that is installed.

    Example:
        >>> from redline.instrumentors import RedlineInstrumentor
        >>> RedlineInstrumentor().instrument(meter_provider=provider)
        >>> RedlineInstrumentor().uninstrument()
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # each SDK instrumentor checks its own

    def _instrument(self, **kwargs: Any) -> None:
        from redline import instruments
        from redline._api.instrument import start_gpu
        from redline.instruments import set_default_meter_provider
        from redline.telemetry import warn_if_explicit_buckets

        meter_provider = kwargs.get("meter_provider")
        if meter_provider is not None:
            set_default_meter_provider(meter_provider)
        warn_if_explicit_buckets(meter_provider or instruments._default_provider)
        for inst in _sdk_instrumentors():
            try:
                inst.instrument(**kwargs)
            except ImportError as exc:
                # its library, or one it needs, cannot be imported (e.g. a framework whose
                # SDK is missing): as quiet as a library that is not installed at all
                _log.debug("redline: %s skipped: %s", type(inst).__name__, exc)
            except Exception:
                _log.warning("redline: %s failed to instrument", type(inst).__name__,
                             exc_info=True)
        start_gpu(meter_provider)

    def _uninstrument(self, **kwargs: Any) -> None:
        from redline._api.instrument import stop_gpu

        stop_gpu()
        for inst in _sdk_instrumentors():
            try:
                inst.uninstrument(**kwargs)
            except Exception:
                _log.warning("redline: %s failed to uninstrument", type(inst).__name__,
                             exc_info=True)
