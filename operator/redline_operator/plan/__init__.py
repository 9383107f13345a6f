"""Capacity planning: from the knee to replicas (``redline plan``).

* :mod:`~redline_operator.plan.formulas` -- the notes' formulas (seed notes 000 and 004);
* :mod:`~redline_operator.plan.sources` -- throughput per replica from a sweep's
  results.json or live Prometheus data, traffic from Prometheus;
* :mod:`~redline_operator.plan.plan` -- one target's plan, every number with its formula;
* :mod:`~redline_operator.plan.render` -- the table and JSON;
* :mod:`~redline_operator.plan.write` -- the plan's numbers into ``redline.yaml``.

Example::

    from redline_operator.plan import TrafficInput, build_plan, throughput_from_results
    target = cfg.target("sim")
    measured = throughput_from_results(Path("sweep-out/results.json"), target.concurrency_target)
    plan = build_plan(target, measured, TrafficInput(baseline_rps=25, peak_rps=80))
"""

from redline_operator.plan.formulas import (
    concurrency_target,
    instances_for_users,
    max_replicas,
    min_replicas,
    peak_rps_from_users,
)
from redline_operator.plan.plan import TargetPlan, TrafficInput, build_plan
from redline_operator.plan.sources import (
    Measured,
    Now,
    PlanError,
    now_from_prometheus,
    throughput_from_prometheus,
    throughput_from_results,
    traffic_from_prometheus,
)

__all__ = ["Measured", "Now", "PlanError", "TargetPlan", "TrafficInput", "build_plan",
           "concurrency_target", "instances_for_users", "max_replicas", "min_replicas",
           "now_from_prometheus", "peak_rps_from_users", "throughput_from_prometheus",
           "throughput_from_results", "traffic_from_prometheus"]
