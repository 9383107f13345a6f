"""Each sweep step as Prometheus saw it, client side against server side.

With ``redline sweep --instrument --prometheus URL`` the sweep's own client is
instrumented by redline (its in-flight gauge and TTFT histogram travel OTLP -> Collector
-> Prometheus) and the server's ``/metrics`` is scraped by the same Prometheus (vLLM or
``redline sim``). After the sweep, for every step's measurement window, this module reads
back:

* client in-flight (``redline_client_requests_in_flight``, time-averaged) against the
  server's ``vllm:num_requests_running + vllm:num_requests_waiting`` (time-averaged): in
  a closed loop they must agree, every request the client holds is either in the batch or
  queued; a gap means requests stuck in front of the engine (HTTP server, tokenizer) or
  a second client;
* the part of that gap that is not a defect: a call the client holds is outside the
  engine's batch and queue while the API server tokenizes it, detokenizes and frames its
  output, and the client reads it. By Little's law that part is ``throughput x (client
  mean latency - engine time)``, with the engine time from vLLM's own per-request
  histograms (``vllm:request_queue_time_seconds`` + ``vllm:request_inference_time_seconds``:
  the WAITING and RUNNING phases the two gauges count). What is left
  (``unaccounted_in_flight``) is the real disagreement: calls the client counts that no
  measured time explains. On a 2-core machine where the API server competes with the engine
  for CPU the raw gap reached 1.2 at the knee while the unaccounted part stayed small.
  Its two sources are reported apart: ``client_gauge_error`` (redline's gauge in Prometheus
  against the time average of the calls the client's own records held: redline's error)
  and ``server_gauge_error`` (the engine's gauges, a few 2 s scrapes of values that change
  every engine step, against Little's law on its own histograms: sampling);
* client TTFT p95 against the server's ``vllm:time_to_first_token_seconds`` p95: the
  client's includes the HTTP round trip, detokenisation and the SSE framing, so it is
  never below the server's; the gap is that overhead, and it grows when the API server
  process, not the engine, is the bottleneck. The sweep reads its streams raw (parsing a
  pydantic model per chunk would make the client the bottleneck), where redline's
  instrumentation sees the end of the body but not the first chunk, so the client's TTFT
  p95 is the sweep's own measurement (monotonic clock, every request of the window);
  ``client_ttft_p95_prometheus`` is filled when the client's TTFT histogram exists.

The server's p95 is interpolated inside a classic bucket (vLLM's defaults are coarse:
0.1, 0.25, 0.5, 0.75, 1 s...), so the bucket holding it is reported too.

Example::

    with PrometheusClient(url) as prom:
        view = read_step_view(prom, start, end, client_sel='job="redline-sweep"',
                              server_sel='model_name="redline-vllm"')
    print(view.client_in_flight, view.server_in_flight, view.ttft_gap_s)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from redline.semconv import METRICS, External
from redline_operator.promql import PrometheusClient, histogram_rate, in_flight, quantile

__all__ = ["StepView", "read_step_view", "server_ttft_p95", "SERVER_TTFT"]

SERVER_TTFT = External.VLLM_TTFT


@dataclass
class StepView:
    """One step's client and server numbers from Prometheus (None: no data)."""

    concurrency: int
    start: float
    end: float
    client_in_flight: float | None
    server_running: float | None
    server_waiting: float | None
    client_ttft_p95: float | None
    client_ttft_p95_prometheus: float | None
    server_ttft_p95: float | None
    server_ttft_bucket: tuple[float, float] | None
    client_throughput_rps: float | None = None
    client_latency_mean_s: float | None = None
    server_engine_time_s: float | None = None  # mean queue + inference time per request
    client_in_flight_records: float | None = None  # the client's own time average, exact

    @property
    def server_in_flight(self) -> float | None:
        if self.server_running is None or self.server_waiting is None:
            return None
        return self.server_running + self.server_waiting

    @property
    def in_flight_gap(self) -> float | None:
        if self.client_in_flight is None or self.server_in_flight is None:
            return None
        return self.client_in_flight - self.server_in_flight

    @property
    def outside_engine_in_flight(self) -> float | None:
        """Calls the client holds outside the engine's batch and queue, by Little's law:
        throughput x (client mean latency - the engine's mean queue + inference time)."""
        if None in (self.client_throughput_rps, self.client_latency_mean_s,
                    self.server_engine_time_s):
            return None
        return self.client_throughput_rps * (self.client_latency_mean_s
                                             - self.server_engine_time_s)

    @property
    def unaccounted_in_flight(self) -> float | None:
        """The client - server gap that no measured time outside the engine explains.

        Its two sources are reported apart: :attr:`client_gauge_error` (redline) and
        :attr:`server_gauge_error` (the engine's gauges as sampled)."""
        if self.in_flight_gap is None or self.outside_engine_in_flight is None:
            return None
        return self.in_flight_gap - self.outside_engine_in_flight

    @property
    def client_gauge_error(self) -> float | None:
        """redline's in-flight gauge as Prometheus averaged it, minus the time average of
        the calls the client itself held in the window (from its own records): what
        redline got wrong."""
        if self.client_in_flight is None or self.client_in_flight_records is None:
            return None
        return self.client_in_flight - self.client_in_flight_records

    @property
    def server_gauge_error(self) -> float | None:
        """Little's law on the engine's own histograms (throughput x mean queue + inference
        time) minus its running + waiting gauges as scraped: how far a few point samples
        of a gauge that changes every engine step are from its time average."""
        if None in (self.server_in_flight, self.client_throughput_rps,
                    self.server_engine_time_s):
            return None
        return self.client_throughput_rps * self.server_engine_time_s - self.server_in_flight

    @property
    def ttft_gap_s(self) -> float | None:
        if self.client_ttft_p95 is None or self.server_ttft_p95 is None:
            return None
        return self.client_ttft_p95 - self.server_ttft_p95

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(server_in_flight=self.server_in_flight, in_flight_gap=self.in_flight_gap,
                 outside_engine_in_flight=self.outside_engine_in_flight,
                 unaccounted_in_flight=self.unaccounted_in_flight,
                 client_gauge_error=self.client_gauge_error,
                 server_gauge_error=self.server_gauge_error,
                 ttft_gap_s=self.ttft_gap_s)
        return d


