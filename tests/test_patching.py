"""Patching is all-or-nothing per SDK, counts once however often it is asked, and reverses.

Runs against whichever openai/anthropic versions are installed (the version matrix runs it
against each one): the targets come from the instrumentors' own feature detection.
"""

from __future__ import annotations

import logging

import pytest

import redline
from redline._api.testing import MetricsCapture
from redline.instrumentors import _patching, _transport
from redline.semconv import METRICS
from redline_operator.sim import SimConfig, run_in_thread

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

CFG = SimConfig(slots=8, prefill_base_s=0.01, prefill_per_token_s=0.0, decode_base_s=0.001,
                decode_alpha=0.0, default_output_tokens=2, prompt_tokens=4)
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(CFG) as server:
        yield server


def _sdk_targets():
    from redline.instrumentors import anthropic as an
    from redline.instrumentors import openai as oa

    targets, _ = oa._targets()
    return targets + an._targets() + _transport._targets()


def _snapshot():
    return [(t.owner, t.name, vars(t.owner).get(t.name, "<absent>")) for t in _sdk_targets()]


def _wrapped_count():
    return sum(_patching.is_redline_wrapper(vars(t.owner).get(t.name)) for t in _sdk_targets())


def test_uninstrument_restores_every_original():
    before = _snapshot()
    assert len(before) >= 9  # chat/embeddings x2, messages create/stream x2, send x2, veto
    with MetricsCapture(instrument=True):
        assert _wrapped_count() == len(before)
    assert _snapshot() == before
    assert _wrapped_count() == 0


def test_instrument_twice_counts_once(sim):
    from redline.instrumentors import RedlineInstrumentor
    from redline.instrumentors.openai import OpenAIInstrumentor

    with MetricsCapture(instrument=True) as cap:
        redline.instrument(meter_provider=cap.provider)
        RedlineInstrumentor().instrument(meter_provider=cap.provider)
        OpenAIInstrumentor().instrument(meter_provider=cap.provider)
        with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
            client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=2)
        assert cap.sum(METRICS.REQUESTS.name) == 1
        assert cap.sum(METRICS.ATTEMPTS.name) == 1
    assert _wrapped_count() == 0


def test_a_failing_wrap_leaves_the_sdk_untouched(monkeypatch, caplog, sim):
    before = _snapshot()
    real = _patching._RedlineWrapper

    def flaky(original, wrapper):
        # openai's second target, after chat.completions.create is already wrapped
        if getattr(original, "__qualname__", "") == "AsyncCompletions.create":
            raise RuntimeError("simulated wrapt failure")
        return real(original, wrapper)

    monkeypatch.setattr(_patching, "_RedlineWrapper", flaky)
    with caplog.at_level(logging.WARNING, logger="redline"), \
            MetricsCapture(instrument=True) as cap:
        from redline.instrumentors.openai import OpenAIInstrumentor

        assert not OpenAIInstrumentor._patches.active
        oa_targets, _ = __import__("redline.instrumentors.openai",
                                   fromlist=["_targets"])._targets()
        assert not any(_patching.is_redline_wrapper(vars(t.owner).get(t.name))
                       for t in oa_targets)
        with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
            client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=2)
        assert cap.sum(METRICS.REQUESTS.name) == 0  # nothing half-recorded either
    assert "leaving openai as it was" in caplog.text
    assert _snapshot() == before
    # and a later instrument() works normally
    monkeypatch.setattr(_patching, "_RedlineWrapper", real)
    with MetricsCapture(instrument=True) as cap, \
            openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
        client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=2)
        assert cap.sum(METRICS.REQUESTS.name) == 1
    assert _snapshot() == before


def test_a_missing_target_applies_nothing(monkeypatch, caplog):
    class Resource:
        def create(self):
            return "original"

    original = vars(Resource)["create"]
    patches = _patching.PatchSet("demo")
    targets = [_patching.Target(Resource, "create", lambda w, i, a, k: "wrapped"),
               _patching.Target(Resource, "not_in_this_version", lambda w, i, a, k: None)]
    with caplog.at_level(logging.INFO, logger="redline"):
        assert patches.apply(targets) is False
    assert vars(Resource)["create"] is original and not patches.active
    assert "not_in_this_version not found" in caplog.text


def test_inherited_methods_are_shadowed_then_deleted_again():
    class Base:
        def send(self):
            return "base"

    class Child(Base):
        pass

    patches = _patching.PatchSet("demo")
    assert patches.apply([_patching.Target(Child, "send", lambda w, i, a, k: "wrapped")])
    assert Child().send() == "wrapped" and Base().send() == "base"
    patches.restore()
    assert "send" not in vars(Child) and Child().send() == "base"


def test_app_http_traffic_outside_an_sdk_call_is_not_counted(sim):
    import httpx

    with MetricsCapture(instrument=True) as cap:
        with redline.model_call(provider="vllm", model="mine"):
            httpx.get(f"{sim.url}/v1/models")  # the app's own request inside a manual call
        httpx.get(f"{sim.url}/v1/models")
        assert cap.sum(METRICS.ATTEMPTS.name) == 0
        assert cap.sum(METRICS.REQUESTS.name) == 1


@pytest.mark.parametrize("missing", ["anthropic", "openai"])
def test_an_app_with_one_sdk_gets_no_error_about_the_other(missing):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import logging, sys
        sys.modules[{missing!r}] = None  # as if it were not installed
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        import redline
        from opentelemetry.sdk.metrics import MeterProvider
        redline.instrument(meter_provider=MeterProvider())
        from redline.instrumentors.{'anthropic' if missing == 'openai' else 'openai'} import *
        redline.uninstrument()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr and "DependencyConflict" not in done.stderr, done.stderr
    assert missing not in done.stderr.replace("GPU", ""), done.stderr
