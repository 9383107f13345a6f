"""The PromQL behind every dashboard panel, kept apart from the panel layout.

Each function returns a :class:`Query`: an expression plus the legend Grafana shows. Metric
names come from :mod:`redline.semconv` (``METRICS.X.prom``) and label names from
:func:`redline.semconv.prom_label`; the few series redline does not emit itself (the
simulated vLLM server, NVIDIA's DCGM exporter and Prometheus' ``ALERTS``) are declared
once in :data:`EXTERNAL_METRICS`.

Queries read raw series, not recording rules, so a dashboard works whether or not the
generated rules are loaded. Latency histograms are native histograms: quantiles come
from ``histogram_quantile`` over ``rate()`` of the histogram itself, counts from
``histogram_count``.

Grafana variables used: ``$job`` (OTel ``service.name``), ``$model``
(``gen_ai.request.model``), ``$target`` (a target name of ``redline.yaml``) and
``$__rate_interval``. Target-scoped queries carry one branch per configured target,
labelled with the target name, and keep only the branch selected by ``$target``; each
branch uses that target's own ``match`` selector, so thresholds and series always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redline.config import Target
from redline.semconv import METRICS, Attr, External, MetricSpec, prom_label
from redline_operator.promql import target_matchers

__all__ = [
    "Query",
    "EXTERNAL_METRICS",
    "VLLM_RUNNING",
    "VLLM_WAITING",
    "VLLM_KV_CACHE_USAGE",
    "VLLM_QUEUE_TIME",
    "VLLM_TTFT",
    "VLLM_ITL",
    "VLLM_PREEMPTIONS",
    "DCGM_GPU_UTIL",
    "DCGM_FB_USED",
    "DCGM_POWER",
    "ALERTS",
    "TARGET_LABEL",
    "GPU_LABEL",
    "RATE",
    "substitute",
]

RATE = "$__rate_interval"
TARGET_LABEL = prom_label(Attr.TARGET)
MODEL_LABEL = prom_label(Attr.REQUEST_MODEL)
CAUSE_LABEL = prom_label(Attr.ATTEMPT_CAUSE)
ERROR_LABEL = prom_label(Attr.ERROR_TYPE)
POOL_LABEL = prom_label(Attr.POOL)
REASON_LABEL = prom_label(Attr.REJECT_REASON)
GPU_LABEL = External.DCGM_GPU_LABEL  # redline's NVML index is relabelled onto it

# Series that redline reads but does not emit.
VLLM_RUNNING = External.VLLM_RUNNING
VLLM_WAITING = External.VLLM_WAITING
VLLM_KV_CACHE_USAGE = External.VLLM_KV_CACHE_USAGE
VLLM_QUEUE_TIME = External.VLLM_QUEUE_TIME
VLLM_TTFT = External.VLLM_TTFT
VLLM_ITL = External.VLLM_ITL
VLLM_PREEMPTIONS = External.VLLM_PREEMPTIONS
DCGM_GPU_UTIL = External.DCGM_GPU_UTIL
DCGM_FB_USED = External.DCGM_FB_USED
DCGM_FB_FREE = External.DCGM_FB_FREE
DCGM_POWER = External.DCGM_POWER
ALERTS = "ALERTS"  # Prometheus' synthetic series of pending and firing alerts
EXTERNAL_METRICS = frozenset({VLLM_RUNNING, VLLM_WAITING, VLLM_KV_CACHE_USAGE,
                              f"{VLLM_QUEUE_TIME}_bucket", f"{VLLM_TTFT}_bucket",
                              f"{VLLM_ITL}_bucket", VLLM_PREEMPTIONS, DCGM_GPU_UTIL,
                              DCGM_FB_USED, DCGM_FB_FREE, DCGM_POWER, ALERTS})

_MIB = 1048576


@dataclass(frozen=True)
class Query:
    """One panel query.

    Attributes:
        expr: The PromQL expression, with Grafana variables left in.
        legend: Grafana legend format (also the field name overrides and XY mappings match).
        instant: Ask Grafana for an instant query instead of a range.
    """

    expr: str
    legend: str
    instant: bool = False


# --- selectors ------------------------------------------------------------------------

def model_selector() -> str:
    """Label matchers for model-call series filtered by the ``$job`` and ``$model`` vars."""
    return f'job=~"$job",{MODEL_LABEL}=~"$model"'


def target_selector(target: Target) -> str:
    """Label matchers of one target's ``match`` (``$job`` applies unless it names one)."""
    exact = target_matchers(target.match)
    return exact if target.match.service else ",".join(p for p in ('job=~"$job"', exact) if p)


