"""Where agents spend their concurrency: PromQL shared by the rules, dashboards and top.

Little's law per pool: the mean number in flight is arrival rate x mean duration. For each
agent, ``redline.agent.activity.in_flight`` counts the model calls and tool calls its open
sessions have in flight, so over a window

    share(activity) = mean activity in flight / mean sessions in flight

is the fraction of session time spent in model calls and in tool calls (slot-seconds per
session-second: above 1 with parallel calls), and ``1 - model - tool`` (at least 0) is the
rest: think time, framework overhead, waiting on anything else. The Little's-law check per
pool (sessions, tool calls, model calls) divides the measured mean in flight by the
``rate x duration`` that the finished calls imply; it sits at 1 unless calls never finish,
a gauge leaks, or the window holds calls still running.
"""

from __future__ import annotations

from redline.semconv import METRICS, Attr, prom_label
from redline_operator.promql import DEFAULT_FRESH_WINDOW, fresh

__all__ = ["SHARE", "THINK_SHARE", "LITTLE", "POOLS", "share", "think_share", "littles_law",
           "recording_rules"]

AGENT = prom_label(Attr.AGENT_NAME)
ACTIVITY = prom_label(Attr.ACTIVITY)

# recording-rule names (level:metric:operations)
SHARE = "redline:agent_time_share:ratio_5m"
THINK_SHARE = "redline:agent_think_share:ratio_5m"
LITTLE = "redline:pool_littles_law:ratio_5m"
SESSIONS = "redline:agent_sessions_in_flight:sum"
# pool -> (in-flight gauge, duration histogram)
POOLS = {"session": (METRICS.SESSIONS_IN_FLIGHT, METRICS.INVOKE_AGENT_DURATION),
         "tool": (METRICS.TOOL_CALLS_IN_FLIGHT, METRICS.EXECUTE_TOOL_DURATION),
         "model": (METRICS.REQUESTS_IN_FLIGHT, METRICS.OPERATION_DURATION)}


def _sel(job: str | None) -> str:
    return f'{{job=~"{job}"}}' if job else ""


def share(job: str | None = None, window: str = "5m") -> str:
    """Per (job, agent, activity): calls in flight / sessions in flight, each summed over the
    same export samples (a ratio of integrals; averages over series that appear at different
    times would divide over different sample counts and read above 1)."""
    s = _sel(job)
    return (f"sum by (job, {AGENT}, {ACTIVITY}) "
            f"(sum_over_time({METRICS.AGENT_ACTIVITY_IN_FLIGHT.prom}{s}[{window}])) "
            f"/ on (job, {AGENT}) group_left () "
            f"(sum by (job, {AGENT}) (sum_over_time({METRICS.SESSIONS_IN_FLIGHT.prom}{s}"
            f"[{window}])) > 0)")


def think_share(job: str | None = None, window: str = "5m") -> str:
    """Per (job, agent): the share of session time in neither model nor tool calls."""
    s = _sel(job)
    sessions = (f"(sum by (job, {AGENT}) (sum_over_time({METRICS.SESSIONS_IN_FLIGHT.prom}{s}"
                f"[{window}])) > 0)")
    busy = (f"(sum by (job, {AGENT}) (sum_over_time({METRICS.AGENT_ACTIVITY_IN_FLIGHT.prom}"
            f"{s}[{window}])) or {sessions} * 0)")
    return f"clamp_min(1 - {busy} / {sessions}, 0)"


def littles_law(pool: str, job: str | None = None, window: str = "5m") -> str:
    """Measured mean in flight / (rate x mean duration) for one pool, per job."""
    gauge, hist = POOLS[pool]
    s = _sel(job)
    return (f"sum by (job) (avg_over_time({gauge.prom}{s}[{window}])) / "
            f"(sum by (job) (histogram_sum(rate({hist.prom}{s}[{window}]))) > 0)")


