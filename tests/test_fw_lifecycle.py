"""Framework instrumentors: found through the entry point, skipped cleanly when a framework
is absent, all-or-nothing, reversible, and their own failures never reach the app."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from redline._api.testing import MetricsCapture
from redline.instrumentors import frameworks
from redline.instrumentors.frameworks._patch import Patches
from redline.instrumentors.frameworks.openai_agents import RedlineProcessor
from redline.semconv import METRICS

TARGETS = {  # what each instrumentor wraps: (module, attribute path)
    "langchain": ("langchain_core.callbacks.base", "BaseCallbackManager.__init__"),
    "mcp": ("mcp.client.session", "ClientSession.call_tool"),
    "mcp client": ("mcp.client.client", "Client.call_tool"),
    "pydantic-ai run": ("pydantic_ai.agent", "Agent.iter"),
    "pydantic-ai tool": ("pydantic_ai.tool_manager", "ToolManager.execute_tool_call"),
}


def _raw(module: str, path: str):
    import importlib

    owner = importlib.import_module(module)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    return owner.__dict__[attr]


def test_instrument_wraps_every_target_and_uninstrument_restores_them():
    originals = {k: _raw(*t) for k, t in TARGETS.items()}
    with MetricsCapture(instrument=True):
        for key, target in TARGETS.items():
            assert getattr(_raw(*target), "__wrapped__", None) is originals[key], key
    for key, target in TARGETS.items():
        assert _raw(*target) is originals[key], key


def test_absent_framework_is_skipped_without_import_or_warning(monkeypatch, caplog):
    monkeypatch.setattr(frameworks, "FRAMEWORKS", (
        ("redline.instrumentors.frameworks.no_such_module", "Nope",
         "redline-no-such-framework >= 1"),))
    with caplog.at_level(logging.INFO, logger="redline"):
        assert frameworks.framework_instrumentors() == []
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    assert "redline.instrumentors.frameworks.no_such_module" not in sys.modules


def test_patches_are_all_or_nothing():
    target = TARGETS["mcp"]
    original = _raw(*target)
    patches = Patches([(*target, _passthrough),
                       ("mcp.client.session", "ClientSession.no_such_method", _passthrough)])
    with pytest.raises(AttributeError, match="no_such_method"):
        patches.apply()
    assert _raw(*target) is original  # the first target was not wrapped either


async def _passthrough(wrapped, instance, args, kwargs):
    return await wrapped(*args, **kwargs)


def test_processor_failures_are_swallowed_and_counted():
    with MetricsCapture() as cap:
        processor = RedlineProcessor()
        broken = SimpleNamespace(span_data=None, span_id="s1", parent_id=None, trace_id="t1")
        processor.on_span_start(broken)  # no span_data.type: redline's bug, not the app's
        processor.on_span_end(broken)
        processor.on_trace_end(SimpleNamespace())
        assert cap.sum(METRICS.INSTRUMENTATION_ERRORS.name,
                       redline_component="openai_agents") == 2
        assert processor.open_counts() == (0, 0, 0)