def per_target(targets: Sequence[Target], build: Callable[[Target], str]) -> str:
    """One labelled branch per target, keeping the branch the ``$target`` variable names."""
    branches = [f'label_replace({build(t)}, "{TARGET_LABEL}", "{t.name}", "", "")'
                for t in targets]
    keep = f'label_replace(vector(1), "{TARGET_LABEL}", "$target", "", "")'
    return f"({' or '.join(branches)}) and on({TARGET_LABEL}) {keep}"


def _quantile(q: float, spec: MetricSpec, sel: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"histogram_quantile({q}, sum{group}(rate({spec.prom}{{{sel}}}[{RATE}])))"


def _in_flight(sel: str) -> str:
    return f"sum({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}})"


# --- concurrency vs p95 (target-scoped) -----------------------------------------------

def target_concurrency(targets: Sequence[Target]) -> Query:
    """In-flight model calls of the selected target, summed over every process."""
    return Query(per_target(targets, lambda t: _in_flight(target_selector(t))), "in-flight")


def target_p95(targets: Sequence[Target]) -> Query:
    """p95 end-to-end latency of the selected target's model calls."""
    return Query(per_target(targets, lambda t: _quantile(
        0.95, METRICS.OPERATION_DURATION, target_selector(t))), "p95")


def target_level(targets: Sequence[Target], level: str) -> Query:
    """A constant series at the target's ``saturation``, ``page`` or ``warn`` concurrency."""
    attr = {"saturation": "saturation_concurrency", "page": "page_concurrency",
            "warn": "warn_concurrency"}[level]
    return Query(per_target(targets, lambda t: f"vector({getattr(t, attr):g})"), level)


def headroom(target: Target) -> Query:
    """1 - concurrency / saturation for one target (negative past the knee)."""
    return Query(f"1 - {_in_flight(target_selector(target))} / "
                 f"{target.saturation_concurrency:g}", target.name)


# --- latency --------------------------------------------------------------------------

def latency_quantiles(spec: MetricSpec = METRICS.OPERATION_DURATION,
                      qs: Sequence[float] = (0.5, 0.95, 0.99)) -> list[Query]:
    """p50/p95/p99 of a latency histogram over ``$job``/``$model``."""
    return [Query(_quantile(q, spec, model_selector()), f"p{round(q * 100)}") for q in qs]


def latency_p95_by_model(spec: MetricSpec = METRICS.OPERATION_DURATION) -> Query:
    """p95 per model, to tell which model is slow."""
    return Query(_quantile(0.95, spec, model_selector(), by=MODEL_LABEL),
                 f"{{{{{MODEL_LABEL}}}}}")


# --- throughput, errors, retries ------------------------------------------------------

def throughput_by_outcome() -> list[Query]:
    """Finished model calls per second, split into ok and failed."""
    spec, sel = METRICS.REQUESTS, model_selector()
    return [
        Query(f'sum(rate({spec.prom}{{{sel},{ERROR_LABEL}=""}}[{RATE}]))', "ok"),
        Query(f'sum by ({ERROR_LABEL}) (rate({spec.prom}{{{sel},{ERROR_LABEL}!=""}}[{RATE}]))',
              f"error {{{{{ERROR_LABEL}}}}}"),
    ]


def error_ratio() -> Query:
    """Share of finished model calls that failed."""
    spec, sel = METRICS.REQUESTS, model_selector()
    return Query(f'(sum(rate({spec.prom}{{{sel},{ERROR_LABEL}!=""}}[{RATE}])) or vector(0)) / '
                 f"sum(rate({spec.prom}{{{sel}}}[{RATE}]))", "error ratio")


def retries_by_cause() -> Query:
    """Retries per second by the cause of the attempt that preceded them."""
    return Query(f"sum by ({CAUSE_LABEL}) (rate({METRICS.RETRIES.prom}{{{model_selector()}}}"
                 f"[{RATE}]))", f"{{{{{CAUSE_LABEL}}}}}")


def retry_ratio() -> Query:
    """Retries per finished call: above a target's retry_storm_ratio is a retry storm."""
    sel = model_selector()
    return Query(f"(sum(rate({METRICS.RETRIES.prom}{{{sel}}}[{RATE}])) or vector(0)) / "
                 f"sum(rate({METRICS.REQUESTS.prom}{{{sel}}}[{RATE}]))", "retries per call")


# --- Little's law ---------------------------------------------------------------------

def littles_law() -> list[Query]:
    """Measured mean concurrency against throughput x mean latency (L = lambda x W).

    ``histogram_sum(rate(duration))`` is calls/s times mean seconds per call, i.e. the
    concurrency the finished calls imply; it tracks the in-flight gauge unless calls are
    lost (never finished) or the gauge leaks.
    """
    sel = model_selector()
    return [
        Query(f"sum(avg_over_time({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}}[{RATE}]))",
              "measured in-flight (L)"),
        Query(f"sum(histogram_sum(rate({METRICS.OPERATION_DURATION.prom}{{{sel}}}[{RATE}])))",
              "throughput x latency (lambda W)"),
    ]


# --- agents, tools, limiter, server side ----------------------------------------------

def agents_and_tools() -> list[Query]:
    """Open agent sessions and running tool calls."""
    agent, tool = prom_label(Attr.AGENT_NAME), prom_label(Attr.TOOL_NAME)
    return [
        Query(f'sum by ({agent}) ({METRICS.SESSIONS_IN_FLIGHT.prom}{{job=~"$job"}})',
              f"sessions {{{{{agent}}}}}"),
        Query(f'sum by ({tool}) ({METRICS.TOOL_CALLS_IN_FLIGHT.prom}{{job=~"$job"}})',
              f"tool calls {{{{{tool}}}}}"),
    ]


def limiter_occupancy() -> list[Query]:
    """Limiter slots held, the cap and the queue waiting for a slot."""
    by, sel = f"{TARGET_LABEL}, {POOL_LABEL}", 'job=~"$job"'
    legend = f"{{{{{TARGET_LABEL}}}}}/{{{{{POOL_LABEL}}}}}"
    return [
        Query(f"sum by ({by}) ({METRICS.LIMITER_IN_FLIGHT.prom}{{{sel}}})", f"in-flight {legend}"),
        Query(f"max by ({by}) ({METRICS.LIMITER_CAP.prom}{{{sel}}})", f"cap {legend}"),
        Query(f"sum by ({by}) ({METRICS.LIMITER_QUEUE_DEPTH.prom}{{{sel}}})", f"queued {legend}"),
    ]


def limiter_flow() -> list[Query]:
    """Admissions and rejections per second (rejections by reason)."""
    sel = 'job=~"$job"'
    return [
        Query(f"sum(rate({METRICS.LIMITER_ADMISSIONS.prom}{{{sel}}}[{RATE}]))", "admitted"),
        Query(f"sum by ({REASON_LABEL}) (rate({METRICS.LIMITER_REJECTIONS.prom}{{{sel}}}"
              f"[{RATE}]))", f"rejected {{{{{REASON_LABEL}}}}}"),
    ]


# The server's own series (vLLM V1 names; `redline sim` exports the same). vLLM labels
# them with model_name (its --served-model-name), which the $model variable matches.
SERVER_SEL = 'model_name=~"$model"'


def _server_quantile(q: float, histogram: str) -> str:
    """A quantile of one of vLLM's classic histograms (``_bucket`` series, label ``le``)."""
    return (f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{SERVER_SEL}}}"
            f"[{RATE}])))")


