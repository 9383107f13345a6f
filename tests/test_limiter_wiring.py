"""The wiring contract (:mod:`redline.limiter.wiring`) and the registry behind it."""

from __future__ import annotations

import time

import pytest

from redline.config import Match, load_config
from redline.limiter import DeadlineExceeded, Limiter, LimiterRegistry, RetryBudget, wiring

SIM = {"gen_ai.request.model": "sim-model", "server.address": "127.0.0.1",
       "server.port": 8000, "gen_ai.provider.name": "openai"}
OTHER = {**SIM, "server.address": "api.openai.com", "gen_ai.request.model": "gpt-4o"}

YAML = """
targets:
  - name: local-sim
    match: {server_address: 127.0.0.1}
    saturation_concurrency: 10
    limiter: {enabled: true, model_cap: 3, queue_limit: 5, retry_budget_ratio: 0.5}
  - name: openai
    match: {model: gpt-4o}
    saturation_concurrency: 50
pager:
  receivers: [{type: webhook, name: hook, url: "http://127.0.0.1:9/"}]
  page_receiver: hook
  warn_receiver: hook
"""


@pytest.fixture(autouse=True)
def _reset():
    wiring.reset()
    yield
    wiring.reset()


def test_no_op_when_nothing_is_configured():
    assert wiring.registry() is None
    assert wiring.call_slot(SIM) is None
    assert wiring.async_call_slot(SIM) is None
    assert wiring.retry_allowed(SIM) is True
    assert wiring.record_request(SIM) is None


def test_configure_from_yaml_matches_targets(tmp_path):
    path = tmp_path / "redline.yaml"
    path.write_text(YAML)
    reg = wiring.configure(config=str(path))
    assert [lim.name for lim in reg] == ["local-sim"]  # openai has limiter.enabled false
    assert wiring.call_slot(OTHER) is None
    with wiring.call_slot(SIM) as ticket:
        assert reg.get("local-sim").stats().in_flight == 1 and ticket.pool == "model"
    assert reg.get("local-sim").cap("model") == 3


async def test_async_call_slot_holds_a_model_slot():
    limiter = Limiter("x", model_cap=1, meter_provider=False)
    wiring.configure(limiters=limiter)
    async with wiring.async_call_slot(SIM):
        assert limiter.stats().in_flight == 1
    assert limiter.stats().in_flight == 0 and limiter.stats().admitted == 1


def test_code_limiters_override_the_yaml_and_keep_its_match(tmp_path):
    path = tmp_path / "redline.yaml"
    path.write_text(YAML)
    mine = Limiter("openai", model_cap=7, meter_provider=False)
    reg = wiring.configure(limiters={"openai": mine}, config=load_config(path))
    assert reg.for_attrs(OTHER) is mine
    assert reg.for_attrs({**OTHER, "gen_ai.request.model": "gpt-5"}) is None


def test_first_matching_target_wins_and_service_is_compared():
    a = Limiter("a", meter_provider=False)
    b = Limiter("b", meter_provider=False)
    reg = LimiterRegistry(service_name="checkout")
    reg.add(a, Match(service="search"))
    reg.add(b, Match(service="checkout", model="sim-model"))
    assert reg.for_attrs(SIM) is b
    assert reg.for_attrs(OTHER) is None


def test_slot_counts_the_request_and_retry_allowed_spends_the_budget():
    budget = RetryBudget(0.5, 10, min_retries=0)
    limiter = Limiter("x", retry_budget=budget, meter_provider=False)
    wiring.configure(limiters=limiter)
    assert wiring.retry_allowed(SIM) is False  # no requests yet
    for _ in range(4):
        with wiring.call_slot(SIM):
            pass
    assert [wiring.retry_allowed(SIM) for _ in range(3)] == [True, True, False]
    wiring.record_request(SIM)
    wiring.record_request(SIM)
    assert wiring.retry_allowed(SIM) is True
    assert limiter.stats().rejected["retry_budget"] == 2


def test_call_deadline_sheds_an_instrumented_call_waiting_too_long():
    limiter = Limiter("x", model_cap=1, meter_provider=False)
    wiring.configure(limiters=limiter)
    with wiring.call_slot(SIM), wiring.call_deadline(0.03), pytest.raises(DeadlineExceeded):
        with wiring.call_slot(SIM):
            pass
    with wiring.call_slot(SIM) as ticket:  # outside the scope: no deadline
        assert ticket.deadline is None


def test_our_own_errors_never_reach_the_caller(monkeypatch):
    class Broken(LimiterRegistry):
        def for_attrs(self, attrs):
            raise RuntimeError("bug in redline")

    wiring.configure(limiters=Broken())
    assert wiring.call_slot(SIM) is None
    assert wiring.async_call_slot(SIM) is None
    assert wiring.retry_allowed(SIM) is True
    wiring.record_request(SIM)


def test_unhashable_attribute_values_still_match():
    limiter = Limiter("x", meter_provider=False)
    wiring.configure(limiters=limiter)
    assert wiring.call_slot({**SIM, "server.port": [8000]}) is not None


def test_fast_path_lookup_is_cached():
    reg = wiring.configure(limiters=Limiter("x", meter_provider=False))
    reg.for_attrs(SIM)
    t0 = time.perf_counter()
    for _ in range(10_000):
        reg.for_attrs(SIM)
    assert (time.perf_counter() - t0) / 10_000 < 20e-6
