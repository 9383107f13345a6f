"""Every metric redline emits, declared once.

Instrumentation, dashboards, alert rules, the demo and the tests import the names from
here; nothing else spells a metric name. GenAI semantic-convention names are used where
one exists (``gen_ai.client.*``); the rest live under the ``redline.`` namespace.

The Prometheus name is what the Prometheus OTLP receiver (default
``UnderscoreEscapingWithSuffixes`` translation) stores: dots become underscores, the
unit is appended as a suffix (``s`` -> ``_seconds``, ``By`` -> ``_bytes``, ``1`` -> ``_ratio``
for gauges, curly-brace annotations are dropped) and monotonic counters end in ``_total``.
Exponential histograms arrive as native histograms, so they have no ``_bucket`` series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Attr",
    "External",
    "Kind",
    "MetricSpec",
    "METRICS",
    "prom_label",
    "metrics_markdown_table",
]


class Attr:
    """Attribute keys (OTel spelling). Prometheus labels replace dots with underscores."""

    # GenAI semantic conventions
    OPERATION = "gen_ai.operation.name"
    PROVIDER = "gen_ai.provider.name"
    REQUEST_MODEL = "gen_ai.request.model"
    RESPONSE_MODEL = "gen_ai.response.model"
    TOKEN_TYPE = "gen_ai.token.type"
    TOOL_NAME = "gen_ai.tool.name"
    AGENT_NAME = "gen_ai.agent.name"
    SERVER_ADDRESS = "server.address"
    SERVER_PORT = "server.port"
    ERROR_TYPE = "error.type"
    # redline namespace
    ATTEMPT_CAUSE = "redline.attempt.cause"
    STREAMING = "redline.streaming"
    POOL = "redline.limiter.pool"
    TARGET = "redline.target"
    REJECT_REASON = "redline.limiter.reason"
    COMPONENT = "redline.component"
    ACTIVITY = "redline.agent.activity"  # what a session is doing: model or tool
    # hardware semantic conventions
    HW_ID = "hw.id"
    HW_NAME = "hw.name"
    HW_GPU_INDEX = "redline.gpu.index"
    HW_VENDOR = "hw.vendor"
    HW_GPU_TASK = "hw.gpu.task"
    HW_LIMIT_TYPE = "hw.limit_type"
    HW_TYPE = "hw.type"  # "gpu" on hw.power / hw.temperature, which any hardware may emit


CANCELLED = "cancelled"
"""The ``error.type`` of a call the caller gave up on (``asyncio.CancelledError``,
``GeneratorExit`` of a consumer, ``KeyboardInterrupt``): not a failure. Error-ratio SLOs and
burn-rate alerts leave it out; dashboards show it beside the errors."""


def prom_label(attr: str) -> str:
    """The Prometheus label name of an OTel attribute key."""
    return attr.replace(".", "_")


class Kind(StrEnum):
    HISTOGRAM = "histogram"
    COUNTER = "counter"
    UPDOWN = "updowncounter"
    GAUGE = "gauge"


# Exponential-histogram scale for latency: max_scale 20 lets the SDK pick the finest
# scale that fits 160 buckets, giving < 1% relative bucket width at typical spreads.
LATENCY_MAX_SIZE = 160
LATENCY_MAX_SCALE = 20

# GenAI semantic-convention bucket advice (explicit-bucket fallback only).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0)
# gen_ai.invoke_agent.duration advice: 0.1 ... 409.6 s, doubling
AGENT_BUCKETS = tuple(round(0.1 * 2 ** i, 1) for i in range(13))
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)

_MODEL_ATTRS = (Attr.OPERATION, Attr.PROVIDER, Attr.REQUEST_MODEL, Attr.SERVER_ADDRESS,
                Attr.SERVER_PORT)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its OTel name, unit, kind and the Prometheus name it lands under."""

    name: str
    unit: str
    kind: Kind
    description: str
    attributes: tuple[str, ...] = ()
    exponential: bool = False  # latency histograms: base-2 exponential -> native histogram
    semconv: bool = False  # name taken from the OpenTelemetry semantic conventions
    extra: dict[str, str] = field(default_factory=dict)
    # explicit-bucket advice, used only where no exponential View applies (e.g. a
    # MeterProvider configured by someone else); GenAI semconv advice where it exists
    buckets: tuple[float, ...] | None = None

    @property
    def prom(self) -> str:
        """The series name in Prometheus after OTLP translation."""
        base = self.name.replace(".", "_")
        suffix = _UNIT_SUFFIX.get(self.unit, "")
        if self.unit == "1" and self.kind in (Kind.GAUGE, Kind.UPDOWN):
            suffix = "ratio"
        if suffix and not base.endswith("_" + suffix):
            base = f"{base}_{suffix}"
        if self.kind is Kind.COUNTER:
            base += "_total"
        return base


