"""How much load can ``redline sweep``'s load generator hold, and how exact is its TTFT?

Prints figures; it is not a timed test. Two measurements against the real simulator,
each in its own process (so client and server do not share a GIL):

1. **512 concurrent streams.** A sim with 1024 slots (never the bottleneck by design:
   no queueing, no batch slowdown) and long requests; the generator holds C=512 in flight
   closed-loop. Reported: achieved mean in-flight, throughput, latency against the
   configured ideal, Little's-law error, and the CPU each process used, which says where
   the bottleneck is.
2. **TTFT at concurrency 1** against the configured prefill time (an idle engine admits
   a request at once, so the configured TTFT is exactly ``prefill_s``).

Usage::

    .venv/bin/python benchmarks/bench_loadgen.py [--streams 512] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from redline_operator.sweep.load import LoadGenerator, StepPlan, TokenDist, Workload

_LAUNCH = r"""
import json, sys, uvicorn
from redline_operator.sim import SimConfig, build_app
from redline_operator.sim.server import bind
sock = bind("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(build_app(SimConfig(**json.loads(sys.argv[1]))),
                              log_level="critical", log_config=None, access_log=False,
                              lifespan="on", backlog=4096)).run(sockets=[sock])
"""


class Sim:
    """The simulator in a subprocess."""

    def __init__(self, config: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, json.dumps(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Sim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _step(url: str, concurrency: int, plan: StepPlan, output_tokens: int):
    workload = Workload(prompt_tokens=TokenDist(values=(8,)),
                        output_tokens=TokenDist(values=(output_tokens,)))
    async with LoadGenerator(base_url=url, api_key="bench", model="sim-model",
                             workload=workload, max_connections=2 * concurrency) as gen:
        await gen.preflight()
        return await gen.run_step(concurrency, plan)


def bench_streams(streams: int, seconds: float) -> None:
    tokens, decode_s = 20, 0.5
    ideal = tokens * decode_s
    cfg = dict(slots=2 * streams, queue_limit=4 * streams, decode_base_s=decode_s,
               decode_alpha=0.0, prefill_base_s=0.001, prefill_per_token_s=0.0,
               prompt_tokens=8)
    with Sim(cfg) as sim:
        # workers start spread over one latency, as a steady state would have them
        plan = StepPlan(warmup_s=ideal + 2, ramp_s=ideal, min_duration_s=seconds,
                        min_requests=1, max_duration_s=seconds * 4, min_latencies=2.0)
        c0, s0, t0 = _self_cpu(), sim.cpu_seconds(), time.monotonic()
        st = asyncio.run(_step(sim.url, streams, plan, tokens))
        wall = time.monotonic() - t0
        client_cpu, server_cpu = _self_cpu() - c0, sim.cpu_seconds() - s0
    print(f"## {streams} concurrent streams (sim: {2 * streams} slots, {tokens} tokens x "
          f"{decode_s * 1000:.0f} ms, ideal latency {ideal:.2f} s)")
    print(f"  achieved mean in-flight : {st.mean_in_flight:.1f} of {streams}")
    print(f"  requests measured       : {st.requests} ok={st.ok} in {st.duration_s:.1f} s "
          f"window ({st.throughput_rps:.1f} req/s, {st.tokens_per_s:.0f} tok/s)")
    print(f"  latency p50/p95/p99     : {st.latency_p50:.3f} / {st.latency_p95:.3f} / "
          f"{st.latency_p99:.3f} s (ideal {ideal:.3f}; p50 +{st.latency_p50 / ideal - 1:.1%})")
    print(f"  TTFT p50/p95            : {st.ttft_p50 * 1000:.1f} / {st.ttft_p95 * 1000:.1f} ms")
    print(f"  Little's law            : L={st.mean_in_flight:.1f} vs lambda*W="
          f"{st.little_expected_in_flight:.1f} (error {st.little_rel_error:.1%})")
    print(f"  CPU over {wall:.0f} s wall     : client {client_cpu / wall:.0%} of a core, "
          f"sim {server_cpu / wall:.0%} of a core (machine: {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.1f})")


def bench_ttft(prefill_s: float, requests: int) -> None:
    cfg = dict(slots=4, decode_base_s=0.01, decode_alpha=0.0, prefill_base_s=prefill_s,
               prefill_per_token_s=0.0, prompt_tokens=8)
    with Sim(cfg) as sim:
        plan = StepPlan(warmup_s=0.5, min_duration_s=0.0, min_requests=requests,
                        max_duration_s=120, min_latencies=0.0)
        st = asyncio.run(_step(sim.url, 1, plan, 4))
    err = st.ttft_p50 / prefill_s - 1
    print(f"  configured {prefill_s * 1000:6.1f} ms: TTFT p50 "
          f"{st.ttft_p50 * 1000:6.1f} ms, p95 {st.ttft_p95 * 1000:6.1f} ms over {st.ok} "
          f"requests -> error {err:+.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ttft-requests", type=int, default=30)
    args = ap.parse_args()
    bench_streams(args.streams, args.seconds)
    print("## TTFT at concurrency 1 (client side, start -> first content chunk)")
    for prefill in (0.2, 0.05, 0.02):
        bench_ttft(prefill, args.ttft_requests)


if __name__ == "__main__":
    main()