def client_vs_server() -> list[Query]:
    """What clients have in flight against what the server runs and queues.

    In a closed loop every call a client holds is in the server's batch or its queue:
    client in-flight = running + waiting. A lasting gap means calls held in front of the
    engine (HTTP server, tokenizer), or clients redline does not see.
    """
    return [
        Query(_in_flight(model_selector()), "client in-flight"),
        Query(f"sum({VLLM_RUNNING}{{{SERVER_SEL}}}) + sum({VLLM_WAITING}{{{SERVER_SEL}}})",
              "server running + waiting"),
        Query(f"sum({VLLM_RUNNING}{{{SERVER_SEL}}})", "server running"),
        Query(f"sum({VLLM_WAITING}{{{SERVER_SEL}}})", "server waiting"),
    ]


def server_kv_cache() -> Query:
    """The server's KV-cache usage, 0..1 (vLLM preempts sequences when it is full)."""
    return Query(f"max by (model_name) ({VLLM_KV_CACHE_USAGE}{{{SERVER_SEL}}})",
                 "server KV cache {{model_name}}")


def server_queue_time() -> list[Query]:
    """Time requests waited in the server's queue (WAITING phase), p50 and p95."""
    return [Query(_server_quantile(q, VLLM_QUEUE_TIME), f"server queue p{round(q * 100)}")
            for q in (0.5, 0.95)]


