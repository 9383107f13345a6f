"""The real ``openai`` SDK against the simulated server, instrumented by redline."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import openai
import pytest

import redline
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
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sk-SECRET-KEY", max_retries=3) as c:
        yield c


def _stream(client, **kw):
    return client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=8,
                                          stream=True, **kw)


def _in_flight(cap) -> float:
    return cap.sum(METRICS.REQUESTS_IN_FLIGHT.name)


def test_chat_non_streaming_records_call_tokens_and_server(cap, client, sim):
    reply = client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=5)
    assert reply.usage.completion_tokens == 5
    ok = cap.points(METRICS.REQUESTS.name, error_type=None)
    assert [dp.value for dp in ok] == [1]
    attrs = dict(ok[0].attributes)
    assert attrs == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": "sim-model", "server.address": "127.0.0.1",
                     "server.port": sim.port, "gen_ai.response.model": "sim-model"}
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 5
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="input") == 4
    assert cap.count(METRICS.OPERATION_DURATION.name, redline_streaming=False) == 1
    assert cap.count(METRICS.TIME_TO_FIRST_CHUNK.name) == 0  # not a stream
    assert _in_flight(cap) == 0


def test_stream_ttft_chunks_and_usage(cap, client):
    stream = _stream(client, stream_options={"include_usage": True})
    content = sum(1 for c in stream if c.choices and c.choices[0].delta.content)
    assert content == 8
    ttft = cap.hist_max(METRICS.TIME_TO_FIRST_CHUNK.name)
    assert PREFILL_S <= ttft < PREFILL_S + 2.0, ttft
    assert cap.count(METRICS.TIME_PER_OUTPUT_CHUNK.name) == 1  # one mean gap per call
    assert 0 < cap.hist_max(METRICS.TIME_PER_OUTPUT_CHUNK.name) < 0.05
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 8
    dur = cap.hist_max(METRICS.OPERATION_DURATION.name, redline_streaming=True)
    assert dur >= ttft
    assert _in_flight(cap) == 0


async def test_async_stream_and_non_stream(cap, sim):
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
        stream = await client.chat.completions.create(model="sim-model", messages=MSG,
                                                      max_tokens=6, stream=True)
        assert isinstance(stream, openai.AsyncStream)  # the proxy passes isinstance checks
        chunks = [c async for c in stream]
        await client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=3)
    assert len(chunks) >= 6
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 2
    assert PREFILL_S <= cap.hist_max(METRICS.TIME_TO_FIRST_CHUNK.name) < PREFILL_S + 2.0
    assert _in_flight(cap) == 0


def _cause(record: dict) -> str:
    if record["status"] == 0:  # the sim aborted the connection (a "reset" fault)
        return "connection_error"
    return "ok" if record["status"] < 400 else f"http_{record['status']}"


def _causes_from_log(sim) -> Counter:
    return Counter(_cause(r) for r in sim.log())


def test_retries_inside_the_sdk_loop_match_the_server_log(cap, client, sim):
    sim.set_faults([{"kind": "status", "status": 429, "retry_after": 0.05, "count": 2},
                    {"kind": "status", "status": 500, "count": 1}])
    client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=3)
    seen = Counter({dict(dp.attributes)["redline.attempt.cause"]: dp.value
                    for dp in cap.points(METRICS.ATTEMPTS.name)})
    assert seen == _causes_from_log(sim) == Counter({"http_429": 2, "http_500": 1, "ok": 1})
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="http_429") == 2
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="http_500") == 1
    # Retry-After observed and honoured by the SDK's own backoff
    assert cap.hist_min(METRICS.RETRY_AFTER.name, redline_attempt_cause="http_429") == 0.05
    assert cap.hist_min(METRICS.RETRY_BACKOFF.name, redline_attempt_cause="http_429") >= 0.05
    assert cap.count(METRICS.ATTEMPT_DURATION.name) == 4
    # the operation includes the retries; one attempt does not
    backoff = cap.hist_sum(METRICS.RETRY_BACKOFF.name)
    assert cap.hist_max(METRICS.OPERATION_DURATION.name) >= backoff
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1
    assert _in_flight(cap) == 0


def test_connection_error_and_timeout_attempts_match_the_server_log(cap, sim):
    sim.set_faults([{"kind": "reset", "count": 1}, {"kind": "slow", "delay": 3.0, "count": 1},
                    {"kind": "status", "status": 503, "count": 1}])
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=3,
                       timeout=0.5) as client:
        client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=3)
    seen = Counter({dict(dp.attributes)["redline.attempt.cause"]: dp.value
                    for dp in cap.points(METRICS.ATTEMPTS.name)})
    logged = _causes_from_log(sim)
    logged["timeout"], logged["ok"] = logged["timeout"] + 1, logged["ok"] - 1  # the slow one
    assert seen == +logged == Counter({"connection_error": 1, "timeout": 1, "http_503": 1,
                                       "ok": 1})
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="connection_error") == 1
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="timeout") == 1
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="http_503") == 1
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1
    assert _in_flight(cap) == 0


def test_retries_exhausted_is_one_failed_request(cap, sim):
    sim.set_faults([{"kind": "status", "status": 503, "count": 2}])
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=1) as client, \
            pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=3)
    assert cap.sum(METRICS.ATTEMPTS.name, redline_attempt_cause="http_503") == 2
    assert cap.sum(METRICS.REQUESTS.name, error_type="InternalServerError") == 1
    assert _in_flight(cap) == 0


def test_timeout_attempt_then_success(cap, sim):
    sim.set_faults([{"kind": "slow", "delay": 3.0, "count": 1}])
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=2,
                       timeout=0.4) as client:
        client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=3)
    assert cap.sum(METRICS.ATTEMPTS.name, redline_attempt_cause="timeout") == 1
    assert cap.sum(METRICS.ATTEMPTS.name, redline_attempt_cause="ok") == 1
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="timeout") == 1
    assert cap.hist_min(METRICS.ATTEMPT_DURATION.name, redline_attempt_cause="timeout") >= 0.4
    assert _in_flight(cap) == 0


def test_dropped_stream_is_an_error(cap, client, sim):
    sim.set_faults([{"kind": "drop_stream", "after_chunks": 3, "count": 1}])
    got = 0
    with pytest.raises(Exception) as info:  # noqa: B017 - whatever the SDK raises on a cut
        for _ in _stream(client):
            got += 1
    assert got >= 3
    err = type(info.value).__name__
    assert cap.sum(METRICS.REQUESTS.name, error_type=err) == 1
    assert cap.count(METRICS.TIME_TO_FIRST_CHUNK.name) == 1
    assert _in_flight(cap) == 0


@pytest.mark.parametrize("ending", ["break_gc", "close", "with_exit", "consumer_error"])
def test_stream_abandoned_ends_once(cap, client, ending):
    if ending == "break_gc":
        stream = _stream(client)
        next(stream)
        assert _in_flight(cap) == 1
        del stream
        gc.collect()
    elif ending == "close":
        stream = _stream(client)
        next(stream)
        stream.close()
        stream.close()
    elif ending == "with_exit":
        with _stream(client) as stream:
            next(stream)
    else:
        with pytest.raises(KeyError):
            for _ in _stream(client):
                raise KeyError("app bug")
        gc.collect()
    assert _in_flight(cap) == 0
    assert cap.sum(METRICS.REQUESTS.name) == 1  # ended exactly once
    assert cap.count(METRICS.OPERATION_DURATION.name) == 1


async def test_cancelled_task_leaves_no_in_flight(cap, sim):
    sim.set_faults([{"kind": "slow", "delay": 2.0, "count": 1}])
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
        task = asyncio.create_task(client.chat.completions.create(
            model="sim-model", messages=MSG, max_tokens=3))
        await asyncio.sleep(0.2)
        assert _in_flight(cap) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cap.sum(METRICS.REQUESTS.name, error_type="cancelled") == 1
    assert cap.sum(METRICS.ATTEMPTS.name, redline_attempt_cause="cancelled") == 1
    assert _in_flight(cap) == 0


async def test_attempts_never_land_on_an_ended_manual_call(cap, sim):
    # A manual call in an async generator finalized in another task leaves the consumer's
    # context pointing at it; a later SDK request must not record its attempts there.
    async def chunks():
        async with redline.model_call(provider="vllm", model="mine", streaming=True):
            yield 1
            yield 2

    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
        gen = chunks()
        async for _ in gen:
            break
        await asyncio.create_task(gen.aclose())
        await client.models.list()  # no model call of its own
    assert cap.sum(METRICS.ATTEMPTS.name) == 0
    assert cap.sum(METRICS.REQUESTS.name) == 1
    assert _in_flight(cap) == 0


def test_raw_response_stream_runs_until_the_body_ends(cap, client):
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model", messages=MSG, max_tokens=8, stream=True)
    assert _in_flight(cap) == 1  # only the headers are in: the tokens are still to come
    content = sum(1 for c in raw.parse() if c.choices and c.choices[0].delta.content)
    assert content == 8
    assert _in_flight(cap) == 0
    ttft = cap.hist_max(METRICS.TIME_TO_FIRST_CHUNK.name)
    assert PREFILL_S <= ttft < PREFILL_S + 2.0, ttft
    assert cap.hist_max(METRICS.OPERATION_DURATION.name, redline_streaming=True) >= ttft
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1


async def test_streaming_response_stream_runs_until_closed(cap, sim):
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
        async with client.chat.completions.with_streaming_response.create(
                model="sim-model", messages=MSG, max_tokens=8, stream=True) as response:
            assert _in_flight(cap) == 1
            lines = [line async for line in response.iter_lines() if line]
            assert len(lines) >= 8
            assert _in_flight(cap) == 1
        assert _in_flight(cap) == 0
        async with client.chat.completions.with_streaming_response.create(
                model="sim-model", messages=MSG, max_tokens=8, stream=True) as response:
            assert sum([1 async for c in await response.parse()
                        if c.choices and c.choices[0].delta.content]) == 8
    assert _in_flight(cap) == 0
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 2
    assert cap.hist_min(METRICS.OPERATION_DURATION.name, redline_streaming=True) >= PREFILL_S
    assert cap.count(METRICS.TIME_TO_FIRST_CHUNK.name) == 1  # the parsed one


def test_responses_stream_and_non_stream(cap, client):
    if not hasattr(client, "responses"):
        pytest.skip(f"openai {openai.__version__} has no Responses API (it came in 1.66)")
    resp = client.responses.create(model="sim-model", input="SECRET-PROMPT-TEXT",
                                   max_output_tokens=5)
    assert resp.usage.output_tokens == 5
    events = list(client.responses.create(model="sim-model", input="hi", max_output_tokens=5,
                                          stream=True))
    assert any(e.type == "response.output_text.delta" for e in events)
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 2
    assert cap.count(METRICS.TIME_TO_FIRST_CHUNK.name) == 1
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 10
    assert _in_flight(cap) == 0


async def test_embeddings_sync_and_async(cap, client, sim):
    client.embeddings.create(model="sim-model", input="SECRET-PROMPT-TEXT")
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k") as aclient:
        await aclient.embeddings.create(model="sim-model", input="hi")
    assert cap.sum(METRICS.REQUESTS.name, gen_ai_operation_name="embeddings") == 2
    assert cap.count(METRICS.TOKEN_USAGE.name, gen_ai_token_type="input") == 2
    assert _in_flight(cap) == 0


def test_instrumentation_failure_never_reaches_the_app(cap, client, monkeypatch):
    def broken(self, content=True):
        raise RuntimeError("redline bug")

    monkeypatch.setattr(redline.ModelCall, "chunk", broken)
    chunks = list(_stream(client))
    assert len(chunks) >= 8
    assert cap.sum(METRICS.INSTRUMENTATION_ERRORS.name, redline_component="stream_chunk") >= 8
    assert _in_flight(cap) == 0


def test_retry_budget_of_the_real_limiter_stops_sdk_retries(cap, sim):
    from redline.limiter import Limiter, RetryBudget, wiring

    wiring.configure(limiters=Limiter(
        "llm", model_cap=4, retry_budget=RetryBudget(ratio=0.0, min_retries=0),
        meter_provider=False))
    try:
        sim.set_faults([{"kind": "status", "status": 503, "count": 3}])
        with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=3) as client, \
                pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="sim-model", messages=MSG, max_tokens=2)
    finally:
        wiring.reset()
    # the SDK would have made 4 attempts; the budget allowed none after the first
    assert len(sim.log()) == 1
    assert cap.sum(METRICS.ATTEMPTS.name) == 1
    assert cap.sum(METRICS.RETRIES.name) == 0
    assert _in_flight(cap) == 0


def test_a_loop_left_by_break_keeps_the_call_until_close(cap, client):
    """``for`` iterates through a generator (the per-chunk fast path, issue 16): leaving the
    loop must not end the call while the app still holds the open stream."""
    stream = _stream(client)
    for _ in stream:
        break
    assert _in_flight(cap) == 1
    stream.close()
    assert _in_flight(cap) == 0
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1


def test_next_then_for_sees_every_chunk_once(cap, client):
    stream = _stream(client, stream_options={"include_usage": True})
    first = next(stream)
    rest = list(stream)
    content = [c for c in [first, *rest] if c.choices and c.choices[0].delta.content]
    assert len(content) == 8
    assert cap.count(METRICS.TIME_TO_FIRST_CHUNK.name) == 1
    assert cap.count(METRICS.TIME_PER_OUTPUT_CHUNK.name) == 1
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 8
    assert _in_flight(cap) == 0
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1


def test_a_consumer_generator_closed_early_ends_the_call_as_abandoned(cap, client):
    """The app's own generator relays the stream and is closed after one chunk: the
    GeneratorExit passes through redline's iteration without being an error, and the
    stream's end (its proxy collected with the generator) leaves nothing in flight."""
    def consumer():
        for chunk in _stream(client):  # noqa: UP028 - the relay an app writes
            yield chunk

    gen = consumer()
    next(gen)
    assert _in_flight(cap) == 1
    gen.close()
    gc.collect()
    assert _in_flight(cap) == 0
    assert cap.sum(METRICS.REQUESTS.name, error_type=None) == 1
