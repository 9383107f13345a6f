"""PromQL for redline's rules, kept apart from the rule layout (kubernetes-mixin style).

Every function takes a :class:`~redline.config.Target` and returns one expression string.
Raw series names come from :mod:`redline.semconv`; the derived per-target series are the
recording rules named here (``redline:target_<what>:<aggregation>``), each carrying a
``target`` label so that alerts, dashboards and runbooks can select them by target name.

Example::

    from redline_operator.alerts import queries
    queries.concurrency_raw(cfg.target("sim"))
    # 'sum(redline_client_requests_in_flight{server_address="127.0.0.1",...})'
"""

from __future__ import annotations

from redline.config import Target, duration_seconds
from redline.semconv import METRICS, Attr, External, prom_label
from redline_operator import promql

__all__ = [
    "CONCURRENCY",
    "SESSIONS",
    "TTFT_P95",
    "LATENCY_P95",
    "REQUEST_RATE",
    "RETRY_RATIO",
    "ERROR_RATIO",
    "ERROR_RATIO_WINDOWS",
    "DCGM_GPU_UTIL",
    "BURN_RATES",
    "selector",
    "target_selector",
    "limiter_selector",
    "gpu_selector",
    "recorded",
    "INSTANCE_CONCURRENCY",
    "REPLICAS",
    "REPLICAS_NEEDED",
    "has_plan",
    "fleet_capacity",
]

# Recording-rule names (level:metric:operations).
CONCURRENCY = "redline:target_concurrency:sum"
SESSIONS = "redline:target_sessions_in_flight:sum"
TTFT_P95 = "redline:target_ttft_seconds:p95_1m"
LATENCY_P95 = "redline:target_latency_seconds:p95_1m"
REQUEST_RATE = "redline:target_requests:rate1m"
RETRY_RATIO = "redline:target_retry_ratio:rate5m"
ERROR_RATIO = "redline:target_error_ratio:rate{window}"
ERROR_RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Per replica (the capacity plan, `redline plan`); see the section at the end.
INSTANCE_CONCURRENCY = "redline:target_instance_concurrency:sum"
REPLICAS = "redline:target_replicas:count"
REPLICAS_NEEDED = "redline:target_replicas_needed:ceil"

# Not ours: the NVIDIA DCGM exporter's utilisation gauge, in percent (0-100).
DCGM_GPU_UTIL = External.DCGM_GPU_UTIL
_DCGM_GPU_INDEX = External.DCGM_GPU_LABEL

# Multi-window multi-burn-rate (SRE workbook, table 5-8; the Sloth defaults):
# (severity, burn factor, long window, short window). 14.4x over 1h spends 2% of a 30-day
# budget; 6x over 6h spends 5%; 3x over 1d and 1x over 3d spend 10% each.
BURN_RATES = (
    ("page", 14.4, "1h", "5m"),
    ("page", 6.0, "6h", "30m"),
    ("warn", 3.0, "1d", "2h"),
    ("warn", 1.0, "3d", "6h"),
)

_ERROR = prom_label(Attr.ERROR_TYPE)
_LIMITER_TARGET = prom_label(Attr.TARGET)
_POOL = prom_label(Attr.POOL)
_GPU_INDEX = prom_label(Attr.HW_GPU_INDEX)


def selector(*raw: str, **labels: str | None) -> str:
    """``{a="x",b="y"}`` with ``None`` values left out (``{}`` when all are); ``raw``
    matchers such as ``error_type!=""`` are appended as given."""
    parts = [p for p in (promql.selector(**labels), *raw) if p]
    return "{" + ",".join(parts) + "}"


def target_selector(target: Target, *raw: str) -> str:
    """The series of the target's model calls: its ``match`` turned into label matchers."""
    parts = [p for p in (promql.target_matchers(target.match), *raw) if p]
    return "{" + ",".join(parts) + "}"


def limiter_selector(target: Target) -> str:
    """The limiter's series for the target: ``redline.target`` is the target's name."""
    return selector(job=target.match.service, **{_LIMITER_TARGET: target.name})