def client_vs_server_ttft() -> list[Query]:
    """Client TTFT p95 (redline) against the server's own TTFT p95 (vLLM).

    The client's is never lower: it adds the HTTP round trip and SSE framing. A growing
    gap means the API server, not the engine, is where requests wait.
    """
    return [
        Query(_quantile(0.95, METRICS.TIME_TO_FIRST_CHUNK, model_selector()),
              "client TTFT p95"),
        Query(_server_quantile(0.95, VLLM_TTFT), "server TTFT p95"),
    ]


def server_itl_and_preemptions() -> list[Query]:
    """Inter-token latency p95 (one decode step) and preemptions per second."""
    return [
        Query(_server_quantile(0.95, VLLM_ITL), "server inter-token p95"),
        Query(f"sum(rate({VLLM_PREEMPTIONS}{{{SERVER_SEL}}}[{RATE}]))",
              "server preemptions/s"),
    ]


# --- GPU (redline's NVML reader or DCGM exporter) -------------------------------------

def _gpu(spec: MetricSpec, dcgm: str, agg: str = "avg") -> str:
    nvml = (f'label_replace({spec.prom}, "{GPU_LABEL}", "$1", '
            f'"{prom_label(Attr.HW_GPU_INDEX)}", "(.*)")')
    return f"{agg} by ({GPU_LABEL}) ({nvml}) or {agg} by ({GPU_LABEL}) ({dcgm})"


def gpu_utilization() -> Query:
    """GPU busy fraction, 0..1, from NVML (hw.gpu.utilization) or DCGM (percent / 100)."""
    return Query(_gpu(METRICS.GPU_UTILIZATION, f"{DCGM_GPU_UTIL} / 100"),
                 f"GPU {{{{{GPU_LABEL}}}}}")


def gpu_memory() -> list[Query]:
    """GPU memory used and total, bytes (DCGM reports MiB)."""
    return [
        Query(_gpu(METRICS.GPU_MEMORY_USAGE, f"{DCGM_FB_USED} * {_MIB}", "max"),
              f"used GPU {{{{{GPU_LABEL}}}}}"),
        Query(_gpu(METRICS.GPU_MEMORY_LIMIT, f"({DCGM_FB_USED} + {DCGM_FB_FREE}) * {_MIB}", "max"),
              f"total GPU {{{{{GPU_LABEL}}}}}"),
    ]


def gpu_power() -> Query:
    """GPU power draw in watts."""
    return Query(_gpu(METRICS.GPU_POWER, DCGM_POWER, "max"), f"GPU {{{{{GPU_LABEL}}}}}")


# --- alerts ---------------------------------------------------------------------------

def firing_alerts() -> str:
    """The annotation query: redline's firing alerts from Prometheus' ALERTS series."""
    return f'{ALERTS}{{alertstate="firing"}}'


def substitute(expr: str, *, target: str, rate_interval: str = "1m", job: str = ".*",
               model: str = ".*") -> str:
    """An expression with Grafana's variables replaced, to run against Prometheus directly.

    Args:
        expr: A panel expression.
        target: The target name ``$target`` stands for.
        rate_interval: What ``$__rate_interval`` stands for.
        job: Regex for ``$job`` (Grafana's "All" is ``.*``).
        model: Regex for ``$model``.
    """
    return (expr.replace(RATE, rate_interval).replace("$target", target)
            .replace("$job", job).replace("$model", model))
