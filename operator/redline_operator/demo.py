"""``redline demo``: push a simulated LLM server past its knee and watch it in Prometheus.

The demo is an ordinary instrumented app: agent sessions that call a model through the
real ``openai`` SDK (auto-instrumented by :func:`redline.instrument`) and run a tool in
between. It ramps the number of agents from 1 to about twice the sim's slots and, after
each step, reads the numbers back from Prometheus — never from its own memory — so what
it prints is what a dashboard or an alert would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from redline.config import Target
from redline.semconv import METRICS
from redline_operator import promql

__all__ = ["DemoSettings", "StepResult", "run_demo", "ramp_levels", "agent_step", "start_sim"]

AGENT_NAME = "demo-agent"
TOOL_NAME = "lookup"


@dataclass
class DemoSettings:
    """Knobs of one demo run (defaults: a warm run well under 3 minutes)."""

    slots: int = 16
    model: str = "sim-model"
    sim_port: int = 8000
    step_seconds: float = 12.0
    warmup_seconds: float = 2.0
    max_tokens: int = 24
    tool_seconds: float = 0.01
    export_interval_ms: int = 1000
    levels: list[int] = field(default_factory=list)


@dataclass
class StepResult:
    agents: int
    requests: int
    in_flight: float | None
    p95_latency: float | None
    p95_ttft: float | None
    retries_per_s: float | None
    throughput: float | None


def ramp_levels(slots: int) -> list[int]:
    """1, 2, 4, … up to about twice the slots, with extra points around the knee."""
    levels = {1, 2, 4}
    c = 4
    while c < 2 * slots:
        c *= 2
        levels.add(c)
    for frac in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        levels.add(max(1, round(slots * frac)))
    return sorted(level for level in levels if level <= 2 * slots)


@contextlib.contextmanager
def start_sim(settings: DemoSettings, log_path: Path) -> Iterator[str]:
    """Run ``redline sim`` as a child process (its own GIL, like a real server)."""
    url = f"http://127.0.0.1:{settings.sim_port}"
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"{url}/v1/models", timeout=0.5)
        raise RuntimeError(f"port {settings.sim_port} already answers HTTP: stop what runs "
                           "there or pass --sim-port")
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline_operator", "sim", "--port", str(settings.sim_port),
         "--slots", str(settings.slots), "--model", settings.model],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redline sim exited with {proc.returncode}; see {log_path}")
            try:
                httpx.get(f"{url}/v1/models", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redline sim not ready after 20 s; see {log_path}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class AgentPool:
    """Concurrent agent loops whose number can change without draining the others.

    The demo ramps by adding agents to a pool that keeps running: a gap with no load
    between steps would reset every pending alert's ``for`` clock.
    """

    def __init__(self, client, settings: DemoSettings) -> None:
        self.client = client
        self.settings = settings
        self.calls = 0
        self._agents: list[tuple[asyncio.Task, asyncio.Event]] = []

    def __len__(self) -> int:
        return len(self._agents)

    async def resize(self, n: int) -> None:
        while len(self._agents) < n:
            stop = asyncio.Event()
            self._agents.append((asyncio.create_task(self._agent(stop)), stop))
        retired = self._agents[n:]
        del self._agents[n:]
        for _, stop in retired:
            stop.set()
        await asyncio.gather(*(task for task, _ in retired))

    async def close(self) -> None:
        await self.resize(0)

    async def _agent(self, stop: asyncio.Event) -> None:
        import redline

        settings = self.settings
        while not stop.is_set():
            async with redline.agent_session(AGENT_NAME):
                stream = await self.client.chat.completions.create(
                    model=settings.model,
                    messages=[{"role": "user", "content": "Summarise the incident timeline."}],
                    max_tokens=settings.max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async for _ in stream:
                    pass
                self.calls += 1
                async with redline.tool_call(TOOL_NAME):
                    await asyncio.sleep(settings.tool_seconds)


async def agent_step(client, settings: DemoSettings, agents: int, seconds: float) -> int:
    """Hold ``agents`` concurrent agent loops for ``seconds``; returns model calls made."""
    pool = AgentPool(client, settings)
    await pool.resize(agents)
    await asyncio.sleep(seconds)
    await pool.close()
    return pool.calls


def read_step(prom: promql.PrometheusClient, sel: str, start: float, end: float) -> dict:
    """The step's numbers as Prometheus reports them over [start, end]."""
    window = f"{max(2, int(end - start))}s"
    return {
        "in_flight": prom.scalar(f"avg_over_time({promql.in_flight(sel)}[{window}:500ms])", end),
        "p95_latency": prom.scalar(
            promql.quantile(0.95, METRICS.OPERATION_DURATION, window, sel), end),
        "p95_ttft": prom.scalar(
            promql.quantile(0.95, METRICS.TIME_TO_FIRST_CHUNK, window, sel), end),
        "retries_per_s": prom.scalar(promql.retries_per_second(window, sel), end) or 0.0,
        "throughput": prom.scalar(promql.rate(METRICS.OPERATION_DURATION, window, sel), end),
    }


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def step_table(rows: list[StepResult], target: Target) -> Table:
    table = Table(title=f"redline demo — target {target.name!r}, knee configured at "
                        f"{target.saturation_concurrency:g} in flight")
    for col in ("agents", "calls", "in flight", "p95 lat", "p95 TTFT", "req/s",
                "retry/s", "headroom"):
        table.add_column(col, justify="right")
    for r in rows:
        headroom = None if r.in_flight is None else 1 - r.in_flight / target.saturation_concurrency
        style = ("red" if headroom is not None and r.in_flight >= target.page_concurrency
                 else "yellow" if headroom is not None and r.in_flight >= target.warn_concurrency
                 else "")
        table.add_row(str(r.agents), str(r.requests), _fmt(r.in_flight, "", 1),
                      _fmt(r.p95_latency, " s"), _fmt(r.p95_ttft, " s", 3),
                      _fmt(r.throughput, "", 1), _fmt(r.retries_per_s),
                      _fmt(None if headroom is None else headroom * 100, " %", 0), style=style)
    return table


