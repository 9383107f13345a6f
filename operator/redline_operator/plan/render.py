"""A plan as a table (numbers and the formula or source of each) or as JSON.

Example::

    Console().print(plan_table(plan))
"""

from __future__ import annotations

import json

from rich.table import Table
from rich.text import Text

from redline_operator.plan.plan import TargetPlan

__all__ = ["plan_table", "plan_json"]


def _rps(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g} req/s"


class _PlainRows:
    """Adds rows of plain text: ``targets[sim]`` in a formula is not rich markup."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def add_row(self, *cells: str) -> None:
        self.table.add_row(*(Text(c) for c in cells))


def plan_table(plan: TargetPlan, *, now_hint: bool = True) -> Table:
    """Rows of (quantity, value, formula or source); ``now_hint``: without live numbers,
    say how to get them."""
    table = Table(title=f"redline plan — target {plan.target!r}", title_justify="left")
    for col, just in (("quantity", "left"), ("value", "right"), ("formula / source", "left")):
        table.add_column(col, justify=just, overflow="fold")

    t = _PlainRows(table)
    fm = plan.formulas
    t.add_row("knee (saturation_concurrency)", f"{plan.knee:g}",
              f"redline.yaml targets[{plan.target}]")
    t.add_row("concurrency target per replica", str(plan.concurrency_target),
              fm["concurrency_target"])
    t.add_row("throughput per replica", _rps(plan.throughput_per_replica_rps),
              plan.throughput_source)
    if plan.latency_s is not None:
        t.add_row("mean latency at the target", f"{plan.latency_s:.3g} s", "same source")
    if "peak_rps" in fm:
        t.add_row("peak users", f"{plan.peak_users:g}", f"think time {plan.think_time_s:g} s")
    t.add_row("baseline traffic", _rps(plan.baseline_rps), plan.traffic_source)
    t.add_row("peak traffic", _rps(plan.peak_rps), fm.get("peak_rps", plan.traffic_source))
    t.add_row("min replicas", str(plan.min_replicas), fm["min_replicas"])
    t.add_row("max replicas", str(plan.max_replicas), fm["max_replicas"])
    if plan.instances_for_users is not None:
        t.add_row("instances, seed note 000 (1 request/user/s)", f"{plan.instances_for_users:.3g}",
                  fm["instances_for_users"])
    now = plan.now
    if now is None:
        if now_hint:
            t.add_row("headroom now", "–", "pass --prometheus URL for live numbers")
    else:
        t.add_row("request rate now", _rps(now.rate_rps), "Prometheus, rate over 1m")
        t.add_row("replicas reporting now", "–" if now.replicas is None else str(now.replicas),
                  "distinct instance labels of the target's in-flight series")
        if now.concurrency is not None and now.replicas:
            t.add_row("in flight per replica now", f"{now.concurrency / now.replicas:.3g}",
                      f"{now.concurrency:.3g} in flight / {now.replicas} replicas "
                      f"(target {plan.concurrency_target})")
        t.add_row("replicas needed now",
                  "–" if plan.replicas_needed_now is None else str(plan.replicas_needed_now),
                  fm.get("replicas_needed_now", "no request rate"))
        t.add_row("headroom now",
                  "–" if plan.headroom_now is None else f"{plan.headroom_now:.0%}",
                  fm.get("headroom_now", "no replicas reporting"))
    return table


def plan_json(plans: list[TargetPlan]) -> str:
    return json.dumps({"generated_by": "redline plan", "format": 1,
                       "targets": [p.to_dict() for p in plans]}, indent=2) + "\n"
