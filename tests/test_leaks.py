"""No state leaks: 10,000 concurrent calls ending every possible way leave every gauge at 0.

The sim runs in its own process (its own GIL, like a real server) with random 500s, 429s,
slow requests and cut streams; the client mixes streamed and non-streamed calls, early
breaks, ``close()``, abandoned-and-collected streams, exceptions in the consumer loop,
client timeouts and asyncio cancellation, across openai and anthropic.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest

import redline
from redline._api.testing import MetricsCapture
from redline.semconv import METRICS

CALLS = int(__import__("os").environ.get("REDLINE_LEAK_CALLS", "10000"))
CONCURRENCY = 96
ENDINGS = ("full", "non_stream", "break_gc", "close", "consumer_error", "cancel", "timeout")


@pytest.fixture(scope="module")
def sim_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "redline_operator.sim", "--port", str(port), "--slots", "512",
           "--prefill-base-s", "0.001", "--prefill-per-token-s", "0", "--decode-base-s", "0.0005",
           "--default-output-tokens", "2", "--error-rate", "0.03", "--rate-limit-rate", "0.03",
           "--queue-full-retry-after-s", "0.01", "--slow-rate", "0.01", "--slow-delay-s", "0.2",
           "--drop-rate", "0.03",
           "--seed", "7"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("the sim subprocess did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class AppError(Exception):
    """An exception raised by the app's own loop body."""


async def _openai_call(client, ending: str, rng: random.Random) -> None:
    if ending == "non_stream":
        await client.chat.completions.create(model="sim-model", messages=[{"role": "user",
                                             "content": "x"}], max_tokens=4)
        return
    stream = await client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "x"}], max_tokens=2,
        stream=True, stream_options={"include_usage": rng.random() < 0.5})
    if ending in ("full", "timeout", "cancel"):
        async for _ in stream:
            pass
    elif ending == "break_gc":
        async for _ in stream:
            break
        del stream  # abandoned: finalized by garbage collection
    elif ending == "close":
        async for _ in stream:
            break
        await stream.close()
    elif ending == "consumer_error":
        async for _ in stream:
            raise AppError


async def _anthropic_call(client, ending: str, rng: random.Random) -> None:
    msgs = [{"role": "user", "content": "x"}]
    if ending == "non_stream":
        await client.messages.create(model="sim-model", max_tokens=4, messages=msgs)
        return
    async with client.messages.stream(model="sim-model", max_tokens=4, messages=msgs) as s:
        if ending == "consumer_error":
            async for _ in s:
                raise AppError
        if ending in ("break_gc", "close"):
            async for _ in s:
                break
            return
        await s.until_done()


async def _one(i: int, clients: dict, rng: random.Random) -> None:
    ending = rng.choice(ENDINGS)
    which = "anthropic" if i % 5 == 0 else "openai"
    client = clients[(which, ending == "timeout")]
    call = _anthropic_call if which == "anthropic" else _openai_call
    work = call(client, ending, rng)
    if rng.random() < 0.3:
        async def in_session(inner=work):
            async with redline.agent_session("leak-agent"), redline.tool_call("leak-tool"):
                await inner
        work = in_session()
    task = asyncio.ensure_future(work)
    if ending == "cancel":
        await asyncio.sleep(rng.uniform(0, 0.004))
        task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await task


async def _drive(url: str) -> None:
    rng = random.Random(1234)
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    clients = {
        ("openai", False): openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=1,
                                              http_client=openai.DefaultAsyncHttpxClient(
                                                  limits=limits)),
        ("openai", True): openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0,
                                             timeout=0.1),
        ("anthropic", False): anthropic.AsyncAnthropic(base_url=url, api_key="k",
                                                       max_retries=1),
        ("anthropic", True): anthropic.AsyncAnthropic(base_url=url, api_key="k",
                                                      max_retries=0, timeout=0.1),
    }
    sem = asyncio.Semaphore(CONCURRENCY)

    async def bounded(i: int) -> None:
        async with sem:
            await _one(i, clients, rng)

    await asyncio.gather(*(bounded(i) for i in range(CALLS)))
    for c in clients.values():
        await c.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ten_thousand_mixed_endings_leave_every_gauge_at_zero(sim_url):
    with MetricsCapture(instrument=True) as cap:
        started = time.monotonic()
        asyncio.run(_drive(sim_url))
        gc.collect()
        elapsed = time.monotonic() - started
        in_flight = cap.points(METRICS.REQUESTS_IN_FLIGHT.name)
        assert in_flight and all(dp.value == 0 for dp in in_flight), \
            [(dict(dp.attributes), dp.value) for dp in in_flight if dp.value]
        assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 0
        assert cap.sum(METRICS.TOOL_CALLS_IN_FLIGHT.name) == 0
        # every call that started ended exactly once
        finished = cap.sum(METRICS.REQUESTS.name)
        durations = cap.count(METRICS.OPERATION_DURATION.name)
        assert finished == durations
        assert CALLS * 0.9 <= finished <= CALLS  # a call cancelled before it began never starts
        errors = {dict(dp.attributes).get("error.type") for dp in cap.points(METRICS.REQUESTS.name)}
        assert {"cancelled", "InternalServerError", "RateLimitError"} <= errors
        causes = {dict(dp.attributes)["redline.attempt.cause"]
                  for dp in cap.points(METRICS.ATTEMPTS.name)}
        assert {"ok", "http_500", "http_429", "timeout"} <= causes
        assert cap.sum(METRICS.INSTRUMENTATION_ERRORS.name) == 0
        print(f"{CALLS} calls in {elapsed:.1f} s; errors seen: {sorted(e for e in errors if e)}")


def test_no_prompt_text_or_key_in_any_attribute(sim_url):
    secret_prompt, secret_key = "SECRET-PROMPT-TEXT-42", "sk-SECRET-KEY-42"

    async def calls() -> None:
        async with openai.AsyncOpenAI(base_url=f"{sim_url}/v1", api_key=secret_key,
                                      max_retries=0) as client:
            for stream in (False, True):
                with contextlib.suppress(openai.APIError):
                    r = await client.chat.completions.create(
                        model="sim-model", messages=[{"role": "user", "content": secret_prompt}],
                        max_tokens=4, stream=stream)
                    if stream:
                        async for _ in r:
                            pass
        async with anthropic.AsyncAnthropic(base_url=sim_url, api_key=secret_key,
                                            max_retries=0) as client:
            with contextlib.suppress(anthropic.APIError):
                await client.messages.create(model="sim-model", max_tokens=4, messages=[
                    {"role": "user", "content": secret_prompt}])

    with MetricsCapture(instrument=True) as cap:
        asyncio.run(calls())
        data = cap.reader.get_metrics_data()
        blob = repr(data.to_json())
        assert "sim-model" in blob
        assert "SECRET" not in blob
