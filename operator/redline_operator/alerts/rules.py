"""Prometheus rule groups for each target of ``redline.yaml``.

Each target gets two rule files of one group each: ``<target>.rules.yml`` with group
``redline.<target>`` (recording rules for concurrency, latency and retries, then the alerts
that use them, evaluated every ``evaluation_interval``; rules of a group run in order at one
timestamp, so an alert sees the concurrency recorded in the same evaluation) and
``<target>.long.rules.yml`` with group ``redline.<target>.long`` (error ratios over 5m..3d,
the burn-rate alerts and the telemetry-absent alert, every 30s: long windows are costly
and gain nothing from a faster cadence). Two files, so that promtool tests of the fast
rules need not evaluate 3-day windows and vice versa.

Example::

    files = target_rule_files(cfg, cfg.target("sim"))  # {"rules.yml": {...}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass

from redline.config import Config, Target
from redline_operator.alerts import queries as q

__all__ = ["AlertSpec", "ALERT_NAMES", "alert_specs", "target_rule_files", "LONG_INTERVAL"]

LONG_INTERVAL = "30s"

CONCURRENCY = "RedlineConcurrencyNearSaturation"
PREDICTED = "RedlineConcurrencySaturationPredicted"
TTFT = "RedlineTTFTOverSLO"
LATENCY = "RedlineLatencyOverSLO"
ERROR_BUDGET = "RedlineErrorBudgetBurn"
RETRY_STORM = "RedlineRetryStorm"
WORK_CONSERVING = "RedlineLimiterNotWorkConserving"
GPU = "RedlineGPUUtilizationHigh"
ABSENT = "RedlineTelemetryAbsent"
SESSIONS = "RedlineSessionsNearCapacity"
FLEET = "RedlineFleetCapacityPredicted"
ALERT_NAMES = (CONCURRENCY, PREDICTED, TTFT, LATENCY, ERROR_BUDGET, RETRY_STORM,
               WORK_CONSERVING, GPU, ABSENT, SESSIONS, FLEET)

_V = "{{ $value | humanize }}"
_PCT = "{{ $value | humanizePercentage }}"
_SEC = "{{ $value | humanizeDuration }}"


@dataclass(frozen=True)
class AlertSpec:
    """One alerting rule of one target."""

    name: str
    severity: str
    expr: str
    for_: str | None
    summary: str
    description: str
    long: bool = False  # lives in the group of long windows

    def rule(self, target: Target, runbook_base_url: str) -> dict:
        rule: dict = {"alert": self.name, "expr": self.expr}
        if self.for_:
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity, "target": target.name}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{runbook_base_url.rstrip('/')}/{self.name}.md",
        }
        return rule


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def alert_specs(target: Target) -> list[AlertSpec]:
    """Every alert of ``target``, thresholds and durations taken from its config."""
    t, d, n = target, target.durations, target.name
    sat = f"{t.saturation_concurrency:g}"
    specs = [
        AlertSpec(
            CONCURRENCY, level, q.concurrency_at_least(t, value), dur,
            f"{n}: {_V} model calls in flight, at or above the {level} level {value:g}.",
            f"In-flight concurrency of target {n} is {_V}, at or above the {level} level "
            f"{value:g} ({_pct(frac)} of the saturation point {sat}) for {dur}. Past the "
            f"saturation point p95 latency grows non-linearly: shed load or add capacity.")
        for level, value, frac, dur in (
            ("warn", t.warn_concurrency, t.warn_fraction, d.warn),
            ("page", t.page_concurrency, t.page_fraction, d.page))
    ]
    specs += [
        AlertSpec(
            PREDICTED, "warn", q.saturation_predicted(t), d.warn,
            f"{n}: concurrency trend reaches the saturation point {sat} within "
            f"{d.predict_horizon}.",
            f"At the trend of the last {d.predict_window}, in-flight concurrency of target {n} "
            f"will be {_V} in {d.predict_horizon}, at or past the saturation point {sat} "
            f"(current concurrency is above {t.predict_floor_concurrency:g}, "
            f"{_pct(t.predict_floor_fraction)} of it)."),
        AlertSpec(
            TTFT, "page", q.ttft_over_slo(t), d.latency,
            f"{n}: p95 time to first token {_SEC} is over the SLO "
            f"{t.slo.ttft_p95_seconds:g}s.",
            f"The p95 time to first token of target {n} over the last minute is {_SEC}, above "
            f"its SLO of {t.slo.ttft_p95_seconds:g}s for {d.latency}. Users are waiting."),
        AlertSpec(
            LATENCY, "page", q.latency_over_slo(t), d.latency,
            f"{n}: p95 call latency {_SEC} is over the SLO {t.slo.latency_p95_seconds:g}s.",
            f"The p95 end-to-end duration of model calls of target {n} over the last minute "
            f"is {_SEC}, above its SLO of {t.slo.latency_p95_seconds:g}s for {d.latency}."),
    ]
    specs += [
        AlertSpec(
            ERROR_BUDGET, sev, q.error_budget_burn(t, sev), None,
            f"{n}: error budget burning {'fast' if sev == 'page' else 'slowly'}, "
            f"error ratio {_PCT}.",
            f"Target {n} fails {_PCT} of its model calls over the long window, "
            f"{burns} times its SLO error ratio of {_pct(t.slo.error_ratio)} "
            f"({'page: the 30-day budget is gone in days' if sev == 'page' else 'ticket'}).",
            long=True)
        for sev, burns in (("page", "14.4 (1h and 5m) or 6 (6h and 30m)"),
                           ("warn", "3 (1d and 2h) or 1 (3d and 6h)"))
    ]
    specs += [
        AlertSpec(
            RETRY_STORM, "page", q.retry_storm(t), d.page,
            f"{n}: retry storm, {_PCT} retries per request near the concurrency cap.",
            f"Target {n} makes {_PCT} retries per finished request over 5m (storm threshold "
            f"{_pct(t.retry_storm_ratio)}) while its concurrency is at or above the warn level "
            f"{t.warn_concurrency:g}. Retries add load to a saturated server: they compound "
            f"the overload instead of riding it out."),
        AlertSpec(
            WORK_CONSERVING, "warn", q.work_conserving_violation(t), d.warn,
            f"{n}: limiter pool {{{{ $labels.redline_limiter_pool }}}} queues work while "
            f"slots are free {_PCT} of the time.",
            f"The redline limiter of target {n}, pool {{{{ $labels.redline_limiter_pool }}}}, "
            f"had requests queued while in-flight was below its cap {_PCT} of the last "
            f"minute (allowed: {_pct(t.work_conserving_violation_ratio)}). Capacity is idle "
            f"while callers wait."),
        AlertSpec(
            GPU, "warn", q.gpu_over_ceiling(t), d.warn,
            f"{n}: GPU {{{{ $labels.gpu }}}} on {{{{ $labels.instance }}}} is {_PCT} busy.",
            f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.instance }}}} (target {n}) has been "
            f"{_PCT} utilised for {d.warn}, above the ceiling "
            f"{_pct(t.gpu_utilization_ceiling)}: no headroom for a burst."),
        AlertSpec(
            ABSENT, "warn", q.telemetry_absent(t), None,
            f"{n}: no telemetry for {d.absent}.",
            f"Target {n} reported model-call metrics within the last {d.absent_lookback} but "
            f"none for {d.absent}: the app, its exporter or the Collector stopped. Until it "
            f"is back, redline cannot page on saturation for {n}.", long=True),
    ]
    if t.saturation_sessions is not None:
        cap = f"{t.saturation_sessions:g}"
        specs.append(AlertSpec(
            SESSIONS, "warn", q.sessions_at_least(t, t.warn_sessions), d.warn,
            f"{n}: {_V} agent sessions open, at or above the warn level {t.warn_sessions:g}.",
            f"Target {n} has {_V} concurrent agent sessions, at or above "
            f"{_pct(t.warn_fraction)} of its measured session capacity {cap} "
            f"(`redline sweep --unit sessions`) for {d.warn}. Each session holds a model "
            f"call part of its time; past the capacity their calls queue at the server."))
    specs += _fleet_specs(target)
    return specs


def _fleet_specs(target: Target) -> list[AlertSpec]:
    """The fleet forecast, for targets with a written plan (``redline plan --write``)."""
    cap = q.fleet_capacity(target)
    if cap is None:
        return []
    t, d, n, p = target, target.durations, target.name, target.planning
    thr = f"{p.throughput_per_replica_rps:g}"
    return [AlertSpec(
        FLEET, "warn", q.fleet_capacity_predicted(t), d.warn,
        f"{n}: request rate trend exceeds the fleet's capacity {cap:g} req/s "
        f"({p.max_replicas} replicas) within {d.predict_horizon}.",
        f"At the trend of the last {d.predict_window}, target {n} will receive {_V} req/s "
        f"in {d.predict_horizon}, more than its {p.max_replicas} replicas (max_replicas) "
        f"serve at the concurrency target {t.concurrency_target} ({thr} req/s each, "
        f"{cap:g} req/s in all): even scaled out the fleet will not fit. Raise "
        f"planning.max_replicas and the quota behind it, or shed load.")]


def _recording(target: Target) -> list[dict]:
    label = {"target": target.name}
    sessions = ([{"record": q.SESSIONS, "expr": q.sessions_raw(target), "labels": label}]
                if target.saturation_sessions is not None else [])
    return sessions + [
        {"record": q.CONCURRENCY, "expr": q.concurrency_raw(target), "labels": label},
        {"record": q.REQUEST_RATE, "expr": q.request_rate_raw(target), "labels": label},
        {"record": q.TTFT_P95, "expr": q.ttft_p95_raw(target), "labels": label},
        {"record": q.LATENCY_P95, "expr": q.latency_p95_raw(target), "labels": label},
        {"record": q.RETRY_RATIO, "expr": q.retry_ratio_raw(target), "labels": label},
        *_per_replica_recording(target),
    ]


def _per_replica_recording(target: Target) -> list[dict]:
    """Concurrency per replica, replicas reporting and (with a plan) replicas needed."""
    label = {"target": target.name}
    rules = [
        {"record": q.INSTANCE_CONCURRENCY, "expr": q.instance_concurrency_raw(target),
         "labels": label},
        {"record": q.REPLICAS, "expr": q.replicas_raw(target), "labels": label},
    ]
    if q.has_plan(target):
        rules.append({"record": q.REPLICAS_NEEDED, "expr": q.replicas_needed_raw(target),
                      "labels": label})
    return rules


def _slo_recording(target: Target) -> list[dict]:
    return [{"record": q.ERROR_RATIO.format(window=w), "expr": q.error_ratio_raw(target, w),
             "labels": {"target": target.name}} for w in q.ERROR_RATIO_WINDOWS]


def target_rule_files(cfg: Config, target: Target) -> dict[str, dict]:
    """Rule file contents for one target, by file-name suffix."""
    specs = alert_specs(target)
    base = cfg.runbook_base_url
    return {
        "rules.yml": {"groups": [{
            "name": f"redline.{target.name}", "interval": cfg.evaluation_interval,
            "rules": _recording(target) + [s.rule(target, base) for s in specs if not s.long],
        }]},
        "long.rules.yml": {"groups": [{
            "name": f"redline.{target.name}.long", "interval": LONG_INTERVAL,
            "rules": _slo_recording(target) + [s.rule(target, base) for s in specs if s.long],
        }]},
    }
