"""Client CPU cost of redline's instrumentation on a streamed chat call (prints figures).

Usage::

    .venv/bin/python benchmarks/bench_overhead.py [--calls 200] [--rounds 5]

The sim runs in a child process so ``time.process_time()`` counts only the client: the
real ``openai`` SDK streaming 50 chunks (and 1 chunk, to get the cost per extra chunk).
Uninstrumented and instrumented rounds alternate in the same run so machine noise hits
both alike; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import time

import httpx
import openai

import redline
from redline._api.testing import MetricsCapture


@contextlib.contextmanager
def sim_process(tokens: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline_operator.sim", "--port", str(port), "--slots", "64",
         "--prefill-base-s", "0", "--prefill-per-token-s", "0", "--decode-base-s", "0.0001",
         "--decode-alpha", "0", "--default-output-tokens", str(tokens)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def cpu_per_call(client: openai.OpenAI, calls: int, max_tokens: int) -> float:
    """Client CPU seconds per streamed call of ``max_tokens`` content chunks."""
    start = time.process_time()
    for _ in range(calls):
        stream = client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hi"}],
            max_tokens=max_tokens, stream=True, stream_options={"include_usage": True})
        for _ in stream:
            pass
    return (time.process_time() - start) / calls


def measure(url: str, calls: int, rounds: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    cpu_per_call(client, 20, 50)  # warm up connections and imports
    samples: dict[str, list[float]] = {k: [] for k in ("base50", "inst50", "base1", "inst1")}
    for _ in range(rounds):
        samples["base50"].append(cpu_per_call(client, calls, 50))
        samples["base1"].append(cpu_per_call(client, calls, 1))
        with MetricsCapture():
            redline.instrument()
            try:
                samples["inst50"].append(cpu_per_call(client, calls, 50))
                samples["inst1"].append(cpu_per_call(client, calls, 1))
            finally:
                redline.uninstrument()
    client.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()
    with sim_process(tokens=50) as url:
        m = measure(url, args.calls, args.rounds)
    per_call = m["inst50"] - m["base50"]
    base_chunk = (m["base50"] - m["base1"]) / 49
    inst_chunk = (m["inst50"] - m["inst1"]) / 49
    print(f"uninstrumented, 50-chunk call : {m['base50'] * 1e3:8.3f} ms CPU")
    print(f"instrumented,   50-chunk call : {m['inst50'] * 1e3:8.3f} ms CPU")
    print(f"overhead per call             : {per_call * 1e6:8.1f} us "
          f"({100 * per_call / m['base50']:.2f} % of the uninstrumented call)")
    print(f"uninstrumented, 1-chunk call  : {m['base1'] * 1e3:8.3f} ms CPU")
    print(f"instrumented,   1-chunk call  : {m['inst1'] * 1e3:8.3f} ms CPU")
    print(f"per extra chunk               : {base_chunk * 1e6:8.1f} us uninstrumented, "
          f"{inst_chunk * 1e6:.1f} us instrumented (+{(inst_chunk - base_chunk) * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
