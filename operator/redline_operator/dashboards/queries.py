"""The PromQL behind every dashboard panel, kept apart from the panel layout.

Each function returns a :class:`Query`: an expression plus the legend Grafana shows. Metric
names come from :mod:`redline.semconv` (``METRICS.X.prom``) and label names from
:func:`redline.semconv.prom_label`; the few series redline does not emit itself (the
simulated vLLM server, NVIDIA's DCGM exporter and Prometheus' ``ALERTS``) are declared
once in :data:`EXTERNAL_METRICS`.

Panels that carry a threshold or SLO line show what the alert compares with it: the
recording rules of :mod:`redline_operator.alerts.queries` (``redline:target_*``, 1m/5m
windows, label ``target``), so a line crosses its threshold exactly when the alert's
condition holds. Finer views (raw series over ``$__rate_interval``, about 20 s on
redline's 5 s scrape) are labelled "raw" in their legend. Latency histograms work native
or classic: quantiles come from ``histogram_quantile`` over the native histogram ``or``
over the classic ``_bucket`` series (a process that exported explicit buckets), counts and
sums likewise (:func:`redline_operator.promql.histogram_quantile`, ``histogram_rate``).

Grafana variables used: ``$job`` (OTel ``service.name``), ``$model``
(``gen_ai.request.model``), ``$target`` (a target name of ``redline.yaml``),
``$server_job`` (the inference server's scrape job) and ``$__rate_interval``.
Raw target-scoped queries carry one branch per configured target, labelled with the
target name, and keep only the branch selected by ``$target``; each branch uses that
target's own ``match`` selector, so thresholds and series always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redline.config import Target
from redline.semconv import CANCELLED, METRICS, Attr, External, MetricSpec, prom_label
from redline_operator import promql
from redline_operator.alerts import queries as rules
from redline_operator.promql import DEFAULT_FRESH_WINDOW, fresh, target_matchers

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
    return "(" + promql.histogram_quantile(q, spec.prom, sel, RATE, by) + ")"


def _in_flight(sel: str, window: str, by: str = "") -> str:
    """In-flight model calls of live processes only (``window``: ``fresh_window``)."""
    group = f" by ({by})" if by else ""
    return f"sum{group}({fresh(f'{METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}}', window)})"


def recorded(name: str, target: str = "$target") -> str:
    """A recording rule's series for one target: what the target's alerts evaluate."""
    return f'{name}{{target="{target}"}}'


RAW = "raw"  # the word legends of finer, non-alerted views carry


# --- concurrency vs p95 (target-scoped) -----------------------------------------------

def target_concurrency(legend: str = "in-flight") -> Query:
    """In-flight model calls of the selected target, as RedlineConcurrency* evaluates them."""
    return Query(recorded(rules.CONCURRENCY), legend)


def target_concurrency_by_instance(targets: Sequence[Target],
                                   window: str = DEFAULT_FRESH_WINDOW) -> Query:
    """In-flight model calls of the selected target per process (``service.instance.id``
    is the ``instance`` label): which replica is hot. A killed replica leaves the panel
    within ``window``."""
    return Query(per_target(targets, lambda t: _in_flight(target_selector(t), window,
                                                          by="job, instance")),
                 "{{job}} {{instance}}")


def target_p95(legend: str = "p95") -> Query:
    """p95 latency of the selected target over 1m, as RedlineLatencyOverSLO evaluates it."""
    return Query(recorded(rules.LATENCY_P95), legend)


def target_p95_where_in_flight(legend: str) -> Query:
    """The recorded p95 at the instants the recorded concurrency exists too: a knee mark's
    y values, so that each vertical mark spans exactly the p95 values of the (concurrency,
    p95) cloud (the 1m p95 outlives the fresh concurrency by up to a minute after the
    workload stops)."""
    return Query(f"{recorded(rules.LATENCY_P95)} and on (target) "
                 f"{recorded(rules.CONCURRENCY)}", legend)


def target_concurrency_raw(targets: Sequence[Target],
                           window: str = DEFAULT_FRESH_WINDOW) -> Query:
    """In-flight calls of the selected target from raw series (works without the rules),
    live processes only (see :func:`redline_operator.promql.fresh`)."""
    return Query(per_target(targets, lambda t: _in_flight(target_selector(t), window)),
                 f"in-flight ({RAW})")


def target_p95_raw(targets: Sequence[Target]) -> Query:
    """The same p95 over ``$__rate_interval`` from raw series: finer, never alerted on."""
    return Query(per_target(targets, lambda t: _quantile(
        0.95, METRICS.OPERATION_DURATION, target_selector(t))), f"p95 ({RAW}, finer)")


def target_constant(targets: Sequence[Target], value: Callable[[Target], float],
                    legend: str) -> Query:
    """A constant series at a per-target value (threshold, SLO) of the selected target."""
    return Query(per_target(targets, lambda t: f"vector({value(t):g})"), legend)


LEVELS = {"saturation": lambda t: t.saturation_concurrency,
          "page": lambda t: t.page_concurrency, "warn": lambda t: t.warn_concurrency}


def target_level(targets: Sequence[Target], level: str, legend: str | None = None) -> Query:
    """A constant series at the target's ``saturation``, ``page`` or ``warn`` concurrency."""
    return target_constant(targets, LEVELS[level], legend or level)