async def run_steps(url: str, prom: promql.PrometheusClient, settings: DemoSettings,
                    target: Target, console: Console) -> list[StepResult]:
    import openai
    from rich.live import Live

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="demo-not-a-secret",
                                max_retries=2)
    # only this app's series: a killed process leaves its last in-flight value in
    # Prometheus until the 5-minute lookback expires
    sel = promql.selector(job=os.environ["OTEL_SERVICE_NAME"],
                          gen_ai_request_model=settings.model)
    rows: list[StepResult] = []
    levels = settings.levels or ramp_levels(settings.slots)
    pool = AgentPool(client, settings)
    try:
        with Live(step_table(rows, target), console=console, refresh_per_second=2) as live:
            for agents in levels:
                await pool.resize(agents)
                await asyncio.sleep(settings.warmup_seconds)
                start, calls0 = time.time(), pool.calls
                await asyncio.sleep(settings.step_seconds)
                end, calls = time.time(), pool.calls - calls0
                # the load keeps running while the step's last export lands
                await asyncio.sleep(settings.export_interval_ms / 1000 + 1.0)
                rows.append(StepResult(agents=agents, requests=calls,
                                       **read_step(prom, sel, start, end)))
                live.update(step_table(rows, target))
    finally:
        await pool.close()
        await client.close()
    return rows