def recording_rules(fresh_window: str = DEFAULT_FRESH_WINDOW) -> list[dict]:
    """The agent group of ``alerts/agents.rules.yml``; open sessions count live processes
    only (see :func:`redline_operator.promql.fresh`)."""
    open_sessions = fresh(METRICS.SESSIONS_IN_FLIGHT.prom, fresh_window)
    rules = [
        {"record": SESSIONS, "expr": f"sum by (job, {AGENT}) ({open_sessions})"},
        {"record": SHARE, "expr": share()},
        {"record": THINK_SHARE, "expr": think_share()},
    ]
    rules += [{"record": LITTLE, "expr": littles_law(pool), "labels": {"pool": pool}}
              for pool in POOLS]
    return rules


def promtool_tests(rule_file: str = "../agents.rules.yml") -> dict:
    """promtool unit tests of the agent rules: 4 sessions, 1 model and 1 tool call in flight
    give a quarter of session time to each, and half to neither."""
    act = METRICS.AGENT_ACTIVITY_IN_FLIGHT.prom
    base = f'job="app", {AGENT}="triage"'
    return {"rule_files": [rule_file], "evaluation_interval": "15s", "tests": [{
        "name": "agent time shares from the in-flight gauges (Little's law)",
        "interval": "15s",
        "input_series": [
            {"series": f"{METRICS.SESSIONS_IN_FLIGHT.prom}{{{base}, instance=\"a\"}}",
             "values": "3x40"},
            {"series": f"{METRICS.SESSIONS_IN_FLIGHT.prom}{{{base}, instance=\"b\"}}",
             "values": "1x40"},
            {"series": f'{act}{{{base}, {ACTIVITY}="model", instance="a"}}', "values": "1x40"},
            {"series": f'{act}{{{base}, {ACTIVITY}="tool", instance="b"}}', "values": "1x40"},
        ],
        "promql_expr_test": [
            {"expr": SESSIONS, "eval_time": "5m",
             "exp_samples": [{"labels": f"{SESSIONS}{{{base}}}", "value": 4}]},
            {"expr": SHARE, "eval_time": "5m", "exp_samples": [
                {"labels": f'{SHARE}{{{base}, {ACTIVITY}="model"}}', "value": 0.25},
                {"labels": f'{SHARE}{{{base}, {ACTIVITY}="tool"}}', "value": 0.25}]},
            {"expr": THINK_SHARE, "eval_time": "5m",
             "exp_samples": [{"labels": f"{THINK_SHARE}{{{base}}}", "value": 0.5}]},
        ],
    }, {
        # 2 sessions always open, each lasting 10 s: 3 finish every 15 s carrying 30 s of
        # duration, so rate x duration = 2 = the mean in flight, ratio 1; a leaked gauge
        # (one extra session that never ends) reads 1.5
        "name": "Little's law per pool: measured in flight over rate x duration",
        "interval": "15s",
        "input_series": [
            {"series": f'{METRICS.SESSIONS_IN_FLIGHT.prom}{{job="app", {AGENT}="a"}}',
             "values": "2x40"},
            {"series": f'{METRICS.INVOKE_AGENT_DURATION.prom}{{job="app", {AGENT}="a"}}',
             "values": "{{schema:0 sum:0 count:0}}+{{schema:0 sum:30 count:3}}x40"},
            {"series": f'{METRICS.SESSIONS_IN_FLIGHT.prom}{{job="leaky", {AGENT}="a"}}',
             "values": "3x40"},
            {"series": f'{METRICS.INVOKE_AGENT_DURATION.prom}{{job="leaky", {AGENT}="a"}}',
             "values": "{{schema:0 sum:0 count:0}}+{{schema:0 sum:30 count:3}}x40"},
        ],
        "promql_expr_test": [{"expr": f'round({LITTLE}{{pool="session"}}, 0.001)',
                              "eval_time": "8m",
                              "exp_samples": [
                                  {"labels": '{job="app", pool="session"}', "value": 1},
                                  {"labels": '{job="leaky", pool="session"}',
                                   "value": 1.5}]}],
    }]}