def headroom(target: Target) -> Query:
    """1 - concurrency / saturation for one target (negative past the knee), an instant
    query on the recorded concurrency the alerts evaluate."""
    return Query(f"1 - {recorded(rules.CONCURRENCY, target.name)} / "
                 f"{target.saturation_concurrency:g}", target.name, instant=True)


def target_ttft_p95(legend: str) -> Query:
    """p95 TTFT of the selected target over 1m, as RedlineTTFTOverSLO evaluates it."""
    return Query(recorded(rules.TTFT_P95), legend)


def target_error_ratio(window: str, legend: str) -> Query:
    """Error ratio of the selected target over ``window``, as the burn-rate alerts see it."""
    return Query(recorded(rules.ERROR_RATIO.format(window=window)), legend)


def target_retry_ratio(legend: str) -> Query:
    """Retries per finished call over 5m, as RedlineRetryStorm evaluates it."""
    return Query(recorded(rules.RETRY_RATIO), legend)


# --- latency --------------------------------------------------------------------------

def latency_quantiles(spec: MetricSpec = METRICS.OPERATION_DURATION,
                      qs: Sequence[float] = (0.5, 0.95, 0.99), suffix: str = "") -> list[Query]:
    """p50/p95/p99 of a latency histogram over ``$job``/``$model``."""
    return [Query(_quantile(q, spec, model_selector()), f"p{round(q * 100)}{suffix}")
            for q in qs]


def latency_p95_by_model(spec: MetricSpec = METRICS.OPERATION_DURATION) -> Query:
    """p95 per model, to tell which model is slow."""
    return Query(_quantile(0.95, spec, model_selector(), by=MODEL_LABEL),
                 f"{{{{{MODEL_LABEL}}}}}")


# --- throughput, errors, retries ------------------------------------------------------

def throughput_by_outcome() -> list[Query]:
    """Finished model calls per second: ok, failed (by error type), and cancelled by the
    caller beside them (``error.type="cancelled"``, not a failure)."""
    spec, sel = METRICS.REQUESTS, model_selector()
    failed = f'{ERROR_LABEL}!="",{ERROR_LABEL}!="{CANCELLED}"'
    return [
        Query(f'sum(rate({spec.prom}{{{sel},{ERROR_LABEL}=""}}[{RATE}]))', "ok"),
        Query(f"sum by ({ERROR_LABEL}) (rate({spec.prom}{{{sel},{failed}}}[{RATE}]))",
              f"error {{{{{ERROR_LABEL}}}}}"),
        Query(f'sum(rate({spec.prom}{{{sel},{ERROR_LABEL}="{CANCELLED}"}}[{RATE}]))',
              "cancelled"),
    ]


def error_ratio(legend: str = "error ratio") -> Query:
    """Share of finished model calls that failed; calls the caller cancelled count on
    neither side (the SLO's definition, as in the burn-rate rules)."""
    spec, sel = METRICS.REQUESTS, model_selector()
    failed = f'{ERROR_LABEL}!="",{ERROR_LABEL}!="{CANCELLED}"'
    return Query(f"(sum(rate({spec.prom}{{{sel},{failed}}}[{RATE}])) or vector(0)) / "
                 f'sum(rate({spec.prom}{{{sel},{ERROR_LABEL}!="{CANCELLED}"}}[{RATE}]))',
                 legend)