def gpu_selector(target: Target) -> str:
    """GPU series of the target: ``gpu_job``, else ``service``, else every GPU."""
    return selector(job=target.match.gpu_job or target.match.service)


def recorded(name: str, target: Target) -> str:
    """A recording rule's series for one target."""
    return f"{name}{selector(target=target.name)}"


def _num(value: float) -> str:
    return f"{value:g}"


# --- recording-rule expressions ----------------------------------------------------------

def concurrency_raw(target: Target) -> str:
    """In-flight model calls summed over every process and label of the target."""
    return f"sum({METRICS.REQUESTS_IN_FLIGHT.prom}{target_selector(target)})"


def sessions_raw(target: Target) -> str:
    """Open agent sessions of the target's service (sessions carry no server or model)."""
    return f"sum({METRICS.SESSIONS_IN_FLIGHT.prom}{selector(job=target.match.service)})"


def _p95(metric: str, target: Target) -> str:
    return f"histogram_quantile(0.95, sum(rate({metric}{target_selector(target)}[1m])))"


def ttft_p95_raw(target: Target) -> str:
    return _p95(METRICS.TIME_TO_FIRST_CHUNK.prom, target)


def latency_p95_raw(target: Target) -> str:
    return _p95(METRICS.OPERATION_DURATION.prom, target)


def request_rate_raw(target: Target, window: str = "1m") -> str:
    return f"sum(rate({METRICS.REQUESTS.prom}{target_selector(target)}[{window}]))"


def retry_ratio_raw(target: Target) -> str:
    """Retries per finished request over 5m (``+Inf`` when retries run and nothing ends)."""
    retries = f"sum(rate({METRICS.RETRIES.prom}{target_selector(target)}[5m]))"
    return f"{retries}\n/\n{request_rate_raw(target, '5m')}"


def error_ratio_raw(target: Target, window: str) -> str:
    """Failed calls (``error_type`` set) over all finished calls in ``window``."""
    failed = target_selector(target, f'{_ERROR}!=""')
    errors = f"sum(rate({METRICS.REQUESTS.prom}{failed}[{window}]))"
    return f"{errors}\n/\n{request_rate_raw(target, window)}"


# --- alert expressions --------------------------------------------------------------------

def concurrency_at_least(target: Target, level: float) -> str:
    return f"{recorded(CONCURRENCY, target)} >= {_num(level)}"


def sessions_at_least(target: Target, level: float) -> str:
    return f"{recorded(SESSIONS, target)} >= {_num(level)}"


def saturation_predicted(target: Target) -> str:
    """Linear trend over ``predict_window`` reaches the knee within ``predict_horizon``,
    counted only once concurrency is above the forecast floor."""
    d = target.durations
    horizon = int(duration_seconds(d.predict_horizon))
    return (f"predict_linear({recorded(CONCURRENCY, target)}[{d.predict_window}], {horizon})"
            f" >= {_num(target.saturation_concurrency)}\n"
            f"and on (target)\n"
            f"{recorded(CONCURRENCY, target)} >= {_num(target.predict_floor_concurrency)}")


def ttft_over_slo(target: Target) -> str:
    return f"{recorded(TTFT_P95, target)} > {_num(target.slo.ttft_p95_seconds)}"


def latency_over_slo(target: Target) -> str:
    return f"{recorded(LATENCY_P95, target)} > {_num(target.slo.latency_p95_seconds)}"


def error_budget_burn(target: Target, severity: str) -> str:
    """OR of the multi-window conditions of one severity; the value is the long window's
    error ratio."""
    parts = []
    for sev, factor, long, short in BURN_RATES:
        if sev != severity:
            continue
        threshold = f"({_num(factor)} * {_num(target.slo.error_ratio)})"
        parts.append(
            f"(\n  {recorded(ERROR_RATIO.format(window=long), target)} > {threshold}\n"
            f"and on (target)\n"
            f"  {recorded(ERROR_RATIO.format(window=short), target)} > {threshold}\n)")
    return "\nor\n".join(parts)