_UNIT_SUFFIX = {"s": "seconds", "By": "bytes", "W": "watts", "Cel": "celsius", "J": "joules"}


def _m(*args, **kwargs) -> MetricSpec:
    return MetricSpec(*args, **kwargs)


class METRICS:
    """The metric catalogue. Attribute names are the OTel keys in :class:`Attr`."""

    # --- GenAI semantic conventions -------------------------------------------------
    OPERATION_DURATION = _m(
        "gen_ai.client.operation.duration", "s", Kind.HISTOGRAM,
        "End-to-end duration of a model call, from the call to the last chunk, retries included.",
        _MODEL_ATTRS + (Attr.RESPONSE_MODEL, Attr.ERROR_TYPE, Attr.STREAMING), exponential=True,
        buckets=DURATION_BUCKETS, semconv=True)
    TIME_TO_FIRST_CHUNK = _m(
        "gen_ai.client.operation.time_to_first_chunk", "s", Kind.HISTOGRAM,
        "Time from the call (before the first attempt is sent) to the first chunk carrying "
        "generated output of any kind: text, tool or function call, reasoning/thinking, or "
        "refusal (the same rule for chat completions, legacy completions, Responses and "
        "Anthropic Messages).",
        _MODEL_ATTRS, exponential=True, buckets=DURATION_BUCKETS, semconv=True)
    TIME_PER_OUTPUT_CHUNK = _m(
        "redline.client.operation.mean_time_per_output_chunk", "s", Kind.HISTOGRAM,
        "Mean time between consecutive output chunks of a streamed response, after the "
        "first: one sample per call, like vLLM's time per output token. Not the semconv "
        "gen_ai.client.operation.time_per_output_chunk (one sample per gap), which cost 11 % "
        "CPU per streamed call to record.",
        _MODEL_ATTRS, exponential=True, buckets=CHUNK_BUCKETS)
    TOKEN_USAGE = _m(
        "gen_ai.client.token.usage", "{token}", Kind.HISTOGRAM,
        "Tokens per call, by gen_ai.token.type (input or output).",
        _MODEL_ATTRS + (Attr.RESPONSE_MODEL, Attr.TOKEN_TYPE), exponential=True,
        buckets=TOKEN_BUCKETS, semconv=True)

    # --- redline: concurrency ---------------------------------------------------------
    REQUESTS_IN_FLIGHT = _m(
        "redline.client.requests.in_flight", "{request}", Kind.UPDOWN,
        "Model calls started and not yet finished (the concurrency level).", _MODEL_ATTRS)
    SESSIONS_IN_FLIGHT = _m(
        "redline.agent.sessions.in_flight", "{session}", Kind.UPDOWN,
        "Agent sessions open.", (Attr.AGENT_NAME,))
    TOOL_CALLS_IN_FLIGHT = _m(
        "redline.tool.calls.in_flight", "{call}", Kind.UPDOWN,
        "Tool calls running.", (Attr.TOOL_NAME,))
    AGENT_ACTIVITY_IN_FLIGHT = _m(
        "redline.agent.activity.in_flight", "{call}", Kind.UPDOWN,
        "Model and tool calls in flight inside an agent session, by the session's agent and "
        "redline.agent.activity (model or tool): the numerator of where agents spend their "
        "concurrency.", (Attr.AGENT_NAME, Attr.ACTIVITY))
    AGENT_HANDOFFS = _m(
        "redline.agent.handoffs", "{handoff}", Kind.COUNTER,
        "Handoffs from one agent to another inside a session (by the agent handing off).",
        (Attr.AGENT_NAME,))
    INVOKE_AGENT_DURATION = _m(
        "gen_ai.invoke_agent.duration", "s", Kind.HISTOGRAM,
        "Duration of an agent session (an agent invocation: a framework's root run, or "
        "redline.agent_session).",
        (Attr.OPERATION, Attr.AGENT_NAME, Attr.ERROR_TYPE), exponential=True,
        buckets=AGENT_BUCKETS, semconv=True)
    EXECUTE_TOOL_DURATION = _m(
        "gen_ai.execute_tool.duration", "s", Kind.HISTOGRAM,
        "Duration of a tool call (a framework's tool execution, an MCP tools/call, or "
        "redline.tool_call).",
        (Attr.OPERATION, Attr.TOOL_NAME, Attr.ERROR_TYPE), exponential=True,
        buckets=DURATION_BUCKETS, semconv=True)

    # --- redline: requests, attempts, retries, errors ---------------------------------
    REQUESTS = _m(
        "redline.client.requests", "{request}", Kind.COUNTER,
        "Model calls finished, with error.type set when the call failed (the exception's "
        "class name, response_failed / stream_error for a Responses stream that reported a "
        "failure) or was given up by the caller (cancelled, not a failure).",
        _MODEL_ATTRS + (Attr.RESPONSE_MODEL, Attr.ERROR_TYPE))
    ATTEMPTS = _m(
        "redline.client.attempts", "{attempt}", Kind.COUNTER,
        "HTTP attempts made inside the SDK's retry loop, by outcome cause "
        "(ok, http_429, http_5xx code, timeout, connection_error).",
        _MODEL_ATTRS + (Attr.ATTEMPT_CAUSE,))
    RETRIES = _m(
        "redline.client.retries", "{retry}", Kind.COUNTER,
        "Attempts after the first, by the cause of the attempt that preceded them.",
        _MODEL_ATTRS + (Attr.ATTEMPT_CAUSE,))
    ATTEMPT_DURATION = _m(
        "redline.client.attempt.duration", "s", Kind.HISTOGRAM,
        "Duration of a single HTTP attempt (operation duration includes retries; this does not).",
        _MODEL_ATTRS + (Attr.ATTEMPT_CAUSE,),
        exponential=True, buckets=DURATION_BUCKETS)
    RETRY_BACKOFF = _m(
        "redline.client.retry.backoff", "s", Kind.HISTOGRAM,
        "Backoff waited before a retry (Retry-After honoured when the server sent one).",
        _MODEL_ATTRS + (Attr.ATTEMPT_CAUSE,),
        exponential=True, buckets=DURATION_BUCKETS)
    RETRY_AFTER = _m(
        "redline.client.retry_after", "s", Kind.HISTOGRAM,
        "Retry-After (or retry-after-ms) the server sent with a failed attempt.",
        _MODEL_ATTRS + (Attr.ATTEMPT_CAUSE,),
        exponential=True, buckets=DURATION_BUCKETS)
    INSTRUMENTATION_ERRORS = _m(
        "redline.instrumentation.errors", "{error}", Kind.COUNTER,
        "Exceptions raised inside redline's own code and swallowed (never seen by the app).",
        (Attr.COMPONENT,))

    # --- redline: limiter (queue depth and admission) ---------------------------------
    LIMITER_QUEUE_DEPTH = _m(
        "redline.limiter.queue.depth", "{request}", Kind.UPDOWN,
        "Requests waiting for a slot.", (Attr.TARGET, Attr.POOL))
    LIMITER_IN_FLIGHT = _m(
        "redline.limiter.in_flight", "{request}", Kind.UPDOWN,
        "Requests holding a slot.", (Attr.TARGET, Attr.POOL))
    LIMITER_CAP = _m(
        "redline.limiter.cap", "{request}", Kind.GAUGE,
        "Configured in-flight cap.", (Attr.TARGET, Attr.POOL))
    LIMITER_QUEUE_WAIT = _m(
        "redline.limiter.queue.wait", "s", Kind.HISTOGRAM,
        "Time from queued_at to admitted_at, for requests that had to queue (an immediate "
        "admission is counted in redline.limiter.admissions only).",
        (Attr.TARGET, Attr.POOL), exponential=True)
    LIMITER_ADMISSIONS = _m(
        "redline.limiter.admissions", "{request}", Kind.COUNTER,
        "Requests admitted to a slot.", (Attr.TARGET, Attr.POOL))
    LIMITER_REJECTIONS = _m(
        "redline.limiter.rejections", "{request}", Kind.COUNTER,
        "Requests refused or shed (reason: queue_full, deadline, cancelled, retry_budget).",
        (Attr.TARGET, Attr.POOL, Attr.REJECT_REASON))
    LIMITER_WORK_CONSERVING_GAP = _m(
        "redline.limiter.work_conserving.violation", "s", Kind.COUNTER,
        "Seconds during which the queue was non-empty while in-flight was below the cap.",
        (Attr.TARGET, Attr.POOL))

    # --- hardware (OTel hw.gpu.* semantic conventions) --------------------------------
    GPU_UTILIZATION = _m(
        "hw.gpu.utilization", "1", Kind.GAUGE,
        "Fraction of time the GPU was busy over the last sample period.",
        (Attr.HW_ID, Attr.HW_NAME, Attr.HW_GPU_INDEX, Attr.HW_VENDOR), semconv=True)
    GPU_MEMORY_USAGE = _m(
        "hw.gpu.memory.usage", "By", Kind.GAUGE, "GPU memory used.",
        (Attr.HW_ID, Attr.HW_NAME, Attr.HW_GPU_INDEX, Attr.HW_VENDOR), semconv=True)
    GPU_MEMORY_LIMIT = _m(
        "hw.gpu.memory.limit", "By", Kind.GAUGE, "GPU memory total.",
        (Attr.HW_ID, Attr.HW_NAME, Attr.HW_GPU_INDEX, Attr.HW_VENDOR), semconv=True)
    GPU_POWER = _m(
        "hw.power", "W", Kind.GAUGE, "GPU power draw.",
        (Attr.HW_ID, Attr.HW_NAME, Attr.HW_GPU_INDEX, Attr.HW_VENDOR), semconv=True)
    GPU_POWER_LIMIT = _m(
        "hw.power.limit", "W", Kind.GAUGE, "GPU enforced power limit.",
        (Attr.HW_ID, Attr.HW_NAME, Attr.HW_GPU_INDEX, Attr.HW_VENDOR))
    GPU_TEMPERATURE = _m(
        "hw.temperature", "Cel", Kind.GAUGE, "GPU core temperature.",
        (Attr.HW_ID, Attr.HW_NAME, Attr.HW_GPU_INDEX, Attr.HW_VENDOR), semconv=True)

    @classmethod
    def all(cls) -> list[MetricSpec]:
        return [v for v in vars(cls).values() if isinstance(v, MetricSpec)]