def retries_by_cause(suffix: str = "") -> Query:
    """Retries per second by the cause of the attempt that preceded them."""
    return Query(f"sum by ({CAUSE_LABEL}) (rate({METRICS.RETRIES.prom}{{{model_selector()}}}"
                 f"[{RATE}]))", f"{{{{{CAUSE_LABEL}}}}}{suffix}")


def retry_ratio(legend: str = "retries per call") -> Query:
    """Retries per finished call: above a target's retry_storm_ratio is a retry storm."""
    sel = model_selector()
    return Query(f"(sum(rate({METRICS.RETRIES.prom}{{{sel}}}[{RATE}])) or vector(0)) / "
                 f"sum(rate({METRICS.REQUESTS.prom}{{{sel}}}[{RATE}]))", legend)


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
        Query(promql.histogram_rate(METRICS.OPERATION_DURATION.prom, sel, RATE, "sum"),
              "throughput x latency (lambda W)"),
    ]


# --- agents, tools, limiter, server side ----------------------------------------------

def agent_concurrency_split() -> list[Query]:
    """Share of each agent's session time in model calls, tool calls and neither."""
    from redline_operator import agents_promql as ap

    return [Query(ap.share("$job", "$__rate_interval"),
                  f"{{{{{ap.AGENT}}}}} {{{{{ap.ACTIVITY}}}}}"),
            Query(ap.think_share("$job", "$__rate_interval"), f"{{{{{ap.AGENT}}}}} neither")]


def agent_littles_law() -> list[Query]:
    """Little's-law check per pool: measured mean in flight / (rate x mean duration)."""
    from redline_operator import agents_promql as ap

    return [Query(ap.littles_law(pool, "$job", "$__rate_interval"), pool) for pool in ap.POOLS]


def agents_and_tools(window: str = DEFAULT_FRESH_WINDOW) -> list[Query]:
    """Open agent sessions and running tool calls, of live processes only."""
    agent, tool = prom_label(Attr.AGENT_NAME), prom_label(Attr.TOOL_NAME)
    sessions = fresh(f'{METRICS.SESSIONS_IN_FLIGHT.prom}{{job=~"$job"}}', window)
    tools = fresh(f'{METRICS.TOOL_CALLS_IN_FLIGHT.prom}{{job=~"$job"}}', window)
    return [
        Query(f"sum by ({agent}) ({sessions})", f"sessions {{{{{agent}}}}}"),
        Query(f"sum by ({tool}) ({tools})", f"tool calls {{{{{tool}}}}}"),
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


SERVER_SELECTOR = 'job=~"$server_job"'  # the server's scrape job, not the client's model name
SERVER_SEL = SERVER_SELECTOR  # vLLM V1 series (`redline sim` exports the same names)


def _server_quantile(q: float, histogram: str) -> str:
    """A quantile of one of vLLM's classic histograms (``_bucket`` series, label ``le``)."""
    return (f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{{SERVER_SEL}}}"
            f"[{RATE}])))")


def server_kv_cache() -> Query:
    """The server's KV-cache usage, 0..1 (vLLM preempts sequences when it is full)."""
    return Query(f"max by (job) ({VLLM_KV_CACHE_USAGE}{{{SERVER_SEL}}})",
                 "server KV cache {{job}}")


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


def client_vs_server(window: str = DEFAULT_FRESH_WINDOW) -> list[Query]:
    """What clients have in flight against what the server runs and queues.

    The server side is selected by its scrape job (``$server_job``): vLLM's
    ``model_name`` is the *served* model, which need not equal the model name clients
    request, so filtering it by ``$model`` would hide the server. In a closed loop every
    call a client holds is in the server's batch or its queue: client in-flight = running +
    waiting; a lasting gap means calls held in front of the engine (HTTP server, tokenizer).
    """
    return [
        Query(_in_flight(model_selector(), window), "client in-flight"),
        Query(f"sum({VLLM_RUNNING}{{{SERVER_SEL}}}) + sum({VLLM_WAITING}{{{SERVER_SEL}}})",
              "server running + waiting"),
        Query(f"sum({VLLM_RUNNING}{{{SERVER_SEL}}})", "server running"),
        Query(f"sum({VLLM_WAITING}{{{SERVER_SEL}}})", "server waiting"),
    ]


# --- GPU (redline's NVML reader or DCGM exporter) -------------------------------------

GPU_BY = f"instance, {GPU_LABEL}"  # GPU 0 of two hosts are two GPUs (as in the GPU alert)
GPU_LEGEND = f"{{{{instance}}}} GPU {{{{{GPU_LABEL}}}}}"


