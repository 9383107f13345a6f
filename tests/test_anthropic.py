"""The real ``anthropic`` SDK against the simulated server, instrumented by redline."""

from __future__ import annotations

import gc
from collections import Counter

import anthropic
import pytest

from redline._api.testing import MetricsCapture
from redline.semconv import METRICS
from redline_operator.sim import SimConfig, run_in_thread

PREFILL_S = 0.05
CFG = SimConfig(slots=32, prefill_base_s=PREFILL_S, prefill_per_token_s=0.0,
                decode_base_s=0.002, decode_alpha=0.0, default_output_tokens=8, prompt_tokens=4)
MSG = [{"role": "user", "content": "SECRET-PROMPT-TEXT"}]


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(CFG) as server:
        yield server


@pytest.fixture()
def cap(sim):
    sim.reset()
    with MetricsCapture(instrument=True) as capture:
        yield capture


@pytest.fixture()
def client(sim):
    with anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-SECRET", max_retries=3) as c:
        yield c


def _in_flight(cap) -> float:
    return cap.sum(METRICS.REQUESTS_IN_FLIGHT.name)


def test_messages_create(cap, client, sim):
    msg = client.messages.create(model="sim-model", max_tokens=5, messages=MSG)
    assert msg.usage.output_tokens == 5
    ok = cap.points(METRICS.REQUESTS.name, error_type=None)
    assert [dp.value for dp in ok] == [1]
    assert dict(ok[0].attributes)["gen_ai.provider.name"] == "anthropic"
    assert dict(ok[0].attributes)["server.port"] == sim.port
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 5
    assert _in_flight(cap) == 0


def test_messages_create_stream_true(cap, client):
    events = list(client.messages.create(model="sim-model", max_tokens=8, messages=MSG,
                                         stream=True))
    deltas = sum(1 for e in events if e.type == "content_block_delta")
    assert deltas == 8
    assert PREFILL_S <= cap.hist_max(METRICS.TIME_TO_FIRST_CHUNK.name) < PREFILL_S + 2.0
    assert cap.count(METRICS.TIME_PER_OUTPUT_CHUNK.name) == 1  # one mean gap per call
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 8
    assert _in_flight(cap) == 0


def test_raw_response_stream_runs_until_the_body_ends(cap, client):
    raw = client.messages.with_raw_response.create(model="sim-model", max_tokens=8,
                                                   messages=MSG, stream=True)
    assert _in_flight(cap) == 1  # only the headers are in: the tokens are still to come
    deltas = sum(1 for e in raw.parse() if e.type == "content_block_delta")
    assert deltas == 8
    assert _in_flight(cap) == 0
    ttft = cap.hist_max(METRICS.TIME_TO_FIRST_CHUNK.name)
    assert PREFILL_S <= ttft < PREFILL_S + 2.0, ttft
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 8
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1


def test_messages_stream_helper_sync(cap, client):
    with client.messages.stream(model="sim-model", max_tokens=8, messages=MSG) as stream:
        assert _in_flight(cap) == 1
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 8
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1
    assert cap.count(METRICS.OPERATION_DURATION.name, redline_streaming="true") == 0
    assert cap.count(METRICS.OPERATION_DURATION.name, redline_streaming=True) == 1
    assert PREFILL_S <= cap.hist_max(METRICS.TIME_TO_FIRST_CHUNK.name) < PREFILL_S + 2.0
    assert _in_flight(cap) == 0


async def test_messages_stream_helper_async_and_create(cap, sim):
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="k") as client:
        async with client.messages.stream(model="sim-model", max_tokens=6,
                                          messages=MSG) as stream:
            final = await stream.get_final_message()
        assert final.usage.output_tokens == 6
        events = [e async for e in await client.messages.create(
            model="sim-model", max_tokens=4, messages=MSG, stream=True)]
        await client.messages.create(model="sim-model", max_tokens=2, messages=MSG)
    assert events
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 3
    assert cap.count(METRICS.TIME_TO_FIRST_CHUNK.name) == 2
    assert _in_flight(cap) == 0


def test_stream_helper_left_early(cap, client):
    with client.messages.stream(model="sim-model", max_tokens=8, messages=MSG) as stream:
        next(iter(stream))
    assert _in_flight(cap) == 0
    stream = client.messages.create(model="sim-model", max_tokens=8, messages=MSG, stream=True)
    next(stream)
    del stream
    gc.collect()
    assert _in_flight(cap) == 0
    assert cap.sum(METRICS.REQUESTS.name) == 2


def test_retries_inside_the_sdk_loop_match_the_server_log(cap, client, sim):
    sim.set_faults([{"kind": "status", "status": 429, "retry_after": 0.05, "count": 1},
                    {"kind": "status", "status": 502, "count": 1}])
    with client.messages.stream(model="sim-model", max_tokens=3, messages=MSG) as stream:
        stream.until_done()
    seen = Counter({dict(dp.attributes)["redline.attempt.cause"]: dp.value
                    for dp in cap.points(METRICS.ATTEMPTS.name)})
    logged = Counter("ok" if r["status"] < 400 else f"http_{r['status']}" for r in sim.log())
    assert seen == logged == Counter({"http_429": 1, "http_502": 1, "ok": 1})
    assert cap.sum(METRICS.RETRIES.name) == 2
    assert cap.hist_min(METRICS.RETRY_BACKOFF.name, redline_attempt_cause="http_429") >= 0.05
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1
    assert _in_flight(cap) == 0


def test_connection_error_and_timeout_attempts(cap, sim):
    sim.set_faults([{"kind": "reset", "count": 1}, {"kind": "slow", "delay": 3.0, "count": 1}])
    with anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=3) as c:
        # per request: anthropic 0.28's messages.create passes its own default timeout
        c.messages.create(model="sim-model", max_tokens=3, messages=MSG, timeout=0.5)
    seen = Counter({dict(dp.attributes)["redline.attempt.cause"]: dp.value
                    for dp in cap.points(METRICS.ATTEMPTS.name)})
    statuses = Counter(r["status"] for r in sim.log())
    assert seen == Counter({"connection_error": 1, "timeout": 1, "ok": 1}), (seen, statuses)
    assert statuses == Counter({0: 1, 200: 2})  # reset, slow (200 after the client left), ok
    assert cap.sum(METRICS.RETRIES.name) == 2
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1
    assert _in_flight(cap) == 0


def test_error_and_dropped_stream(cap, sim):
    sim.set_faults([{"kind": "status", "status": 500, "count": 1},
                    {"kind": "drop_stream", "after_chunks": 2, "count": 1}])
    with anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model="sim-model", max_tokens=3, messages=MSG)
        with pytest.raises(Exception), client.messages.stream(  # noqa: B017 - the SDK's cut error
                model="sim-model", max_tokens=8, messages=MSG) as stream:
            stream.until_done()
    assert cap.sum(METRICS.REQUESTS.name, error_type="InternalServerError") == 1
    failed = cap.points(METRICS.REQUESTS.name)
    assert sum(dp.value for dp in failed if "error.type" in dp.attributes) == 2
    assert _in_flight(cap) == 0
