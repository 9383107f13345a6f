"""Client CPU cost of redline's instrumentation, per call and per chunk (prints figures).

Usage::

    .venv/bin/python benchmarks/bench_overhead.py [--calls 300] [--paced-calls 60] [--rounds 3]
        [--modes burst,paced,in-process] [--in-process-calls 1000] [--otel-sdk 1.44.0,...]

What it measures, all in one run, uninstrumented and instrumented calls interleaved in
blocks of 50 so machine noise hits both alike (the median over the blocks of each block's
instrumented-minus-uninstrumented difference is reported, with its interquartile range; each
block starts with 10 untimed calls, see ``measure_mode``):

* **Two server modes.** ``burst``: the sim sends every chunk at once (decode 0.1 ms per
  token) — the cheap baseline that exposes redline's fixed cost per call. ``paced``: chunks
  2 ms apart, as a real server streams them; the client then also pays for waiting.
* **A third mode, ``in-process``**: no server at all; the SDK's HTTP client gets its
  responses (the same 50-chunk / 1-chunk SSE bodies and JSON) from an in-memory transport
  (``httpx.MockTransport``). No socket, no second process competing for the 2 cores: the
  most precise view of redline's fixed cost per call, with more calls per round.
* **Three call shapes** through the real ``openai`` SDK: a streamed call of 50 content
  chunks, a streamed call of 1 chunk (their difference over 49 is the per-chunk slope), and
  a non-streamed call.
* **Where the overhead goes**: a third variant per block records into the API's no-op
  meter provider, so redline's own work (wrappers, proxy, tallies, attribute sets) and the
  OpenTelemetry SDK's recording of the same samples are reported apart; the SDK's floor is
  also shown as the cost of one histogram sample in a tight loop times the samples per call.
* **Scopes**: ``redline.agent_session`` and ``redline.tool_call`` enter+exit, against an
  empty ``contextlib.nullcontext`` as the baseline.
* **Per OpenTelemetry SDK version** (``--otel-sdk 1.44.0,...``): the in-process mode again in
  a venv per version (``.cache/matrix/otel-sdk-<version>``, made by the version matrix's
  builder, reused), with this interpreter's openai, httpx, pydantic and wrapt and redline
  from ``instrumentation/``: the SDK's cost per histogram sample differs by version (1.45
  cleans and hashes every measurement's attributes; 1.44 does not), and with it most of the
  overhead. Those runs are separate processes, one after the other; only the blocks inside
  each run are paired.
* **Memory**: bytes redline holds per open call, with 10,000 concurrent open streamed
  model calls (``redline.model_call(..., streaming=True)`` each past its first chunk, the
  state every instrumented stream carries) measured with ``tracemalloc``, and what remains
  after they all end (it must not grow from one batch to the next).

The sim runs in a child process, so ``time.process_time()`` counts only the client. Metrics
go to an in-memory reader (``MetricsCapture``), i.e. the SDK's aggregation is included and
the export is not (that runs on the SDK's own thread, off the call path).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path

import httpx
import openai
from openai.types.chat import ChatCompletionChunk
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics.export import ExponentialHistogram, Histogram

import redline
from redline._api.testing import MetricsCapture
from redline.instrumentors._operation import Operation
from redline.instrumentors._streams import SyncStream
from redline.instrumentors.openai import on_chat_chunk
from redline.instruments import get_instruments, set_default_meter_provider

ROOT = Path(__file__).resolve().parents[1]
MODES = {"burst": 0.0001, "paced": 0.002}  # sim decode seconds per token
OPEN_CALLS = 10_000
WARM = 10  # untimed calls at the start of every block (measure_mode)


@contextlib.contextmanager
def sim_process(decode_s: float):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline_operator.sim", "--port", str(port), "--slots", "64",
         "--prefill-base-s", "0", "--prefill-per-token-s", "0", "--decode-base-s", str(decode_s),
         "--decode-alpha", "0", "--default-output-tokens", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def _sse(chunks: int) -> bytes:
    def event(choices: list, **extra) -> str:
        return "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk",
                                      "created": 1, "model": "sim-model",
                                      "choices": choices, **extra}) + "\n\n"
    body = [event([{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}])
            for _ in range(chunks)]
    body.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    body.append(event([], usage={"prompt_tokens": 3, "completion_tokens": chunks,
                                 "total_tokens": chunks + 3}))
    return ("".join(body) + "data: [DONE]\n\n").encode()


def in_process_client() -> openai.OpenAI:
    """An OpenAI client whose HTTP client answers from memory (no server, no socket)."""
    # openai 3.x sends through the httpx2 fork (same API), older releases through httpx
    from openai import _base_client

    http = getattr(_base_client, "httpx2", httpx)
    streams = {1: _sse(1), 50: _sse(50)}
    plain = json.dumps({"id": "c", "object": "chat.completion", "created": 1,
                        "model": "sim-model", "choices": [{
                            "index": 0, "message": {"role": "assistant", "content": "x"},
                            "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                  "total_tokens": 4}}).encode()

    def answer(request):
        body = json.loads(request.content)
        if body.get("stream"):
            return http.Response(200, headers={"content-type": "text/event-stream"},
                                 content=streams[body["max_tokens"]])
        return http.Response(200, headers={"content-type": "application/json"}, content=plain)

    return openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="k", max_retries=0,
                         http_client=http.Client(transport=http.MockTransport(answer)))


def cpu_per_call(client: openai.OpenAI, calls: int, shape: str) -> float:
    """Client CPU seconds per call of ``shape`` (``stream50``, ``stream1``, ``plain``)."""
    stream = shape != "plain"
    max_tokens = 1 if shape == "stream1" else 50
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    start = time.process_time()
    for _ in range(calls):
        out = client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hi"}],
            max_tokens=max_tokens, stream=stream, **extra)
        if stream:
            for _ in out:
                pass
    return (time.process_time() - start) / calls


SHAPES = ("stream50", "stream1", "plain")


VARIANTS = ("base", "inst", "noop")


def measure_mode(url: str | None, calls: int, rounds: int, block: int = 50
                 ) -> dict[str, float]:
    """CPU seconds per call of each shape and variant: ``base`` (uninstrumented), ``inst``
    (instrumented, recording into the OpenTelemetry SDK) and ``noop`` (instrumented,
    recording into the API's no-op meter provider: redline's own work without the SDK's).

    ``rounds`` x ``calls`` calls per shape and variant, in blocks of ``block`` calls: the
    three variants run back to back in every block (their order rotated), and a variant's
    overhead is the median over the blocks of its difference to the base *of the same
    block* — paired like this, the drift of a shared machine (frequency, neighbours, a full
    garbage collection) cancels instead of landing on one variant. Each block starts with
    ``WARM`` untimed calls: switching a variant on or off patches or restores the SDK's
    classes, which throws away the interpreter's specialized attribute caches for them, and
    re-specializing costs ~0.5 ms over the next few calls — a cost an app pays once, when it
    is instrumented, that blocks of 50 would otherwise charge as ~10 us to every call. Also
    returns ``spread_<variant>_<shape>``: the interquartile range of those differences.
    """
    client = (in_process_client() if url is None else
              openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0))
    for shape in SHAPES:  # warm up connections, imports and caches
        cpu_per_call(client, 10, shape)
    noop = NoOpMeterProvider()
    per_block: dict[str, list[float]] = {f"{v}_{s}": [] for v in VARIANTS for s in SHAPES}
    blocks = max(1, rounds * calls // block)
    with MetricsCapture() as cap:
        providers = {"inst": cap.provider, "noop": noop}
        for i in range(blocks):
            order = VARIANTS[i % 3:] + VARIANTS[:i % 3]
            for shape in SHAPES:
                for variant in order:
                    provider = providers.get(variant)
                    if provider is not None:
                        set_default_meter_provider(provider)
                        redline.instrument(meter_provider=provider)
                    try:
                        cpu_per_call(client, WARM, shape)  # untimed: see the docstring
                        per_block[f"{variant}_{shape}"].append(
                            cpu_per_call(client, block, shape))
                    finally:
                        if provider is not None:
                            redline.uninstrument()
    set_default_meter_provider(None)
    client.close()
    out: dict[str, float] = {}
    for shape in SHAPES:
        base = per_block[f"base_{shape}"]
        out[f"base_{shape}"] = statistics.median(base)
        for variant in ("inst", "noop"):
            diffs = [x - b for x, b in zip(per_block[f"{variant}_{shape}"], base, strict=True)]
            out[f"{variant}_{shape}"] = out[f"base_{shape}"] + statistics.median(diffs)
            q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [0.0, 0.0, 0.0]
            out[f"spread_{variant}_{shape}"] = q[2] - q[0]
    return out


def sdk_floor(rounds: int) -> tuple[dict[str, float], float]:
    """(histogram samples redline records per call of each shape, CPU seconds the SDK takes
    to record one sample with a call's attributes): the OpenTelemetry SDK's own floor for
    these metrics, which no instrumentation recording them can go under."""
    client = in_process_client()
    per_call = {}
    with MetricsCapture() as cap:
        redline.instrument()
        try:
            for shape in SHAPES:
                before = _histogram_samples(cap)
                cpu_per_call(client, 20, shape)
                per_call[shape] = (_histogram_samples(cap) - before) / 20
        finally:
            redline.uninstrument()
        histogram = get_instruments().operation_duration
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                 "gen_ai.request.model": "sim-model", "server.address": "127.0.0.1",
                 "server.port": 8000, "gen_ai.response.model": "sim-model",
                 "redline.streaming": True}
        costs = []
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(20_000):
                histogram.record(0.5, attrs)
            costs.append((time.process_time() - start) / 20_000)
    client.close()
    return per_call, statistics.median(costs)


def _histogram_samples(cap: MetricsCapture) -> int:
    data = cap.reader.get_metrics_data()
    return sum(p.count for rm in (data.resource_metrics if data else ())
               for sm in rm.scope_metrics for m in sm.metrics
               if isinstance(m.data, (Histogram, ExponentialHistogram))
               for p in m.data.data_points)


def chunk_cost(rounds: int, n: int = 20_000) -> dict[str, float]:
    """CPU seconds per chunk: real ``ChatCompletionChunk`` objects through redline's stream
    proxy (hook included) against the same iterator bare — the per-chunk cost without the
    SDK's SSE parsing and its noise."""
    chunk = ChatCompletionChunk.model_validate(json.loads(_sse(1).split(b"\n\n")[0][6:]))
    chunks = [chunk] * n

    class Source:
        def __init__(self) -> None:
            self.it = iter(chunks)

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.it)

    out: dict[str, list[float]] = {"bare": [], "proxied": []}
    with MetricsCapture():
        for _ in range(rounds):
            start = time.process_time()
            for _ in Source():
                pass
            out["bare"].append((time.process_time() - start) / n)
            call = redline.model_call(provider="openai", model="sim-model", streaming=True)
            call.start()
            stream = SyncStream(Source(), Operation(call, None), on_chat_chunk)
            start = time.process_time()
            for _ in stream:
                pass
            out["proxied"].append((time.process_time() - start) / n)
    return {k: statistics.median(v) for k, v in out.items()}


def scope_cost(n: int, rounds: int) -> dict[str, float]:
    """CPU seconds per enter+exit of each scope, and of an empty context manager."""
    def run(make) -> float:
        start = time.process_time()
        for _ in range(n):
            with make():
                pass
        return (time.process_time() - start) / n

    out: dict[str, list[float]] = {"null": [], "agent_session": [], "tool_call": []}
    for _ in range(rounds):
        out["null"].append(run(contextlib.nullcontext))
        with MetricsCapture():
            out["agent_session"].append(run(lambda: redline.agent_session("bench")))
            out["tool_call"].append(run(lambda: redline.tool_call("search")))
    return {k: statistics.median(v) for k, v in out.items()}


def memory_per_open_call() -> tuple[float, list[int]]:
    """(bytes per open streamed call, bytes still held after each of 3 batches ended)."""
    residual = []
    per_call = 0.0
    with MetricsCapture():
        for _ in range(3):
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            stack = contextlib.ExitStack()
            for _ in range(OPEN_CALLS):
                call = stack.enter_context(redline.model_call(
                    provider="openai", model="sim-model", server_address="127.0.0.1",
                    server_port=8000, streaming=True))
                call.chunk()
                call.chunk()
            opened = tracemalloc.take_snapshot()
            held = sum(s.size_diff for s in opened.compare_to(before, "filename"))
            per_call = held / OPEN_CALLS
            stack.close()
            del call, stack
            gc.collect()
            after = tracemalloc.take_snapshot()
            residual.append(sum(s.size_diff for s in after.compare_to(before, "filename")))
            tracemalloc.stop()
    return per_call, residual


def _us(v: float) -> str:
    us = v * 1e6
    return f"{us:8.2f} us" if abs(us) < 10 else f"{us:8.1f} us"


def _print_mode(m: dict[str, float]) -> None:
    for shape, label in (("stream50", "streamed, 50 chunks"), ("stream1", "streamed, 1 chunk"),
                         ("plain", "non-streamed")):
        base, inst, noop = m[f"base_{shape}"], m[f"inst_{shape}"], m[f"noop_{shape}"]
        pct = 100 * (inst - base) / base
        print(f"  {label:20s}: {base * 1e3:7.3f} ms uninstrumented, overhead "
              f"{_us(inst - base)} ({pct:+.1f} %, IQR {_us(m[f'spread_inst_{shape}'])}); "
              f"redline's own work {_us(noop - base)} (no-op meter provider), the SDK's "
              f"recording {_us(inst - noop)}")
    base_chunk = (m["base_stream50"] - m["base_stream1"]) / 49
    inst_chunk = (m["inst_stream50"] - m["inst_stream1"]) / 49
    noop_chunk = (m["noop_stream50"] - m["noop_stream1"]) / 49
    # the 50-chunk call also records one more histogram sample (the mean gap between chunks),
    # spread over the 49 chunks in the slope; the no-op variant's slope has no SDK work at all
    print(f"  per extra chunk     : {_us(base_chunk)} uninstrumented, {_us(inst_chunk)} "
          f"instrumented, slope overhead {_us(inst_chunk - base_chunk)}; redline's own work "
          f"per chunk (no-op meter provider) {_us(noop_chunk - base_chunk)}")


def _print_floor(m: dict[str, float], rounds: int) -> None:
    per_call, record = sdk_floor(rounds)
    print(f"  the SDK's floor      : one histogram sample with a call's attributes costs "
          f"{_us(record)} in a tight loop; redline records per call")
    for shape in SHAPES:
        floor = per_call[shape] * record
        print(f"    {shape:9s}: {per_call[shape]:.0f} samples = {_us(floor)} in a tight loop, "
              f"{_us(m[f'inst_{shape}'] - m[f'noop_{shape}'])} measured in the calls above")


def sdk_venv(sdk: str) -> Path:
    """A venv with opentelemetry-sdk ``sdk`` and this interpreter's openai/httpx/pydantic/wrapt,
    made (once, reused while its pins are the same) by the version matrix's own builder
    (``tests/matrix/run.py``) under ``.cache/matrix/otel-sdk-<version>``."""
    loader = importlib.util.spec_from_file_location("redline_matrix",
                                                    ROOT / "tests" / "matrix" / "run.py")
    matrix = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(matrix)
    if not matrix.UV.exists():
        raise SystemExit(f"--otel-sdk needs uv at {matrix.UV}: run `make venv` first")
    otel = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc",
            "opentelemetry-exporter-otlp-proto-http")
    pins = [f"{name}=={sdk}" for name in otel] + [
        f"{name}=={version(name)}" for name in ("openai", "httpx", "pydantic", "wrapt")]
    matrix.CACHE.mkdir(parents=True, exist_ok=True)
    return matrix._build(f"otel-sdk-{sdk}", {"pins": pins}, [])


