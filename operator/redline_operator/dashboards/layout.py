"""What each dashboard shows and where: rows of panels built from :mod:`.queries`.

Two dashboards:

* ``redline-saturation`` — the question redline answers, in reading order: concurrency
  against p95 (over time, and p95 plotted against concurrency with the knee marked),
  headroom per target, Little's law, then latency, TTFT, throughput, errors and retries.
* ``redline-capacity`` — where the pressure sits: limiter queue and admissions, agent
  sessions and tool calls, client in-flight against the server's running and waiting
  requests, and the GPU (redline's NVML reader or DCGM exporter).

Thresholds (saturation, warn and page concurrency, SLOs) come from ``redline.yaml`` only.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from redline.config import Config, Target
from redline.semconv import METRICS, Attr, prom_label
from redline_operator.alerts import rules as r
from redline_operator.dashboards import queries as q
from redline_operator.dashboards.builder import (
    LEVEL_COLORS,
    Annotation,
    Mark,
    Row,
    assemble,
    datasource,
    gauge_panel,
    link,
    timeseries_panel,
    xy_panel,
)

__all__ = ["build_all", "saturation_dashboard", "capacity_dashboard"]

_LEVELS = ("saturation", "page", "warn")


def build_all(cfg: Config) -> dict[str, dict]:
    """Every dashboard as ``{file name: JSON model}``."""
    return {"redline-saturation.json": saturation_dashboard(cfg),
            "redline-capacity.json": capacity_dashboard(cfg)}


def _variables(cfg: Config, server: bool = False) -> list:
    in_flight = METRICS.REQUESTS_IN_FLIGHT.prom
    model = prom_label(Attr.REQUEST_MODEL)

    def query_var(name: str, label: str, query: str):
        return (db.QueryVariable(name).label(label).query(query).datasource(datasource())
                .multi(True).include_all(True).all_value(".*")
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
                .current(dm.VariableOption(selected=True, text="All", value="$__all")))

    first = cfg.targets[0].name
    target = (db.CustomVariable("target").label("target")
              .description("A target of redline.yaml: its match selector and thresholds.")
              .values(",".join(t.name for t in cfg.targets))
              .current(dm.VariableOption(selected=True, text=first, value=first))
              .options([dm.VariableOption(selected=t.name == first, text=t.name, value=t.name)
                        for t in cfg.targets]))
    variables = [
        query_var("job", "service", f"label_values({in_flight}, job)"),
        query_var("model", "model", f'label_values({in_flight}{{job=~"$job"}}, {model})'),
        target,
    ]
    if server:
        variables.append(query_var("server_job", "inference server",
                                   f"label_values({q.VLLM_RUNNING}, job)"))
    return variables


def _headroom_gauge(cfg: Config, t: Target):
    page, warn = round(1 - t.page_fraction, 3), round(1 - t.warn_fraction, 3)
    return gauge_panel(
        f"Headroom — {t.name}",
        f"1 − concurrency / saturation ({t.saturation_concurrency:g}), now, from the recorded "
        f"concurrency the alerts evaluate. Orange below {warn:.0%} (warn at "
        f"{t.warn_concurrency:g} in flight), red below {page:.0%} (page at "
        f"{t.page_concurrency:g}).",
        q.headroom(t), steps=[(None, "red"), (page, "orange"), (warn, "green")],
        min_val=-0.5, height=8, links=runbooks(cfg, r.CONCURRENCY))


def runbooks(cfg: Config, *alerts: str) -> list:
    """Panel links to the runbooks of ``alerts`` (the same URLs as their runbook_url)."""
    base = cfg.runbook_base_url.rstrip("/")
    return [link(f"Runbook: {a}", f"{base}/{a}.md") for a in alerts]


def _dashboard_links(other_uid: str, other_title: str) -> list:
    return [link(other_title, f"/d/{other_uid}", dashboard=True)]


def _annotations(cfg: Config) -> list[Annotation]:
    """Firing alerts of the selected target: warn orange, page red (as the thresholds)."""
    return [Annotation(f"redline {sev} alerts — $target", q.firing_alerts(sev),
                       LEVEL_COLORS[sev], q.ALERT_TAG_KEYS, cfg.evaluation_interval)
            for sev in ("warn", "page")]


def _slo_panel(cfg: Config, title: str, description: str, alerted: list[q.Query],
               lines: list[q.Query], finer: list[q.Query], *, unit: str, alerts: tuple,
               width: int = 12):
    panel = timeseries_panel(title, description, [*alerted, *lines, *finer], unit=unit,
                             width=width, links=runbooks(cfg, *alerts))
    for line in lines:
        panel.override_by_name(line.legend, _slo_props())
    for f in finer:
        panel.override_by_name(f.legend, _finer_props())
    return panel


def saturation_dashboard(cfg: Config) -> dict:
    """The lead dashboard: is concurrency near the knee, and does p95 show it yet?"""
    ts = cfg.targets
    levels = [q.target_level(ts, lvl) for lvl in _LEVELS]
    fresh = cfg.fresh_window
    gauges = [_headroom_gauge(cfg, t) for t in ts]
    for g in gauges:
        g.span(max(3, 12 // len(ts)))
    fast = q.rules.BURN_RATES[0]  # ("page", 14.4, "1h", "5m")
    raw_p95 = q.target_p95_raw(ts)
    lead = timeseries_panel(
        "Concurrency vs p95 latency",
        "In-flight model calls (left axis) against p95 end-to-end latency over 1m (right "
        "axis) of the selected target: the recording rules its alerts evaluate. Dashed "
        "lines: warn, page and saturation concurrency from redline.yaml. Thin: p95 from raw "
        "series over $__rate_interval (finer, not what the alert sees). p95 turning upward "
        "as in-flight nears saturation is the knee.",
        [q.target_concurrency(), q.target_p95(), *levels, raw_p95], unit="short",
        right_axis={"p95": "s", raw_p95.legend: "s"}, levels=_LEVELS, width=12, height=10,
        links=runbooks(cfg, r.CONCURRENCY, r.PREDICTED, r.LATENCY))
    lead.override_by_name(raw_p95.legend, _finer_props())
    knee = xy_panel(
        "p95 against concurrency (the knee)",
        "Each point is one instant of the selected target: x = calls in flight, y = p95 "
        "latency over 1m (the recording rules the alerts evaluate). Dashed vertical lines: "
        "the warn, page and saturation concurrency of redline.yaml, each its own legend "
        "entry. The knee is where the cloud bends upward.",
        x=q.target_concurrency(), y=q.target_p95(), name="p95 at that concurrency",
        # Names share no first or last word: Grafana's autoNameSeries strips those.
        marks=[Mark(name, q.target_level(ts, lvl, f"{lvl} at"),
                    q.target_p95_where_in_flight(lvl),
                    LEVEL_COLORS[lvl])
               for lvl, name in (("warn", "warn"), ("page", "page"),
                                 ("saturation", "saturation (knee)"))],
        x_label="calls in flight", y_label="p95 latency (1m)", width=12, height=10,
        links=runbooks(cfg, r.CONCURRENCY))
    rows = [
        Row("Concurrency vs p95 — $target", [lead, knee]),
        Row("Replicas — $target", [
            timeseries_panel(
                "In flight by replica",
                "In-flight model calls of the selected target per process (service.name and "
                "service.instance.id): which replica is hot. They sum to the concurrency "
                f"above. A process that stops exporting (killed, scaled in) leaves within "
                f"{fresh} (2 export intervals), so the dead never add phantom load.",
                [q.target_concurrency_by_instance(ts, fresh)], unit="short",
                width=24, height=7),
        ]),
        Row("Headroom and Little's law", [
            *gauges,
            timeseries_panel(
                "Little's law check",
                "Measured mean in-flight (L) against throughput × mean latency (λW) over "
                "$job/$model. They agree when every started call finishes and is counted; a "
                "persistent gap means lost calls or a leaking in-flight gauge.",
                q.littles_law(), unit="short", width=12),
        ]),
        Row("Latency — $target as alerted, finer views over $job/$model", [
            _slo_panel(
                cfg, "Latency p95 against the SLO",
                "p95 end-to-end duration of the selected target over 1m (the recording rule "
                "RedlineLatencyOverSLO evaluates), retries included, against the target's SLO "
                "(dashed). Thin: p50/p95/p99 over $job/$model from raw series over "
                "$__rate_interval (finer, not alerted on).",
                [q.target_p95("p95 (1m, alerted)")],
                [q.target_constant(ts, lambda t: t.slo.latency_p95_seconds, "SLO p95")],
                q.latency_quantiles(suffix=f" ({q.RAW})"), unit="s", alerts=(r.LATENCY,)),
            _slo_panel(
                cfg, "Time to first chunk p95 against the SLO",
                "p95 TTFT of the selected target's streamed calls over 1m (the recording rule "
                "RedlineTTFTOverSLO evaluates) against its TTFT SLO (dashed). Thin: "
                "p50/p95/p99 over $job/$model from raw series (finer, not alerted on).",
                [q.target_ttft_p95("TTFT p95 (1m, alerted)")],
                [q.target_constant(ts, lambda t: t.slo.ttft_p95_seconds, "SLO TTFT p95")],
                q.latency_quantiles(METRICS.TIME_TO_FIRST_CHUNK, suffix=f" ({q.RAW})"),
                unit="s", alerts=(r.TTFT,)),
            timeseries_panel("p95 by model",
                             f"p95 end-to-end latency per requested model over $job/$model "
                             f"({q.RAW} series over $__rate_interval).",
                             [q.latency_p95_by_model()], unit="s", width=24, height=7),
        ]),
        Row("Throughput, errors and retries", [
            timeseries_panel("Throughput", "Finished model calls per second by outcome.",
                             q.throughput_by_outcome(), unit="reqps", width=8),
            _slo_panel(
                cfg, "Error ratio against the SLO",
                f"Failed / finished model calls of the selected target over {fast[3]} and "
                f"{fast[2]} (the recording rules the burn-rate alerts "
                f"evaluate; empty while no call fails) against the target's SLO error ratio "
                f"and the fast-burn page level ({fast[1]:g}× the SLO over both windows). "
                f"Thin: the ratio over $job/$model from raw series (finer).",
                [q.target_error_ratio(fast[3], f"error ratio {fast[3]} (alerted)"),
                 q.target_error_ratio(fast[2], f"error ratio {fast[2]} (alerted)")],
                [q.target_constant(ts, lambda t: t.slo.error_ratio, "SLO"),
                 q.target_constant(ts, lambda t: fast[1] * t.slo.error_ratio,
                                   f"page: {fast[1]:g}× SLO")],
                [q.error_ratio(f"error ratio ({q.RAW})")], unit="percentunit",
                alerts=(r.ERROR_BUDGET,), width=8),
            _retries_panel(cfg),
        ]),
    ]
    return assemble(uid="redline-saturation", title="redline / saturation",
                    description="How close each target is to its saturation point, and whether "
                                "latency shows it yet.",
                    tags=["redline", "generated"], variables=_variables(cfg), rows=rows,
                    annotations=_annotations(cfg),
                    links=_dashboard_links("redline-capacity", "redline / capacity"))


def _retries_panel(cfg: Config):
    ts = cfg.targets
    storm = q.target_constant(ts, lambda t: t.retry_storm_ratio, "retry storm level")
    per_call = q.target_retry_ratio("retries per call (5m, alerted)")
    panel = timeseries_panel(
        "Retries by cause",
        "Retries per second over $job/$model by the cause of the attempt before them "
        "(http_429, http_5xx, timeout, connection_error; raw series). Right axis: retries "
        "per finished call of the selected target over 5m (the recording rule "
        "RedlineRetryStorm evaluates) against its storm level (dashed) — a retry storm "
        "multiplies load.",
        [q.retries_by_cause(f" ({q.RAW})"), per_call, storm], unit="reqps",
        right_axis={per_call.legend: "percentunit", storm.legend: "percentunit"}, width=8,
        links=runbooks(cfg, r.RETRY_STORM))
    panel.override_by_name(storm.legend, _slo_props())
    return panel


def _slo_props() -> list[dm.DynamicConfigValue]:
    return [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
            dm.DynamicConfigValue(id_val="custom.lineStyle",
                                  value={"fill": "dash", "dash": [10, 10]}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0)]


def _finer_props() -> list[dm.DynamicConfigValue]:
    """Finer (raw, not alerted) views: thin and faint next to what the alert evaluates."""
    return [dm.DynamicConfigValue(id_val="custom.lineWidth", value=1),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0)]


def capacity_dashboard(cfg: Config) -> dict:
    """Where the load sits: limiter, agents and tools, server queue, GPU."""
    rows = [
        Row("Limiter", [
            timeseries_panel("Limiter slots and queue",
                             "Slots held against the cap, and requests queued for a slot. "
                             "Empty unless redline.Limiter is enabled.",
                             q.limiter_occupancy(), unit="short", width=12,
                             links=runbooks(cfg, r.WORK_CONSERVING)),
            timeseries_panel("Admissions and rejections",
                             "Requests admitted to a slot, and refused or shed by reason.",
                             q.limiter_flow(), unit="reqps", width=12),
        ]),
        Row("Agents, tools and the server", [
            timeseries_panel("Agent sessions and tool calls in flight",
                             "Open agent sessions and running tool calls by name.",
                             q.agents_and_tools(cfg.fresh_window), unit="short", width=12),
            timeseries_panel("Client in-flight vs server running / waiting",
                             "What clients ($job/$model) have in flight against what the "
                             "inference server (vLLM or `redline sim`, scrape job $server_job) "
                             "runs in its batch and queues: they agree (in-flight = running + "
                             "waiting) unless calls wait in front of the engine. Waiting > 0 "
                             "means the server is saturated: latency now grows with load.",
                             q.client_vs_server(cfg.fresh_window), unit="short", width=12),
        ]),
        Row("Replicas (capacity plan) — $target", [
            timeseries_panel("Concurrency per replica",
                             "In-flight model calls of each replica (instance) of the "
                             "selected target against its concurrency target "
                             "(planning.target_fraction of the knee): the autoscaler adds a "
                             "replica when every replica is at its target.",
                             q.plan_concurrency_per_replica(cfg.targets), unit="short",
                             width=12, links=runbooks(cfg, r.FLEET)),
            timeseries_panel("Replicas needed now vs reporting",
                             "Replicas reporting (instances with in-flight series) against "
                             "ceil(live request rate / planning.throughput_per_replica_rps), "
                             "and the plan's min_replicas / max_replicas (`redline plan`). "
                             "Needed above max_replicas: the fleet does not fit.",
                             q.plan_replicas(cfg.targets), unit="short", width=12,
                             links=runbooks(cfg, r.FLEET)),
        ]),
        Row("Where agents spend their concurrency", [
            timeseries_panel("Where agents spend their concurrency",
                             "For each agent, the share of its session time spent in model "
                             "calls, in tool calls and in neither (think time), from the "
                             "in-flight gauges by Little's law: mean calls in flight / mean "
                             "sessions in flight. A large tool share in a capped model pool "
                             "means slots held while waiting on tools.",
                             q.agent_concurrency_split(), unit="percentunit", width=12),
            timeseries_panel("Little's law per pool",
                             "Measured mean in flight / (rate x mean duration) for agent "
                             "sessions, tool calls and model calls: 1 when every call that "
                             "starts also finishes and is recorded.",
                             q.agent_littles_law(), unit="short", width=12),
        ]),
        Row("Inference server (vLLM V1 metrics, or `redline sim`)", [
            timeseries_panel("Server KV cache usage",
                             "Share of the server's KV cache in use (vllm:kv_cache_usage_perc). "
                             "Near 100 % vLLM preempts running sequences and latency jumps.",
                             [q.server_kv_cache()], unit="percentunit", width=6),
            timeseries_panel("Server queue time p50 / p95",
                             "Time requests wait in the server's queue before they run "
                             "(vllm:request_queue_time_seconds). Above zero: past the knee.",
                             q.server_queue_time(), unit="s", width=6),
            timeseries_panel("TTFT: client vs server p95",
                             "Client TTFT p95 (redline) against the server's own "
                             "(vllm:time_to_first_token_seconds). The gap is HTTP, SSE and "
                             "API-server overhead.",
                             q.client_vs_server_ttft(), unit="s", width=6),
            timeseries_panel("Inter-token latency p95 and preemptions",
                             "One decode step, p95 (vllm:inter_token_latency_seconds; it "
                             "replaces the hidden vllm:time_per_output_token_seconds), and "
                             "preemptions per second (right axis).",
                             q.server_itl_and_preemptions(), unit="s",
                             right_axis={"server preemptions/s": "short"}, width=6),
        ]),
        Row("GPU (NVML or DCGM exporter)", [
            timeseries_panel("GPU utilization",
                             "Busy fraction per GPU (instance, gpu), from redline's NVML "
                             "reader or DCGM. Empty without a GPU.",
                             [q.gpu_utilization()], unit="percentunit", width=8,
                             links=runbooks(cfg, r.GPU)),
            timeseries_panel("GPU memory", "Memory used and total per GPU (instance, gpu).",
                             q.gpu_memory(), unit="bytes", width=8),
            timeseries_panel("GPU power", "Power draw per GPU (instance, gpu).",
                             [q.gpu_power()], unit="watt", width=8),
        ]),
    ]
    return assemble(uid="redline-capacity", title="redline / capacity",
                    description="Where the pressure sits: limiter, agents and tools, server "
                                "queue and GPU.",
                    tags=["redline", "generated"],
                    variables=_variables(cfg, server=True), rows=rows,
                    annotations=_annotations(cfg),
                    links=_dashboard_links("redline-saturation", "redline / saturation"))
