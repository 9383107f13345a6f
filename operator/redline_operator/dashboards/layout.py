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
from redline_operator.dashboards import queries as q
from redline_operator.dashboards.builder import (
    Row,
    assemble,
    datasource,
    gauge_panel,
    timeseries_panel,
    xy_panel,
)

__all__ = ["build_all", "saturation_dashboard", "capacity_dashboard"]

_LEVELS = ("saturation", "page", "warn")


def build_all(cfg: Config) -> dict[str, dict]:
    """Every dashboard as ``{file name: JSON model}``."""
    return {"redline-saturation.json": saturation_dashboard(cfg),
            "redline-capacity.json": capacity_dashboard(cfg)}


def _variables(cfg: Config) -> list:
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
    return [
        query_var("job", "service", f"label_values({in_flight}, job)"),
        query_var("model", "model", f'label_values({in_flight}{{job=~"$job"}}, {model})'),
        target,
    ]


def _headroom_gauge(t: Target):
    page, warn = round(1 - t.page_fraction, 3), round(1 - t.warn_fraction, 3)
    return gauge_panel(
        f"Headroom — {t.name}",
        f"1 − concurrency / saturation ({t.saturation_concurrency:g}). Orange below "
        f"{warn:.0%} (warn at {t.warn_concurrency:g} in flight), red below {page:.0%} "
        f"(page at {t.page_concurrency:g}).",
        q.headroom(t), steps=[(None, "red"), (page, "orange"), (warn, "green")],
        min_val=-0.5, height=8)


def saturation_dashboard(cfg: Config) -> dict:
    """The lead dashboard: is concurrency near the knee, and does p95 show it yet?"""
    ts = cfg.targets
    levels = [q.target_level(ts, lvl) for lvl in _LEVELS]
    slo_p95 = min(t.slo.latency_p95_seconds for t in ts)
    slo_ttft = min(t.slo.ttft_p95_seconds for t in ts)
    gauges = [_headroom_gauge(t) for t in ts]
    for g in gauges:
        g.span(max(3, 12 // len(ts)))
    rows = [
        Row("Concurrency vs p95 — $target", [
            timeseries_panel(
                "Concurrency vs p95 latency",
                "In-flight model calls (left axis) against p95 end-to-end latency (right axis) "
                "for the selected target. Dashed lines: warn, page and saturation concurrency "
                "from redline.yaml. p95 turning upward as in-flight nears saturation is the knee.",
                [q.target_concurrency(ts), q.target_p95(ts), *levels], unit="short",
                right_axis={"p95": "s"}, levels=_LEVELS, width=12, height=10),
            xy_panel(
                "p95 against concurrency (the knee)",
                "Each point is one instant: x = calls in flight, y = p95 latency. Vertical "
                "markers at the warn, page and saturation concurrency of redline.yaml; the "
                "knee is where the cloud bends upward.",
                [q.target_concurrency(ts), q.target_p95(ts), *levels],
                x="in-flight", y="p95", markers=_LEVELS, width=12, height=10),
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
        Row("Latency", [
            timeseries_panel("Latency p50 / p95 / p99",
                             "End-to-end model-call duration, retries included. Dashed: the "
                             f"tightest latency SLO ({slo_p95:g} s p95).",
                             [*q.latency_quantiles(), _slo("SLO p95", slo_p95)], unit="s",
                             levels=(), width=12).override_by_name(
                                 "SLO p95", _slo_props()),
            timeseries_panel("Time to first chunk p50 / p95 / p99",
                             f"TTFT of streamed calls. Dashed: TTFT SLO ({slo_ttft:g} s p95).",
                             [*q.latency_quantiles(METRICS.TIME_TO_FIRST_CHUNK),
                              _slo("SLO p95", slo_ttft)], unit="s",
                             width=12).override_by_name("SLO p95", _slo_props()),
            timeseries_panel("p95 by model", "p95 end-to-end latency per requested model.",
                             [q.latency_p95_by_model()], unit="s", width=24, height=7),
        ]),
        Row("Throughput, errors and retries", [
            timeseries_panel("Throughput", "Finished model calls per second by outcome.",
                             q.throughput_by_outcome(), unit="reqps", width=8),
            timeseries_panel("Error ratio",
                             "Failed / finished model calls. Dashed: the tightest error SLO.",
                             [q.error_ratio(),
                              _slo("SLO", min(t.slo.error_ratio for t in ts))],
                             unit="percentunit", width=8).override_by_name("SLO", _slo_props()),
            timeseries_panel("Retries by cause",
                             "Retries per second, by the cause of the attempt before them "
                             "(http_429, http_5xx, timeout, connection_error); right axis: "
                             "retries per finished call — a retry storm multiplies load.",
                             [q.retries_by_cause(), q.retry_ratio()], unit="short",
                             right_axis={"retries per call": "percentunit"}, width=8),
        ]),
    ]
    return assemble(uid="redline-saturation", title="redline / saturation",
                    description="How close each target is to its saturation point, and whether "
                                "latency shows it yet.",
                    tags=["redline", "generated"], variables=_variables(cfg), rows=rows,
                    annotation_expr=q.firing_alerts())


def _slo(name: str, value: float) -> q.Query:
    return q.Query(f"vector({value:g})", name)


def _slo_props() -> list[dm.DynamicConfigValue]:
    return [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
            dm.DynamicConfigValue(id_val="custom.lineStyle",
                                  value={"fill": "dash", "dash": [10, 10]}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0)]


def capacity_dashboard(cfg: Config) -> dict:
    """Where the load sits: limiter, agents and tools, server queue, GPU."""
    rows = [
        Row("Limiter", [
            timeseries_panel("Limiter slots and queue",
                             "Slots held against the cap, and requests queued for a slot. "
                             "Empty unless redline.Limiter is enabled.",
                             q.limiter_occupancy(), unit="short", width=12),
            timeseries_panel("Admissions and rejections",
                             "Requests admitted to a slot, and refused or shed by reason.",
                             q.limiter_flow(), unit="reqps", width=12),
        ]),
        Row("Agents, tools and the server", [
            timeseries_panel("Agent sessions and tool calls in flight",
                             "Open agent sessions and running tool calls by name.",
                             q.agents_and_tools(), unit="short", width=12),
            timeseries_panel("Client in-flight vs server running / waiting",
                             "What clients have in flight against what the inference server "
                             "(vLLM or `redline sim`) runs in its batch and queues: they agree "
                             "(in-flight = running + waiting) unless calls wait in front of "
                             "the engine. Waiting > 0 means the server is saturated: latency "
                             "now grows with load.",
                             q.client_vs_server(), unit="short", width=12),
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
                             "Busy fraction per GPU, from redline's NVML reader or DCGM. "
                             "Empty without a GPU.",
                             [q.gpu_utilization()], unit="percentunit", width=8),
            timeseries_panel("GPU memory", "Memory used and total per GPU.",
                             q.gpu_memory(), unit="bytes", width=8),
            timeseries_panel("GPU power", "Power draw per GPU.", [q.gpu_power()],
                             unit="watt", width=8),
        ]),
    ]
    return assemble(uid="redline-capacity", title="redline / capacity",
                    description="Where the pressure sits: limiter, agents and tools, server "
                                "queue and GPU.",
                    tags=["redline", "generated"], variables=_variables(cfg), rows=rows,
                    annotation_expr=q.firing_alerts())
