"""``redline sweep`` against the real simulator (in its own process) and the real openai SDK.

The simulator runs in a subprocess so that it and the load generator each get a core:
in one process they would share the GIL, and the server's timing would depend on the
client's load. Its timings are short (tens of ms per decode step) but long enough that
the client's own per-request overhead stays a small share of a request's life; the knee
is measured in client-side in-flight requests, which exceed the server's slots by
throughput x that overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redline_operator.cli.main import main as cli_main
from redline_operator.sweep.load import LoadGenerator, StepPlan, TokenDist, Workload
from redline_operator.sweep.runner import run_sweep

_LAUNCH = r"""
import json, sys, uvicorn
from redline_operator.sim import SimConfig, build_app
from redline_operator.sim.server import bind
sock = bind("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(build_app(SimConfig(**json.loads(sys.argv[1]))),
                              log_level="critical", log_config=None, access_log=False,
                              lifespan="on", backlog=2048)).run(sockets=[sock])
"""

#: Output tokens per request in the knee tests: 16 decode steps per request keep the
#: engine's step granularity (a new request waits up to one step for a slot) small.
OUTPUT_TOKENS = 16


@contextlib.contextmanager
def sim_process(**config) -> Iterator[str]:
    """The real simulator in a subprocess; yields its base URL (``.../v1``)."""
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, json.dumps(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sim_timing(slots: int, seed: int) -> dict:
    """Sim settings whose saturated throughput stays near 30-40 req/s for any slot count.

    The base latency grows with the slots so the request rate (and the CPU the test
    needs) stays flat; prefill is kept tiny so the latency curve is flat below the knee.
    """
    base_latency = {8: 0.30, 16: 0.45, 32: 0.80}[slots]
    return dict(slots=slots, seed=seed, decode_base_s=base_latency / OUTPUT_TOKENS,
                decode_alpha=0.0, prefill_base_s=0.0005, prefill_per_token_s=0.0,
                prompt_tokens=8)


def knee_levels(slots: int) -> list[int]:
    """1, 2, 4, then steps of S/4 around the slot count S up to 2S, so +-25% is resolvable."""
    s = slots
    return sorted({1, 2, 4, s // 2, 3 * s // 4, s, 5 * s // 4, 3 * s // 2, 2 * s})


FAST_PLAN = StepPlan(warmup_s=0.0, min_duration_s=0.3, min_requests=6, max_duration_s=15,
                     min_latencies=2.5)


def _sweep(url: str, levels: list[int], seed: int):
    async def go():
        workload = Workload(prompt_tokens=TokenDist(values=(8,)),
                            output_tokens=TokenDist(values=(OUTPUT_TOKENS,)))
        async with LoadGenerator(base_url=url, api_key="test", model="sim-model",
                                 workload=workload, seed=seed) as gen:
            await gen.preflight()
            return await run_sweep(gen, levels, FAST_PLAN, drain_s=0)
    return asyncio.run(go())


def _table(result) -> str:
    return "\n".join(
        f"C={s.concurrency:3d} in-flight={s.mean_in_flight:6.2f} p50={s.latency_p50:.3f} "
        f"p95={s.latency_p95:.3f} rps={s.throughput_rps:5.1f} little={s.little_rel_error:.3f}"
        for s in result.steps) + f"\n{result.analysis.method} {result.analysis.note}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("slots", [8, 16, 32])
def test_knee_within_25_percent_of_slots(slots: int, seed: int) -> None:
    with sim_process(**sim_timing(slots, seed)) as url:
        result = _sweep(url, knee_levels(slots), seed)
    analysis = result.analysis
    print(f"\nslots={slots} seed={seed} knee={analysis.knee} cap={analysis.recommended_cap} "
          f"method={analysis.method.split('(')[1].split(' ')[0]}")
    assert analysis.knee is not None, _table(result)
    assert 0.75 * slots <= analysis.knee <= 1.25 * slots, _table(result)
    assert analysis.recommended_cap is not None and analysis.recommended_cap < analysis.knee
    for step in result.steps:
        # closed loop: the client really held C in flight, and L = lambda W holds
        assert step.mean_in_flight == pytest.approx(step.concurrency, rel=0.05)
        # L and lambda*W differ only by requests straddling the window's edges: at most
        # about one latency's worth over a window a few latencies long
        assert step.little_rel_error < 0.05 + step.latency_mean / step.duration_s, \
            _table(result)
        assert step.success_rate == 1.0 and step.retries == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_fails_before_sweep(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    rc = cli_main(["sweep", "--base-url", url, "--model", "m", "--levels", "1,2",
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"cannot reach {url}" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_rejected_api_key_fails_before_sweep(tmp_path: Path, capsys) -> None:
    with sim_process(slots=4) as url:
        root = url.removesuffix("/v1")
        httpx.post(f"{root}/sim/faults", json=[
            {"kind": "status", "status": 401, "message": "invalid api key"}]).raise_for_status()
        rc = cli_main(["sweep", "--base-url", url, "--model", "m", "--api-key", "bad",
                       "--levels", "1,2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "rejected the API key (HTTP 401)" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_levels_is_a_usage_error(capsys) -> None:
    rc = cli_main(["sweep", "--base-url", "http://127.0.0.1:1/v1", "--model", "m",
                   "--levels", "4,zero"])
    assert rc == 2
    assert "bad --levels" in capsys.readouterr().err


def test_write_threshold_needs_a_known_target(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "redline.yaml"
    cfg.write_text(CONFIG)
    rc = cli_main(["sweep", "--base-url", "http://127.0.0.1:1/v1", "--model", "m",
                   "--config", str(cfg), "--target", "nope", "--write-threshold"])
    assert rc == 2
    assert "no target named 'nope'" in capsys.readouterr().err


CONFIG = """\
# my service
version: 1
targets:
  - name: sim   # the simulator
    match:
      model: sim-model
    saturation_concurrency: 99   # the knee
    warn_fraction: 0.6
