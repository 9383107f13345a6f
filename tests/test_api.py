"""The manual API: ``model_call``, ``agent_session``, ``tool_call``, ``get_instruments``."""

from __future__ import annotations

import asyncio
import time

import pytest

import redline
from redline._api.testing import MetricsCapture
from redline.instruments import get_instruments
from redline.semconv import METRICS


@pytest.fixture()
def cap():
    with MetricsCapture() as capture:
        yield capture


def test_public_names():
    assert set(redline.__all__) >= {
        "configure_telemetry", "shutdown_telemetry", "force_flush", "instrument",
        "uninstrument", "model_call", "agent_session", "tool_call"}


def test_instruments_are_created_once_per_provider(cap):
    first = get_instruments(cap.provider)
    assert get_instruments(cap.provider) is first
    assert get_instruments() is first  # the capture made its provider the default
    assert first[METRICS.REQUESTS] is first.requests
    with MetricsCapture() as other:
        assert get_instruments(other.provider) is not first


def test_model_call_streaming_records_everything(cap):
    with redline.model_call(provider="vllm", model="llama", server_address="gpu-1",
                            server_port=8000, streaming=True) as call:
        assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 1
        time.sleep(0.03)
        for _ in range(5):
            call.chunk()
            time.sleep(0.005)
        call.chunk(content=False)  # a usage-only event: no gap recorded
        call.usage(input_tokens=10, output_tokens=5)
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0
    assert cap.hist_min(METRICS.TIME_TO_FIRST_CHUNK.name) >= 0.03
    assert cap.count(METRICS.TIME_PER_OUTPUT_CHUNK.name) == 1  # the mean of the 4 gaps
    assert cap.hist_min(METRICS.TIME_PER_OUTPUT_CHUNK.name) >= 0.005
    assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="input") == 10
    dp = cap.points(METRICS.OPERATION_DURATION.name)[0]
    assert dict(dp.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "llama", "server.address": "gpu-1", "server.port": 8000,
        "redline.streaming": True}


def test_model_call_error_paths_end_exactly_once(cap):
    with pytest.raises(TimeoutError), redline.model_call(provider="p", model="m"):
        raise TimeoutError
    call = redline.model_call(provider="p", model="m").start()
    call.error("http_503")
    call.end()
    call.end()  # idempotent
    assert cap.sum(METRICS.REQUESTS.name, error_type="TimeoutError") == 1
    assert cap.sum(METRICS.REQUESTS.name, error_type="http_503") == 1
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0


async def test_model_call_async_and_decorators(cap):
    @redline.model_call(provider="p", model="m")
    async def ask() -> str:
        assert redline.current_model_call() is not None
        await asyncio.sleep(0.01)
        return "ok"

    @redline.model_call(provider="p", model="m")
    def ask_sync() -> str:
        return "ok"

    assert await asyncio.gather(ask(), ask(), ask()) == ["ok"] * 3
    assert ask_sync() == "ok"
    async with redline.model_call(provider="p", model="m") as call:
        call.usage(output_tokens=3)
    assert cap.sum(METRICS.REQUESTS.name) == 5
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0
    assert redline.current_model_call() is None


async def test_cancelled_model_call(cap):
    async def slow():
        async with redline.model_call(provider="p", model="m"):
            await asyncio.sleep(10)

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cap.sum(METRICS.REQUESTS.name, error_type="cancelled") == 1
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0


async def test_sessions_and_tools(cap):
    @redline.tool_call("search")
    async def search() -> int:
        assert cap.sum(METRICS.TOOL_CALLS_IN_FLIGHT.name, gen_ai_tool_name="search") == 1
        return 1

    @redline.agent_session("bot")
    def sync_session() -> None:
        assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 1

    async with redline.agent_session("bot"):
        assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name, gen_ai_agent_name="bot") == 1
        await search()
        with pytest.raises(ValueError), redline.tool_call("calc"):
            raise ValueError
    sync_session()
    assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 0
    assert cap.sum(METRICS.TOOL_CALLS_IN_FLIGHT.name) == 0
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 2
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="calc",
                     error_type="ValueError") == 1


async def test_abandoned_generator_is_cancelled_not_failed(cap):
    # A consumer that stops reading closes the generator with GeneratorExit: the caller gave
    # up, so the call ends with error.type "cancelled" (kept out of the error-ratio SLO).
    def chunks():
        with redline.tool_call("t"), redline.model_call(provider="p", model="m",
                                                         streaming=True) as call:
            for i in range(5):
                call.chunk()
                yield i

    async def achunks():
        async with redline.agent_session("a"), redline.model_call(
                provider="p", model="m", streaming=True) as call:
            for i in range(5):
                await asyncio.sleep(0)
                call.chunk()
                yield i

    for _ in chunks():
        break
    gen = achunks()
    async for _ in gen:
        break
    await gen.aclose()
    assert cap.sum(METRICS.REQUESTS.name, error_type="cancelled") == 2
    assert cap.sum(METRICS.REQUESTS.name) == 2
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, error_type="cancelled") == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type="cancelled") == 1
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0


async def test_an_ended_call_is_never_current(cap):
    # An async generator finalized in another task cannot reset the context variable in
    # the consumer's context; the ended call must not be found there afterwards.
    async def achunks():
        async with redline.model_call(provider="p", model="m", streaming=True):
            yield 1
            yield 2

    gen = achunks()
    async for _ in gen:
        break
    await asyncio.create_task(gen.aclose())  # finalized elsewhere, as the loop's hook does
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0
    assert redline.current_model_call() is None


def test_cardinality_folds_models_and_servers(monkeypatch):
    monkeypatch.setenv("REDLINE_MAX_MODELS", "2")
    monkeypatch.setenv("REDLINE_MAX_SERVERS", "1")
    with MetricsCapture() as cap:
        for i in range(5):
            with redline.model_call(provider="p", model=f"m{i}", server_address=f"h{i}",
                                    server_port=1):
                pass
        models = {dict(dp.attributes).get("gen_ai.request.model")
                  for dp in cap.points(METRICS.REQUESTS.name)}
        servers = {dict(dp.attributes).get("server.address")
                   for dp in cap.points(METRICS.REQUESTS.name)}
        assert models == {"m0", "m1", "_OTHER"}
        assert servers == {"h0", "_OTHER"}
        assert cap.sum(METRICS.REQUESTS.name, server_address="_OTHER", server_port=None) == 4


def test_instrument_without_limiter_or_gpu_modules_is_harmless(cap):
    redline.instrument(meter_provider=cap.provider)
    redline.instrument(meter_provider=cap.provider)  # twice: BaseInstrumentor guards it
    redline.uninstrument()
    redline.uninstrument()