def summarise(rows: list[StepResult], target: Target, prom: promql.PrometheusClient,
              pages: list[dict], window: str, console: Console) -> None:
    """The knee as Prometheus saw it (same Kneedle method as `redline sweep`), alerts, pages."""
    from redline_operator.sweep.knee import find_knee

    measured = [r for r in rows if r.in_flight is not None and r.p95_latency is not None]
    knee = find_knee([r.in_flight for r in measured], [r.p95_latency for r in measured])
    if knee is None:
        console.print("p95 latency never turned upward: the ramp did not reach the knee.")
    else:
        console.print(f"Knee (Kneedle on p95 vs in-flight, from Prometheus): about "
                      f"{knee:.1f} in flight; redline.yaml says "
                      f"{target.saturation_concurrency:g} (warn {target.warn_concurrency:g}, "
                      f"page {target.page_concurrency:g}).")
    fired = prom.query(f'max by (alertname, severity) (max_over_time('
                       f'ALERTS{{alertstate="firing",target="{target.name}"}}[{window}]))')
    names = sorted(f"{f.labels['alertname']} ({f.labels.get('severity', '?')})" for f in fired)
    console.print(f"Alerts that fired during the demo: {', '.join(names) or 'none'}")
    paged = sorted({a["labels"].get("alertname", "?") for p in pages
                    for a in p["payload"].get("alerts", [])
                    if a.get("labels", {}).get("severity") == "page"})
    console.print(f"Pages received by the local pager during the demo: "
                  f"{', '.join(paged) or 'none'}")


def print_plan(target: Target, prom: promql.PrometheusClient, settings: DemoSettings,
               seconds: float, console: Console) -> None:
    """The capacity plan for the sim from what Prometheus saw during the demo.

    Throughput per replica at the concurrency target is read from the demo's own steps (the
    sim is one replica); baseline and peak are the median and maximum request rate of the
    ramp. The same code as ``redline plan --prometheus``.
    """
    from redline_operator.plan import (
        PlanError,
        TrafficInput,
        build_plan,
        throughput_from_prometheus,
        traffic_from_prometheus,
    )
    from redline_operator.plan.render import plan_table

    sel = promql.selector(job=os.environ["OTEL_SERVICE_NAME"],
                          gen_ai_request_model=settings.model)
    window = f"{int(seconds) + 1}s"
    try:
        measured = throughput_from_prometheus(prom, sel, target.concurrency_target,
                                              window_s=seconds, step_s=1, rate_window="4s")
        traffic = traffic_from_prometheus(prom, sel, window=window, rate_window="10s",
                                          resolution="1s")
        plan = build_plan(target, measured, TrafficInput(
            baseline_rps=traffic.baseline_rps, peak_rps=traffic.peak_rps,
            source="this demo's ramp: median and max of the 10s request rate"))
    except PlanError as exc:
        console.print(f"No capacity plan: {exc}")
        return
    console.print()
    console.print(plan_table(plan, now_hint=False))
    console.print(f"Capacity plan for the sim ({settings.slots} slots per replica): "
                  + plan.sentence()[0].lower() + plan.sentence()[1:])


def _next_steps(console: Console) -> None:
    console.print(
        "\nNext: `redline top` for a live terminal view; `redline sweep` to measure the knee "
        "of your own endpoint;\nwith Docker: `docker compose -f compose/docker-compose.yml up -d` "
        "and Grafana on http://127.0.0.1:3000 (dashboard 'redline / saturation').")


def run_demo(settings: DemoSettings, target: Target, cache: Path, prometheus_url: str,
             console: Console | None = None,
             pages: Callable[[], list[dict]] = list) -> list[StepResult]:
    """Start the sim, drive the ramp, print the table; the stack must already be up."""
    import redline

    console = console or Console()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OTEL_SERVICE_NAME", "redline-demo")
    redline.configure_telemetry(export_interval_ms=settings.export_interval_ms)
    redline.instrument()
    try:
        with start_sim(settings, cache / "sim.log") as url, \
                promql.PrometheusClient(prometheus_url) as prom:
            console.print(f"sim: {settings.slots} slots at {url}; Prometheus: {prometheus_url}")
            seen, began = len(pages()), time.time()
            rows = asyncio.run(run_steps(url, prom, settings, target, console))
            # give a page that is due its evaluation and group_wait before reporting
            time.sleep(5)
            window = f"{int(time.time() - began) + 1}s"
            summarise(rows, target, prom, pages()[seen:], window, console)
            print_plan(target, prom, settings, time.time() - began, console)
            _next_steps(console)
            return rows
    finally:
        redline.uninstrument()
        redline.shutdown_telemetry()
