"""A real instrumented app for end-to-end tests: hold C concurrent streamed chat calls.

Run as its own process (``python fixed_concurrency.py URL C SECONDS OUT.json``) so its
telemetry setup is exactly a user's: ``redline.configure_telemetry()`` from the
``OTEL_*`` environment and ``redline.instrument()``. It writes what the client itself
measured — every call's duration and time to first chunk on a monotonic clock — for the
test to compare with what Prometheus reports.
"""

import asyncio
import json
import sys
import time

import openai

import redline


async def worker(client, stop_at: float, records: list) -> None:
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        first = None
        stream = await client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hello"}],
            max_tokens=12, stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - t0
        records.append({"duration": time.monotonic() - t0, "ttft": first})


async def main(url: str, concurrency: int, seconds: float) -> list:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0)
    records: list = []
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(worker(client, stop_at, records) for _ in range(concurrency)))
    await client.close()
    return records


if __name__ == "__main__":
    url, conc, secs, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    redline.configure_telemetry()
    redline.instrument()
    records = asyncio.run(main(url, conc, secs))
    redline.shutdown_telemetry()  # flushes the last export before we report
    with open(out, "w") as f:
        json.dump(records, f)
