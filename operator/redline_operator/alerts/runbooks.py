"""One runbook per alert: what it means, how to confirm it, what to do.

Runbooks are generated so that the queries they tell you to run are the recording rules
the alerts use (replace ``TARGET`` with the alert's ``target`` label). Thresholds are per
target and live in ``redline.yaml``; the alert's description carries the values.
"""

from __future__ import annotations

from redline.semconv import METRICS
from redline_operator.alerts import queries as q
from redline_operator.alerts import rules as r

__all__ = ["runbooks"]

_T = '{target="TARGET"}'


def _q(*lines: str) -> str:
    return "```promql\n" + "\n".join(lines) + "\n```"


_BOOKS: dict[str, tuple[str, str, str, str]] = {
    # name: (title, meaning, confirm, act)
    r.CONCURRENCY: (
        "Concurrency near the saturation point",
        "The target's in-flight model calls (summed over every process) are at or above a "
        "fraction of its saturation point, the knee measured by `redline sweep` where p95 "
        "latency starts to climb non-linearly. `severity=warn` fires at `warn_fraction` "
        "after `durations.warn`; `severity=page` at `page_fraction` after `durations.page`, "
        "before users feel the knee. The page inhibits the warn.",
        _q(f"{q.CONCURRENCY}{_T}", f"{q.LATENCY_P95}{_T}", f"{q.REQUEST_RATE}{_T}",
           "vllm:num_requests_running  # server side, when the server is vLLM",
           "vllm:num_requests_waiting")
        + "\nIf concurrency is high and latency flat, the knee may have moved: re-run "
          "`redline sweep`.",
        "1. Shed or defer non-interactive load (batch jobs, evaluations).\n"
        "2. Add replicas or capacity; the knee scales with them.\n"
        "3. Enable or lower the limiter cap (`targets[].limiter.model_cap`) so excess "
        "requests queue in the client instead of slowing every call on the server.\n"
        "4. If the knee measurement is stale, run `redline sweep` and `redline rules`."),
    r.PREDICTED: (
        "Concurrency predicted to reach saturation",
        "A linear fit of the target's concurrency over `durations.predict_window` reaches "
        "the saturation point within `durations.predict_horizon`. It only fires above "
        "`predict_floor_fraction` of the knee so a ramp from idle stays quiet. It is an "
        "early warning; the concurrency page inhibits it.",
        _q(f"{q.CONCURRENCY}{_T}",
           f"predict_linear({q.CONCURRENCY}{_T}[10m], 900)",
           f"deriv({q.CONCURRENCY}{_T}[10m]) * 60  # calls per minute of growth"),
        "1. Check whether the growth is organic (traffic) or a regression (slower calls "
        "hold slots longer: compare the latency p95).\n"
        "2. Scale out now, while there is time; or schedule shedding of deferrable work."),
    r.TTFT: (
        "Time to first token p95 over SLO",
        "The p95 time from the call to the first streamed chunk exceeds "
        "`slo.ttft_p95_seconds` for `durations.latency`. Users of streaming responses wait "
        "before seeing anything. Queueing (client limiter or server) and long prefills are "
        "the usual causes.",
        _q(f"{q.TTFT_P95}{_T}", f"{q.CONCURRENCY}{_T}",
           f"histogram_quantile(0.95, sum(rate({METRICS.LIMITER_QUEUE_WAIT.prom}[1m])))"),
        "1. If concurrency is near the knee, treat as saturation (see "
        "RedlineConcurrencyNearSaturation).\n"
        "2. If queue wait dominates, the limiter cap is too low for the traffic.\n"
        "3. Otherwise look for long prompts (token usage) or a slow server."),
    r.LATENCY: (
        "Call latency p95 over SLO",
        "The p95 end-to-end duration of model calls (retries included) exceeds "
        "`slo.latency_p95_seconds` for `durations.latency`.",
        _q(f"{q.LATENCY_P95}{_T}", f"{q.CONCURRENCY}{_T}", f"{q.RETRY_RATIO}{_T}",
           f"histogram_quantile(0.95, sum(rate({METRICS.ATTEMPT_DURATION.prom}[1m])))"
           "  # a single attempt"),
        "1. Retries inflate operation duration: if the retry ratio is up, see "
        "RedlineRetryStorm.\n"
        "2. If concurrency is near the knee, shed load or scale out.\n"
        "3. Long outputs raise latency without saturation: check output token usage."),
    r.ERROR_BUDGET: (
        "Error budget burn",
        "Multi-window multi-burn-rate alert (SRE workbook): the ratio of failed calls "
        "(`error_type` set) burns the `slo.error_ratio` budget fast (page: 14.4x over 1h and "
        "5m, or 6x over 6h and 30m) or slowly (warn, a ticket: 3x over 1d and 2h, or 1x over "
        "3d and 6h). The short window makes the alert stop soon after the errors do.",
        _q(*(f"{q.ERROR_RATIO.format(window=w)}{_T}" for w in ("5m", "1h", "6h", "3d")),
           f"sum by (error_type) (rate({METRICS.REQUESTS.prom}{{error_type!=\"\"}}[5m]))"),
        "1. Break errors down by `error_type`: 429s and timeouts near the knee mean "
        "saturation; 5xx mean a broken server; client errors mean a bad deploy.\n"
        "2. Roll back recent changes; shed load if saturated."),
    r.RETRY_STORM: (
        "Retry storm near the concurrency cap",
        "Retries per finished request over 5m exceed `retry_storm_ratio` while concurrency is "
        "at or above the warn level. Retrying a saturated server adds load exactly when it "
        "has none to spare and can turn a brief overload into an outage.",
        _q(f"{q.RETRY_RATIO}{_T}", f"{q.CONCURRENCY}{_T}",
           f"sum by (redline_attempt_cause) (rate({METRICS.RETRIES.prom}[5m]))"),
        "1. Check the causes: `http_429` and `timeout` mean overload.\n"
        "2. Enable the limiter's retry budget (`limiter.retry_budget_ratio`) or cut client "
        "max_retries; honour Retry-After.\n"
        "3. Shed load until the ratio falls, then find why capacity dropped."),
    r.WORK_CONSERVING: (
        "Limiter not work-conserving",
        "The redline limiter held requests in its queue while fewer than `cap` requests were "
        "in flight for more than `work_conserving_violation_ratio` of the time: capacity "
        "idles while callers wait. A correct limiter admits the next request as soon as a "
        "slot frees.",
        _q(f"{METRICS.LIMITER_QUEUE_DEPTH.prom}", f"{METRICS.LIMITER_IN_FLIGHT.prom}",
           f"{METRICS.LIMITER_CAP.prom}",
           f"rate({METRICS.LIMITER_WORK_CONSERVING_GAP.prom}[1m])"),
        "1. Look for slots held while waiting on something else (tools in the model pool, "
        "cancelled requests not releasing).\n"
        "2. Look for a blocked event loop in the app (admission runs on it).\n"
        "3. File a bug against redline's limiter with the series above."),
    r.GPU: (
        "GPU utilization over ceiling",
        "A GPU of the target has been busy above `gpu_utilization_ceiling` for "
        "`durations.warn`, from redline's NVML gauge or the DCGM exporter "
        "(`DCGM_FI_DEV_GPU_UTIL`, percent). Little headroom is left for a burst.",
        _q(q.gpu_utilization(), f"{q.CONCURRENCY}{_T}"),
        "1. If concurrency is below the knee while the GPU is pegged, the knee has moved "
        "(longer prompts, a different model): re-run `redline sweep`.\n"
        "2. Scale out or move traffic to other GPUs."),
    r.ABSENT: (
        "Telemetry absent",
        "The target reported model-call metrics within `durations.absent_lookback` but none "
        "for `durations.absent`. Either the app stopped (or stopped calling models), its "
        "exporter broke, or the OpenTelemetry Collector or Prometheus' OTLP receiver is down. "
        "While it lasts redline cannot page on saturation for this target. It never fires "
        "for a target that did not report at all in the lookback.",
        _q(f"max(timestamp({METRICS.REQUESTS_IN_FLIGHT.prom}))  # last sample",
           "up  # scrape targets, the Collector's own metrics among them"),
        "1. Is the app running? Is it configured with the Collector's endpoint?\n"
        "2. Is the Collector healthy (`:13133`), and its log free of export errors?\n"
        "3. Is Prometheus started with `--web.enable-otlp-receiver`?"),
    r.FLEET: (
        "Fleet capacity predicted to run out",
        "A linear fit of the target's request rate over `durations.predict_window` exceeds, "
        "within `durations.predict_horizon`, what the whole fleet serves when scaled out to "
        "`planning.max_replicas`: `max_replicas × planning.throughput_per_replica_rps`, the "
        "rate one replica serves at its concurrency target (`planning.target_fraction` of "
        "the knee), written by `redline plan --write`. The autoscaler cannot help past "
        "max_replicas: every replica will run past its knee. It only fires once the rate is "
        "above `planning.fleet_floor_fraction` of that capacity.",
        _q(f"{q.REQUEST_RATE}{_T}", f"{q.REPLICAS}{_T}  # replicas reporting",
           f"{q.REPLICAS_NEEDED}{_T}  # live rate / throughput per replica",
           f"{q.INSTANCE_CONCURRENCY}{_T}  # which replica is hot",
           f"predict_linear({q.REQUEST_RATE}{_T}[10m], 900)"),
        "1. Compare replicas needed with replicas reporting: if the autoscaler is already at "
        "max_replicas, raise `planning.max_replicas` (and the GPU quota behind it), run "
        "`redline plan` and `redline autoscaling`, and apply the result.\n"
        "2. If throughput per replica dropped (longer prompts or outputs), the plan is stale: "
        "re-run `redline sweep` and `redline plan`.\n"
        "3. Otherwise shed or defer non-interactive load before the fleet saturates."),
    r.SESSIONS: (
        "Agent sessions near the measured session capacity",
        "The target's service has at least `warn_fraction` of `saturation_sessions` agent "
        "sessions open, the session knee measured by `redline sweep --unit sessions` with "
        "the app's real turns, tool time and think time. Sessions hold a model call only "
        "part of the time (the duty cycle), so this warns in the unit a product owner plans "
        "with, before the model-call concurrency alert pages. Only generated for targets "
        "with `saturation_sessions` set.",
        _q(f"{q.SESSIONS}{_T}", f"{q.CONCURRENCY}{_T}",
           f"{q.CONCURRENCY}{_T} / {q.SESSIONS}{_T}  # duty cycle now"),
        "1. Compare the duty cycle now with the sweep's: a higher one (longer prompts, "
        "fewer tools) lowers the session capacity; re-run the session sweep.\n"
        "2. Admit fewer new sessions, or add model capacity (the call knee scales with "
        "replicas)."),
}


def runbooks() -> dict[str, str]:
    """Markdown per alert name."""
    out = {}
    for name in r.ALERT_NAMES:
        title, meaning, confirm, act = _BOOKS[name]
        out[name] = (f"# {name}: {title}\n\n## What it means\n\n{meaning}\n\n"
                     f"## Confirm\n\n{confirm}\n\n## What to do\n\n{act}\n")
    return out