def retry_storm(target: Target) -> str:
    """Retry ratio above ``retry_storm_ratio`` while concurrency is at the warn level."""
    return (f"{recorded(RETRY_RATIO, target)} > {_num(target.retry_storm_ratio)}\n"
            f"and on (target)\n"
            f"{recorded(CONCURRENCY, target)} >= {_num(target.warn_concurrency)}")


def work_conserving_violation(target: Target) -> str:
    """Fraction of time (per pool) the limiter had a queue while slots were free."""
    metric = METRICS.LIMITER_WORK_CONSERVING_GAP.prom
    return (f"sum by ({_POOL}) (rate({metric}{limiter_selector(target)}[1m]))\n"
            f"> {_num(target.work_conserving_violation_ratio)}")


def gpu_utilization(target: Target | None = None) -> str:
    """Busy fraction per GPU from redline's NVML gauge or the DCGM exporter (percent);
    every GPU when ``target`` is ``None``."""
    sel = gpu_selector(target) if target is not None else ""
    redline = (f'label_replace({METRICS.GPU_UTILIZATION.prom}{sel}, "{_DCGM_GPU_INDEX}", '
               f'"$1", "{_GPU_INDEX}", "(.*)")')
    return (f"max by (instance, {_DCGM_GPU_INDEX}) (\n  {redline}\nor\n"
            f"  {DCGM_GPU_UTIL}{sel} / 100\n)")


def gpu_over_ceiling(target: Target) -> str:
    return f"{gpu_utilization(target)}\n> {_num(target.gpu_utilization_ceiling)}"


def telemetry_absent(target: Target) -> str:
    """The target reported within ``absent_lookback`` but not within ``absent``.

    Never fires on a Prometheus where the target never reported (fresh install, tests),
    and stops after ``absent_lookback`` (a decommissioned service stops alerting).
    """
    d = target.durations
    metric = f"{METRICS.REQUESTS_IN_FLIGHT.prom}{target_selector(target)}"
    return (f"count(present_over_time({metric}[{d.absent_lookback}]))\n"
            f"unless\ncount(present_over_time({metric}[{d.absent}]))")


# --- capacity plan: per replica (`redline plan`, targets[].planning) ----------------------
# A replica is one process reporting the target's series (the ``instance`` label, OTel
# ``service.instance.id``). These rules exist only for targets whose plan is written
# (``planning.throughput_per_replica_rps``; ``max_replicas`` for the fleet forecast).

def has_plan(target: Target) -> bool:
    return target.planning.throughput_per_replica_rps is not None


def fleet_capacity(target: Target) -> float | None:
    """Requests/s the fleet serves at ``max_replicas`` replicas at the concurrency target."""
    p = target.planning
    if p.throughput_per_replica_rps is None or p.max_replicas is None:
        return None
    return round(p.max_replicas * p.throughput_per_replica_rps, 3)


def instance_concurrency_raw(target: Target) -> str:
    """In-flight model calls per replica (``instance``) of the target."""
    return f"sum by (instance) ({METRICS.REQUESTS_IN_FLIGHT.prom}{target_selector(target)})"


def replicas_raw(target: Target) -> str:
    """Replicas reporting: distinct instances with an in-flight series for the target."""
    return f"count({instance_concurrency_raw(target)})"


def replicas_needed_raw(target: Target) -> str:
    """Live request rate over the throughput one replica serves at the concurrency target."""
    thr = target.planning.throughput_per_replica_rps
    return f"ceil({recorded(REQUEST_RATE, target)} / {_num(thr)})"


def fleet_capacity_predicted(target: Target) -> str:
    """The request-rate trend reaches the fleet's capacity at ``max_replicas`` within
    ``predict_horizon``, counted once the rate is above ``fleet_floor_fraction`` of it."""
    d = target.durations
    cap = fleet_capacity(target)
    floor = round(cap * target.planning.fleet_floor_fraction, 3)
    horizon = int(duration_seconds(d.predict_horizon))
    return (f"predict_linear({recorded(REQUEST_RATE, target)}[{d.predict_window}], {horizon})"
            f" > {_num(cap)}\n"
            f"and on (target)\n"
            f"{recorded(REQUEST_RATE, target)} >= {_num(floor)}")