pager:
  receivers:
    - type: webhook
      name: p
      url: http://127.0.0.1:9/x
  page_receiver: p
  warn_receiver: p
"""


def _default_sigint() -> None:
    # A suite started in the background (`make test &`, a CI runner without job control)
    # inherits SIGINT ignored, and so would the child: give it the default a terminal gives.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "redline_operator", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kw)


def _sweep_args(url: str, out: Path, levels: str) -> list[str]:
    return ["sweep", "--base-url", url, "--model", "sim-model", "--levels", levels,
            "--output-tokens", "16", "--prompt-tokens", "8", "--warmup", "0",
            "--min-duration", "0.5", "--min-requests", "6", "--out", str(out)]


def test_cli_sweep_writes_threshold_and_reports(tmp_path: Path) -> None:
    cfg = tmp_path / "redline.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    with sim_process(**sim_timing(8, 1)) as url:
        proc = _cli(*_sweep_args(url, out, "1,4,8,10,12,16,24"), "--config", str(cfg),
                    "--target", "sim", "--write-threshold")
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    results = json.loads((out / "results.json").read_text())
    knee = results["saturation_concurrency"]
    assert results["status"] == "complete" and len(results["steps"]) == 7
    # the knee's precision is test_knee_within_25_percent_of_slots' job; this is the plumbing
    assert knee is not None and 4 <= knee <= 24, stdout
    assert results["recommended_cap"] < knee
    assert f"knee (saturation_concurrency): {knee:g}" in stdout
    new_lines, old_lines = cfg.read_text().splitlines(), CONFIG.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert len(changed) == 1, changed  # comments and every other setting kept
    assert re.fullmatch(rf" +saturation_concurrency: {knee:g} +# the knee", changed[0][1])
    csv_lines = (out / "steps.csv").read_text().splitlines()
    assert csv_lines[0].startswith("concurrency,requests,ok,") and len(csv_lines) == 8
    assert (out / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_ctrl_c_stops_at_once_and_saves_finished_steps(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a level of 512 in flight: exit 130 within seconds, step 1 kept.

    The second level cannot finish before the signal: 512 in flight on 8 slots of 0.3 s
    is about 19 s per request, and a step measures at least three latencies.
    """
    out = tmp_path / "out"
    with sim_process(**sim_timing(8, 1)) as url:
        proc = _cli(*_sweep_args(url, out, "1,512"))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                if json.loads((out / "results.json").read_text())["steps"]:
                    break
            time.sleep(0.1)
        time.sleep(3)  # into level 512: its workers are connected and waiting for slots
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        stopped = time.monotonic() - sent
    print(f"\nsweep exit {stopped:.2f}s after SIGINT with 512 in flight")
    assert proc.returncode == 130, stderr
    assert stopped < 5, f"sweep took {stopped:.1f}s to stop"  # about 0.2 s when idle
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert [s["concurrency"] for s in results["steps"]] == [1]
    assert results["steps"][0]["ok"] >= 6
    assert len((out / "steps.csv").read_text().splitlines()) == 2
    assert not (out / "sweep.png").exists()  # drawing it would take seconds
    assert "interrupted; 1 finished step(s) saved" in stderr and "Traceback" not in stderr


# --- redline knee --prometheus: the same method on live data --------------------------

WORKLOAD = Path(__file__).parent / "workloads" / "fixed_concurrency.py"