def _avg(expr: str, window: str) -> str:
    return f"avg_over_time(({expr})[{window}:1s])"


def server_ttft_p95(prom: PrometheusClient, window: str, at: float, server_sel: str
                    ) -> tuple[float | None, tuple[float, float] | None]:
    """The server's TTFT p95 over ``window`` ending at ``at``, and the bucket it lies in."""
    bucket_rate = f"sum by (le) (rate({SERVER_TTFT}_bucket{{{server_sel}}}[{window}]))"
    p95 = prom.scalar(f"histogram_quantile(0.95, {bucket_rate})", at)
    if p95 is None or math.isnan(p95):
        return None, None
    rows = sorted((float(s.labels["le"]), s.value) for s in prom.query(bucket_rate, at))
    total = rows[-1][1] if rows else 0.0
    lower = 0.0
    for le, count in rows:
        if total and count >= 0.95 * total:
            return p95, (lower, le)
        lower = le
    return p95, None


def read_step_view(prom: PrometheusClient, start: float, end: float, *, concurrency: int,
                   client_sel: str, server_sel: str, client_ttft_p95: float | None = None,
                   client_throughput_rps: float | None = None,
                   client_latency_mean_s: float | None = None,
                   client_in_flight_records: float | None = None) -> StepView:
    """Read one step's window [start, end] (Unix seconds) back from Prometheus.

    ``rate()`` needs two scrapes of the server inside the window: keep steps at least two
    scrape intervals long (10 s with the native stack's 5 s).
    """
    window = f"{max(2, int(end - start))}s"

    def scalar(expr: str) -> float | None:
        v = prom.scalar(expr, end)
        return None if v is None or math.isnan(v) else v

    def mean(histogram: str) -> float | None:
        return scalar(f"{histogram_rate(histogram, server_sel, window, 'sum')} / "
                      f"{histogram_rate(histogram, server_sel, window)}")

    queue, inference = mean(External.VLLM_QUEUE_TIME), mean(External.VLLM_INFERENCE_TIME)
    p95, bucket = server_ttft_p95(prom, window, end, server_sel)
    return StepView(
        concurrency=concurrency, start=start, end=end,
        client_in_flight=scalar(_avg(in_flight(client_sel), window)),
        server_running=scalar(_avg(f"sum({External.VLLM_RUNNING}{{{server_sel}}})", window)),
        server_waiting=scalar(_avg(f"sum({External.VLLM_WAITING}{{{server_sel}}})", window)),
        client_ttft_p95=client_ttft_p95,
        client_ttft_p95_prometheus=scalar(quantile(0.95, METRICS.TIME_TO_FIRST_CHUNK, window,
                                                   client_sel)),
        server_ttft_p95=p95, server_ttft_bucket=bucket,
        client_throughput_rps=client_throughput_rps, client_latency_mean_s=client_latency_mean_s,
        client_in_flight_records=client_in_flight_records,
        server_engine_time_s=None if queue is None or inference is None else queue + inference)
