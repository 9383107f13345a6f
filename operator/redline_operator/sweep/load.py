"""Closed-loop load generator: keeps exactly C streamed chat completions in flight.

One :class:`LoadGenerator` owns one real ``openai.AsyncOpenAI`` client on one shared
connection pool sized for every level of the sweep (at least 512 connections), so the
client never queues a request inside its own pool. Each step starts C workers; a worker
sends a request, waits for its last chunk and sends the next at once, so the server sees
exactly C requests in flight (closed loop) for the whole step.

Latency is measured on the client on a monotonic clock around the streamed call: TTFT is
start -> first content chunk, latency is start -> last chunk. Retries are counted at the
HTTP-attempt level by an event hook on the shared pool: the openai SDK sends every attempt
through it with an ``x-stainless-retry-count`` header, so an attempt whose header is above
zero is a retry.

Example::

    gen = LoadGenerator(base_url="http://127.0.0.1:8000/v1", api_key="k", model="m")
    async with gen:
        await gen.preflight()
        step = await gen.run_step(8, StepPlan(warmup_s=1, min_duration_s=5, min_requests=50))
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

try:  # openai >= 3 talks through httpx2; older releases through httpx.
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

from redline_operator.sweep.stats import StepStats, summarize
from redline_operator.sweep.workload import TokenDist, Workload

__all__ = ["LoadGenerator", "PreflightError", "RequestRecord", "StepPlan", "TokenDist",
           "Workload", "MIN_POOL_CONNECTIONS"]

MIN_POOL_CONNECTIONS = 512
_RETRY_HEADER = "x-stainless-retry-count"


class PreflightError(Exception):
    """The endpoint cannot serve the sweep (unreachable, bad key, unknown model)."""


@dataclass(frozen=True)
class StepPlan:
    """How long one concurrency level runs.

    New workers start spread over ``ramp_s``. The step warms up for at least ``warmup_s``
    (and ``ramp_s``) and until every request sent at the previous level has finished
    (requests finishing then are discarded), then measures until ``min_duration_s``,
    ``min_requests`` completions and ``min_latencies`` times the mean latency are all
    reached, or ``max_duration_s`` passes. A window of several
    latencies keeps the edge effects small (Little's law checks it).
    """

    warmup_s: float = 2.0
    min_duration_s: float = 10.0
    min_requests: int = 50
    max_duration_s: float = 120.0
    min_latencies: float = 3.0
    ramp_s: float = 0.0


@dataclass
class RequestRecord:
    """One request, times in ``time.monotonic()`` seconds."""

    start: float
    end: float = math.nan
    first_chunk: float = math.nan
    ok: bool = False
    error: str | None = None
    output_tokens: int = 0
    done: bool = False


@dataclass
class _Attempts:
    attempts: int = 0
    retries: int = 0
    causes: Counter = field(default_factory=Counter)


class LoadGenerator:
    """A real openai client on one shared pool, driving closed-loop steps.

    Args:
        base_url: the OpenAI-compatible API root, e.g. ``http://host:8000/v1``.
        api_key: bearer key sent with every request.
        model: model name sent with every request.
        workload: the request mix (default: 64-token prompts, 16 output tokens).
        max_connections: pool size; raised to at least :data:`MIN_POOL_CONNECTIONS`.
        max_retries: the SDK's retry budget per request (its default is 2).
        request_timeout: seconds before a request counts as a timeout failure.
        seed: seeds the request mix so every level replays the same sequence.
    """

    def __init__(self, *, base_url: str, api_key: str, model: str,
                 workload: Workload | None = None, max_connections: int = 0,
                 max_retries: int = 2, request_timeout: float = 120.0, seed: int = 0) -> None:
        self.base_url = base_url
        self.model = model
        self.workload = workload or Workload()
        self.seed = seed
        self._attempts = _Attempts()
        self._records: list[RequestRecord] = []
        self._workers: list[tuple[asyncio.Task, asyncio.Event]] = []
        self._retired: list[tuple[asyncio.Task, asyncio.Event]] = []
        size = max(MIN_POOL_CONNECTIONS, max_connections)
        self._http = openai.DefaultAsyncHttpxClient(
            limits=_httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=_httpx.Timeout(request_timeout, connect=10.0),
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key,
                                         max_retries=max_retries, http_client=self._http,
                                         timeout=request_timeout)

    async def __aenter__(self) -> LoadGenerator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.stop_workers(drain_s=0)
        await self.client.close()

    async def _on_request(self, request: _httpx.Request) -> None:
        self._attempts.attempts += 1
        if int(request.headers.get(_RETRY_HEADER, "0") or 0) > 0:
            self._attempts.retries += 1

    async def _on_response(self, response: _httpx.Response) -> None:
        code = response.status_code
        self._attempts.causes["ok" if code < 400 else f"http_{code}"] += 1

    async def preflight(self, timeout: float = 10.0) -> None:
        """Send one short streamed request, without retries, before any load.

        Raises:
            PreflightError: the endpoint is unreachable, rejects the key, does not know
                the model, or answers with an error; the message says what to check.
        """
        client = self.client.with_options(max_retries=0, timeout=timeout)
        try:
            async with client.chat.completions.with_streaming_response.create(
                    model=self.model, messages=[{"role": "user", "content": "ping"}],
                    max_tokens=1, stream=True) as response:
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    raise PreflightError(
                        f"{self.base_url} answered HTTP {response.status_code} with "
                        f"{kind or 'no content type'}, not a stream of chat-completion "
                        "events (text/event-stream): check that --base-url is an "
                        "OpenAI-compatible API root ending in /v1")
                probe = RequestRecord(start=time.monotonic())
                await self._read_stream(response, probe)
            if not probe.ok:
                what = ("reported an error" if probe.error == "stream_error"
                        else "never ended with [DONE]")
                raise PreflightError(
                    f"{self.base_url} answered a test request with a stream that {what}; "
                    "is it an OpenAI-compatible chat-completions server?")
        except openai.AuthenticationError as exc:
            raise PreflightError(f"{self.base_url} rejected the API key (HTTP 401): set "
                                 "--api-key or OPENAI_API_KEY to a key it accepts") from exc
        except openai.PermissionDeniedError as exc:
            raise PreflightError(f"{self.base_url} refused the request (HTTP 403): "
                                 f"{exc.message}") from exc
        except openai.NotFoundError as exc:
            raise PreflightError(f"{self.base_url}: HTTP 404 for model {self.model!r}: check "
                                 "--model and that --base-url ends in /v1") from exc
        except openai.APITimeoutError as exc:
            raise PreflightError(f"{self.base_url} did not answer within {timeout:g} s") from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise PreflightError(f"cannot reach {self.base_url}: {cause}; is the server "
                                 "running and the URL right?") from exc
        except openai.APIStatusError as exc:
            raise PreflightError(f"{self.base_url} answered HTTP {exc.status_code} to a test "
                                 f"request: {exc.message}") from exc
        except ValueError as exc:  # an event that is not JSON
            raise PreflightError(f"{self.base_url} answered a test request with events that "
                                 f"are not chat-completion JSON: {exc}") from exc
        finally:
            self._attempts = _Attempts()

    async def _one(self, rng: random.Random, *, messages: list[dict] | None = None,
                   max_tokens: int | None = None, stream: bool = True) -> RequestRecord:
        """One model call: the workload's next request, or the given ``messages``."""
        if messages is None:
            messages, max_tokens = self.workload.sample(rng)
        rec = RequestRecord(start=time.monotonic())
        self._records.append(rec)
        try:
            # The raw streaming response of the real SDK: its retry loop, auth, headers and
            # error mapping, without building a pydantic model per chunk (that costs about
            # 0.7 ms of CPU per chunk and would make the client the bottleneck).
            if stream:
                async with self.client.chat.completions.with_streaming_response.create(
                        model=self.model, messages=messages, max_tokens=max_tokens,
                        stream=True, stream_options={"include_usage": True}) as response:
                    await self._read_stream(response, rec)
            else:
                raw = await self.client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, max_tokens=max_tokens)
                body = json.loads(raw.http_response.text)
                usage = (body.get("usage") or {}).get("completion_tokens")
                rec.output_tokens = int(usage or 0)
                rec.ok = bool(body.get("choices"))
                if not rec.ok:
                    rec.error = "no_choices"
        except openai.APIStatusError as exc:
            rec.error = f"http_{exc.status_code}"
        except openai.APITimeoutError:
            rec.error = "timeout"
        except (openai.APIConnectionError, _httpx.TransportError):
            rec.error = "connection_error"
        except (openai.OpenAIError, ValueError) as exc:
            rec.error = type(exc).__name__
        finally:
            rec.end = time.monotonic()
            rec.done = True
        return rec

    @staticmethod
    async def _read_stream(response, rec: RequestRecord) -> None:
        """Follow the server-sent events; set TTFT, token count and the outcome."""
        chunks = 0
        usage = None
        async for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                rec.ok = True  # read on to the end so the connection goes back to the pool
                continue
            event = json.loads(data)
            if event.get("error"):
                rec.error = "stream_error"
                return
            choices = event.get("choices")
            if choices and (choices[0].get("delta") or {}).get("content"):
                if chunks == 0:
                    rec.first_chunk = time.monotonic()
                chunks += 1
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens")
        if not rec.ok:
            rec.error = "incomplete_stream"  # the stream ended without [DONE]
        rec.output_tokens = usage if usage is not None else chunks

    async def _worker(self, rng: random.Random, stop: asyncio.Event, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        while not stop.is_set():
            await self._one(rng)

    def _resize(self, concurrency: int, ramp_s: float = 0.0) -> None:
        """Start or retire workers so exactly ``concurrency`` loop; retirees finish first.

        New workers start spread evenly over ``ramp_s``: started at once against a server
        that steps every sequence in lockstep, they would finish, and send their next
        requests, all in the same instant forever after.
        """
        new = concurrency - len(self._workers)
        for i in range(max(new, 0)):
            rng = random.Random(hash((self.seed, len(self._workers))))
            stop = asyncio.Event()
            task = asyncio.create_task(self._worker(rng, stop, ramp_s * i / new))
            self._workers.append((task, stop))
        while len(self._workers) > concurrency:
            task, stop = self._workers.pop()
            stop.set()
            self._retired.append((task, stop))

    async def stop_workers(self, drain_s: float = 10.0) -> None:
        """Stop every worker: requests in flight get ``drain_s`` to finish, then are cancelled."""
        workers, self._workers, self._retired = self._workers + self._retired, [], []
        for _, stop in workers:
            stop.set()
        tasks = [t for t, _ in workers]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=drain_s) if drain_s > 0 else ((), tasks)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_step(self, concurrency: int, plan: StepPlan,
                       progress: Callable[[int, float], None] | None = None) -> StepStats:
        """Hold ``concurrency`` requests in flight and measure one step.

        Workers keep running after the step, so the next (higher) level starts from a
        loaded server instead of an empty one; :meth:`stop_workers` ends them.

        Args:
            concurrency: requests kept in flight (C).
            plan: warm-up and measurement lengths.
            progress: called about 10 times a second with (completions measured so far,
                seconds measured so far).

        Returns:
            The step's statistics over its measurement window.
        """
        try:
            t_start = time.monotonic()
            self._begin_step()
            self._resize(concurrency, plan.ramp_s)
            await self._warm_up(t_start, plan)
            t0 = time.monotonic()
            attempts0 = (self._attempts.attempts, self._attempts.retries)
            causes0 = Counter(self._attempts.causes)
            while True:
                await self._sleep_or_fail(0.1)
                now = time.monotonic()
                done = [r.end - r.start for r in self._records if r.done and r.end >= t0]
                if progress:
                    progress(len(done), now - t0)
                if now - t0 >= plan.max_duration_s:
                    break
                if (now - t0 >= plan.min_duration_s and len(done) >= plan.min_requests
                        and now - t0 >= self._min_window_s(plan, done)):
                    break
            t1 = time.monotonic()
            records = list(self._records)
        except BaseException:  # Ctrl-C, cancellation or a bug: stop at once
            await self.stop_workers(drain_s=0)
            raise
        return self._summarize(concurrency, records, t0, t1,
                         attempts=self._attempts.attempts - attempts0[0],
                         retries=self._attempts.retries - attempts0[1],
                         attempt_causes=dict(self._attempts.causes - causes0),
                         warmup_s=t0 - t_start)

    def _begin_step(self) -> None:
        """Forget what finished before this step (what is still in flight is kept)."""
        self._records = [r for r in self._records if not r.done]

    def _min_window_s(self, plan: StepPlan, done: list[float]) -> float:
        """The shortest measurement window: several mean latencies of what a worker does."""
        return plan.min_latencies * sum(done) / len(done)

    def _summarize(self, concurrency: int, records: list[RequestRecord], t0: float, t1: float,
                   **kw) -> StepStats:
        return summarize(concurrency, records, t0, t1, **kw)

    async def _warm_up(self, t_start: float, plan: StepPlan) -> None:
        """Wait ``warmup_s``, and until no request started before this level is in flight.

        From then on every request in flight was sent at this level, so none of the
        measured ones straddles the change of level; with a closed loop that takes about
        one latency, however long the latency is.
        """
        while True:
            await self._sleep_or_fail(0.05)
            now = time.monotonic()
            if now - t_start >= plan.max_duration_s:
                return
            if now - t_start >= max(plan.warmup_s, plan.ramp_s) and all(
                    r.start >= t_start for r in self._records if not r.done):
                return

    async def _sleep_or_fail(self, seconds: float) -> None:
        """Sleep, but surface a worker's unexpected exception (a bug, not a failed request)."""
        await asyncio.sleep(seconds)
        for w, _ in self._workers:
            if w.done() and not w.cancelled() and w.exception() is not None:
                raise w.exception()  # type: ignore[misc]