@pytest.mark.stack
@pytest.mark.slow
def test_live_knee_from_prometheus(stack, tmp_path: Path) -> None:
    """An instrumented app visits concurrency levels in turn; `redline knee` finds the knee.

    Each level is its own process (the real OTLP export path: SDK -> Collector ->
    Prometheus), exporting every second; the knee is read back with query_range.
    """
    import uuid

    from redline_operator.sim import SimConfig, run_in_thread

    service = f"knee-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, OTEL_SERVICE_NAME=service,
               OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_endpoint,
               OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_METRIC_EXPORT_INTERVAL="1000")
    cfg = SimConfig(slots=8, seed=1, decode_base_s=0.03, decode_alpha=0.0,
                    prefill_base_s=0.001, prefill_per_token_s=0.0)
    start = time.time()
    with run_in_thread(cfg, port=0) as sim:
        for level in (1, 2, 4, 6, 8, 10, 12, 16):
            subprocess.run([sys.executable, str(WORKLOAD), sim.url, str(level), "8",
                            str(tmp_path / f"{level}.json")], env=env, check=True, timeout=60)
    time.sleep(3)  # the last export reaches Prometheus
    window = f"{int(time.time() - start) + 5}s"
    proc = subprocess.run(
        [sys.executable, "-m", "redline_operator", "knee", "--prometheus", stack.prometheus_url,
         "--selector", f'job="{service}"', "--window", window, "--step", "1s",
         "--rate-window", "4s", "--min-samples", "3", "--json"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    est = json.loads(proc.stdout)
    assert {1, 2, 4, 8, 16} <= set(est["levels"]), est
    # Live data is thinner than a sweep (8 s per level, 4 s rate windows, levels mixed at
    # each change), so this checks the pipeline and the method, at +-50%.
    assert est["knee"] is not None and 4 <= est["knee"] <= 12, est


def test_retries_are_counted_per_http_attempt() -> None:
    """Scripted 429s: the SDK retries them; the pool's hook sees every attempt."""
    async def go(url: str):
        async with LoadGenerator(base_url=url, api_key="test", model="sim-model",
                                 workload=Workload(output_tokens=TokenDist(values=(2,))),
                                 max_retries=3) as gen:
            await gen.preflight()
            plan = StepPlan(warmup_s=0, min_duration_s=1.0, min_requests=5, min_latencies=0)
            clean = await gen.run_step(1, plan)
            posted = []

            def inject(_done: int, _elapsed: float) -> None:  # once, inside the window
                if not posted:
                    posted.append(asyncio.get_running_loop().run_in_executor(
                        None, lambda: httpx.post(f"{url.removesuffix('/v1')}/sim/faults", json=[
                            {"kind": "status", "status": 429, "retry_after": 0.01,
                             "count": 3}]).raise_for_status()))

            faulty = await gen.run_step(1, plan, progress=inject)
            await posted[0]
            await gen.stop_workers()
            return clean, faulty

    with sim_process(slots=2, decode_base_s=0.005, prefill_base_s=0.001) as url:
        clean, faulty = asyncio.run(go(url))
    # attempts are counted when sent and causes when answered: at concurrency 1 one
    # attempt can straddle a window edge, so the two may differ by exactly that one
    assert clean.retries == 0 and set(clean.attempt_causes) == {"ok"}
    assert abs(clean.attempts - clean.attempt_causes["ok"]) <= 1
    assert faulty.retries == 3 and faulty.attempt_causes["http_429"] == 3
    assert faulty.success_rate == 1.0  # the retries succeeded
    assert faulty.retry_rate == pytest.approx(3 / (faulty.attempts - 3))


def test_server_view_splits_what_no_measured_time_explains_into_its_two_sources():
    from redline_operator.sweep.server_view import StepView

    view = StepView(concurrency=4, start=0.0, end=15.0, client_in_flight=3.9,
                    server_running=2.6, server_waiting=0.2, client_ttft_p95=None,
                    client_ttft_p95_prometheus=None, server_ttft_p95=None,
                    server_ttft_bucket=None, client_throughput_rps=2.0,
                    client_latency_mean_s=2.0, server_engine_time_s=1.5,
                    client_in_flight_records=3.95)
    assert view.in_flight_gap == pytest.approx(1.1)
    assert view.outside_engine_in_flight == pytest.approx(1.0)  # 2/s x (2.0 - 1.5) s
    assert view.client_gauge_error == pytest.approx(-0.05)  # redline vs the client's records
    assert view.server_gauge_error == pytest.approx(0.2)  # 2/s x 1.5 s - (2.6 + 0.2)
    d = view.to_dict()
    assert d["client_gauge_error"] == pytest.approx(-0.05)
    assert d["server_gauge_error"] == pytest.approx(0.2)
    bare = StepView(concurrency=1, start=0.0, end=1.0, client_in_flight=None,
                    server_running=None, server_waiting=None, client_ttft_p95=None,
                    client_ttft_p95_prometheus=None, server_ttft_p95=None,
                    server_ttft_bucket=None)
    assert bare.client_gauge_error is None and bare.server_gauge_error is None