def _versions() -> str:
    return ", ".join(f"{name} {version(name)}" for name in ("openai", "opentelemetry-sdk", "wrapt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per round, burst mode")
    parser.add_argument("--paced-calls", type=int, default=60, help="calls per round, paced")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--in-process-calls", type=int, default=1000,
                        help="calls per round, in-process (no server)")
    parser.add_argument("--modes", default="burst,paced,in-process",
                        help="comma-separated modes to run (burst, paced, in-process)")
    parser.add_argument("--otel-sdk", default="",
                        help="comma-separated opentelemetry-sdk versions to run the in-process "
                             "mode with too, each in its own venv (e.g. 1.44.0)")
    args = parser.parse_args()
    for sdk in filter(None, args.otel_sdk.split(",")):
        venv = sdk_venv(sdk.strip())
        print(f"=== in a venv with opentelemetry-sdk {sdk} ({venv.relative_to(ROOT)})", flush=True)
        subprocess.run([str(venv / "bin/python"), __file__, "--modes", "in-process",
                        "--rounds", str(args.rounds),
                        "--in-process-calls", str(args.in_process_calls)], check=True)
    print(f"=== this interpreter: {_versions()}", flush=True)
    modes = set(args.modes.split(","))
    for mode, decode in (*MODES.items(), ("in-process", None)):
        if mode not in modes:
            continue
        if decode is None:
            m = measure_mode(None, args.in_process_calls, args.rounds)
            print(f"== in-process (no server: responses from memory), {args.rounds} x "
                  f"{args.in_process_calls} calls per variant, median of paired blocks")
        else:
            calls = args.calls if mode == "burst" else args.paced_calls
            with sim_process(decode) as url:
                m = measure_mode(url, calls, args.rounds)
            print(f"== {mode} server (decode {decode * 1e3:g} ms per token), {args.rounds} x "
                  f"{calls} calls per variant, median of paired blocks")
        _print_mode(m)
        if decode is None:
            _print_floor(m, args.rounds)
    c = chunk_cost(args.rounds)
    print(f"== per chunk, stream proxy alone (20,000 real chunks, median of {args.rounds} rounds): "
          f"{_us(c['proxied'])} proxied vs {_us(c['bare'])} bare, overhead "
          f"{_us(c['proxied'] - c['bare'])}")
    s = scope_cost(20_000, args.rounds)
    print("== scopes (enter+exit, CPU)")
    for name in ("agent_session", "tool_call"):
        print(f"  {name:14s}: {_us(s[name])} (empty context manager {_us(s['null'])}, "
              f"overhead {_us(s[name] - s['null'])})")
    per_call, residual = memory_per_open_call()
    print(f"== memory: {OPEN_CALLS:,} open streamed calls hold {per_call:,.0f} bytes each; "
          f"after they end, held: {', '.join(f'{r:,} B' for r in residual)} (3 batches)")


if __name__ == "__main__":
    main()