def _gpu(spec: MetricSpec, dcgm: str, agg: str = "avg") -> str:
    nvml = (f'label_replace({spec.prom}, "{GPU_LABEL}", "$1", '
            f'"{prom_label(Attr.HW_GPU_INDEX)}", "(.*)")')
    return f"{agg} by ({GPU_BY}) ({nvml}) or {agg} by ({GPU_BY}) ({dcgm})"


def gpu_utilization() -> Query:
    """GPU busy fraction, 0..1, from NVML (hw.gpu.utilization) or DCGM (percent / 100)."""
    return Query(_gpu(METRICS.GPU_UTILIZATION, f"{DCGM_GPU_UTIL} / 100"), GPU_LEGEND)


def gpu_memory() -> list[Query]:
    """GPU memory used and total, bytes (DCGM reports MiB)."""
    return [
        Query(_gpu(METRICS.GPU_MEMORY_USAGE, f"{DCGM_FB_USED} * {_MIB}", "max"),
              f"used {GPU_LEGEND}"),
        Query(_gpu(METRICS.GPU_MEMORY_LIMIT, f"({DCGM_FB_USED} + {DCGM_FB_FREE}) * {_MIB}", "max"),
              f"total {GPU_LEGEND}"),
    ]


def gpu_power() -> Query:
    """GPU power draw in watts."""
    return Query(_gpu(METRICS.GPU_POWER, DCGM_POWER, "max"), GPU_LEGEND)


# --- alerts ---------------------------------------------------------------------------

ALERT_TAG_KEYS = "alertname,severity,target"  # labels every generated alert's ALERTS carries


def firing_alerts(severity: str) -> str:
    """The annotation query: the selected target's firing alerts of one severity, from
    Prometheus' ALERTS series (labels: alertname, alertstate, severity, target)."""
    return f'{ALERTS}{{alertstate="firing",severity="{severity}",target="$target"}}'


def substitute(expr: str, *, target: str, rate_interval: str = "1m", job: str = ".*",
               model: str = ".*", server_job: str = ".*") -> str:
    """An expression with Grafana's variables replaced, to run against Prometheus directly.

    Args:
        expr: A panel expression.
        target: The target name ``$target`` stands for.
        rate_interval: What ``$__rate_interval`` stands for.
        job: Regex for ``$job`` (Grafana's "All" is ``.*``).
        model: Regex for ``$model``.
    """
    return (expr.replace(RATE, rate_interval).replace("$target", target)
            .replace("$server_job", server_job).replace("$job", job).replace("$model", model))


# --- capacity plan: per replica (`redline plan`, targets[].planning) ------------------
# A replica is one process reporting the target's series (``instance``).

def _per_instance(sel: str) -> str:
    return _in_flight(sel, DEFAULT_FRESH_WINDOW, by="instance")


def plan_concurrency_per_replica(targets: Sequence[Target]) -> list[Query]:
    """In-flight model calls of each replica of the selected target, and its target."""
    return [
        # no alert compares one replica with the target (the fleet forecast uses the rate)
        Query(per_target(targets, lambda t: _per_instance(target_selector(t))),
              f"{{{{instance}}}} ({RAW})"),
        Query(per_target(targets, lambda t: f"vector({t.concurrency_target})"),
              "concurrency target"),
    ]


def plan_replicas(targets: Sequence[Target]) -> list[Query]:
    """Replicas reporting against replicas needed now (live rate / throughput per replica)
    and the plan's bounds, for the targets with a written plan."""
    out = [Query(per_target(targets, lambda t: f"count({_per_instance(target_selector(t))})"),
                 f"replicas reporting ({RAW})")]
    planned = [t for t in targets if t.planning.throughput_per_replica_rps]
    if planned:
        out.append(Query(per_target(planned, lambda t: (
            f"ceil(sum(rate({METRICS.REQUESTS.prom}{{{target_selector(t)}}}[{RATE}])) / "
            f"{t.planning.throughput_per_replica_rps:g})")), f"replicas needed ({RAW})"))
    for key in ("min_replicas", "max_replicas"):
        bounded = [t for t in targets if getattr(t.planning, key)]
        if bounded:
            out.append(Query(per_target(
                bounded, lambda t, k=key: f"vector({getattr(t.planning, k)})"), key))
    return out