class External:
    """Series redline reads but does not emit (vLLM-style servers, NVIDIA DCGM exporter)."""

    # vLLM V1 (checked against 0.32) and `redline sim`; label model_name. The per-step
    # vllm:time_per_output_token_seconds is deprecated (0.11) and hidden (0.12+): use ITL.
    VLLM_RUNNING = "vllm:num_requests_running"
    VLLM_WAITING = "vllm:num_requests_waiting"
    VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # 0..1
    VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
    VLLM_TTFT = "vllm:time_to_first_token_seconds"  # classic histogram (_bucket, le)
    VLLM_ITL = "vllm:inter_token_latency_seconds"  # classic histogram, per decode step
    VLLM_QUEUE_TIME = "vllm:request_queue_time_seconds"  # classic histogram, WAITING phase
    VLLM_INFERENCE_TIME = "vllm:request_inference_time_seconds"  # classic, RUNNING phase
    VLLM_E2E = "vllm:e2e_request_latency_seconds"  # classic histogram
    DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent
    DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
    DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
    DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"  # W
    DCGM_GPU_LABEL = "gpu"  # DCGM's device-index label; NVML's index is relabelled onto it


def metrics_markdown_table() -> str:
    """The README's metric table, generated from the catalogue."""
    rows = ["| OTel name | Prometheus name | kind | unit | attributes | meaning |",
            "|---|---|---|---|---|---|"]
    for m in METRICS.all():
        kind = m.kind.value + (" (exponential)" if m.exponential else "")
        attrs = ", ".join(f"`{a}`" for a in m.attributes)
        rows.append(
            f"| `{m.name}` | `{m.prom}` | {kind} | `{m.unit}` | {attrs} | {m.description} |")
    return "\n".join(rows)
