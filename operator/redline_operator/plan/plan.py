"""One target's capacity plan: concurrency target, throughput per replica, replica counts.

Example::

    plan = build_plan(cfg.target("sim"), measured, TrafficInput(baseline_rps=25, peak_rps=80))
    print(plan.min_replicas, plan.max_replicas)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from redline.config import Target
from redline_operator.plan import formulas as f
from redline_operator.plan.sources import Measured, Now, PlanError

__all__ = ["TrafficInput", "TargetPlan", "build_plan"]


def _pair(a: float, b: float, digits: int) -> tuple[str, str]:
    """``a`` and ``b`` to ``digits`` significant digits, or more until they read differently.

    A rate and a throughput that round to the same figure would print a plan that reads
    "one replica serves 7.97 req/s: your peak of 7.97 req/s needs 2 replicas".
    """
    for d in range(digits, 10):
        sa, sb = f"{a:.{d}g}", f"{b:.{d}g}"
        if a == b or sa != sb:
            break
    return sa, sb


@dataclass(frozen=True)
class TrafficInput:
    """The traffic to plan for: rates, or peak users with think time (seed note 000)."""

    baseline_rps: float | None = None
    peak_rps: float | None = None
    peak_users: float | None = None
    think_time_s: float = 0.0
    latency_s: float | None = None  # overrides the measured latency at the target
    source: str = "command line"


@dataclass
class TargetPlan:
    """Every number of a plan, each with the formula or source it came from."""

    target: str
    knee: float
    target_fraction: float
    concurrency_target: int
    throughput_per_replica_rps: float
    throughput_source: str
    latency_s: float | None
    baseline_rps: float
    peak_rps: float
    traffic_source: str
    redundancy: int
    buffer: int
    min_replicas: int
    max_replicas: int
    peak_users: float | None = None
    think_time_s: float | None = None
    instances_for_users: float | None = None
    now: Now | None = None
    replicas_needed_now: int | None = None
    headroom_now: float | None = None
    formulas: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        """The plan in one sentence, for the demo and the end of the table."""
        need = f.replicas_for(self.peak_rps, self.throughput_per_replica_rps)
        thr, peak = _pair(self.throughput_per_replica_rps, self.peak_rps, 3)
        return (f"With {self.concurrency_target} in flight per replica "
                f"({self.target_fraction:.0%} of the knee at {self.knee:g}) one replica "
                f"serves {thr} req/s: your peak of {peak} req/s needs "
                f"{need} replica{'s' * (need != 1)} "
                f"(max_replicas {self.max_replicas} with a buffer of {self.buffer}); "
                f"baseline {self.baseline_rps:.3g} req/s: min_replicas {self.min_replicas}.")


def _traffic(traffic: TrafficInput, measured: Measured) -> tuple[float, float, float | None,
                                                                   float | None]:
    """(baseline, peak, latency used, seed-000 instances) from the traffic input."""
    latency, instances = None, None
    peak = traffic.peak_rps
    if traffic.peak_users is not None:
        if traffic.peak_rps is not None:
            raise PlanError("give --peak-rps or --peak-users, not both")
        latency = traffic.latency_s if traffic.latency_s is not None else measured.latency_s
        if latency is None:
            raise PlanError("--peak-users needs the mean latency at the concurrency target: "
                            "the source has none, pass --latency SECONDS")
        try:
            peak = f.peak_rps_from_users(traffic.peak_users, latency, traffic.think_time_s)
        except ValueError as exc:
            raise PlanError(f"--peak-users/--think-time: {exc}") from None
        instances = f.instances_for_users(traffic.peak_users, latency,
                                          measured.throughput_rps)
    if peak is None:
        raise PlanError("no peak traffic: pass --peak-rps, --peak-users with --think-time, "
                        "or --prometheus URL with --traffic-window 7d")
    if traffic.baseline_rps is None:
        raise PlanError("no baseline traffic: pass --baseline-rps, or --prometheus URL with "
                        "--traffic-window 7d")
    if traffic.baseline_rps < 0 or not peak > 0:
        raise PlanError(f"traffic must be baseline >= 0 and peak > 0 req/s, got baseline "
                        f"{traffic.baseline_rps:g} and peak {peak:g}")
    if traffic.baseline_rps > peak:
        raise PlanError(f"the baseline ({traffic.baseline_rps:g} req/s) is above the peak "
                        f"({peak:g} req/s)")
    return traffic.baseline_rps, peak, latency, instances


def build_plan(target: Target, measured: Measured, traffic: TrafficInput,
               now: Now | None = None) -> TargetPlan:
    """The plan of ``target`` from its measured throughput and the traffic to serve.

    Raises:
        PlanError: the throughput is not positive or the traffic is incomplete.
    """
    p = target.planning
    thr = measured.throughput_rps
    if not thr > 0:
        raise PlanError(f"throughput per replica from {measured.source} is {thr:g} req/s; "
                        f"expected > 0")
    conc = target.concurrency_target
    baseline, peak, users_latency, instances = _traffic(traffic, measured)
    lo = f.min_replicas(baseline, thr, p.redundancy)
    hi = f.max_replicas(peak, thr, p.buffer)
    notes = []
    if hi < lo:
        notes.append(f"max_replicas {hi} was below min_replicas {lo} (buffer {p.buffer} < "
                     f"redundancy {p.redundancy}); raised to {lo}")
        hi = lo
    if measured.knee is not None and abs(measured.knee - target.saturation_concurrency) > 1e-9:
        notes.append(f"the sweep found its knee at {measured.knee:g}, redline.yaml says "
                     f"{target.saturation_concurrency:g}; the plan uses redline.yaml (run "
                     f"`redline sweep --write-threshold` to adopt the sweep's)")
    base_s, thr_b = _pair(baseline, thr, 4)
    peak_s, thr_p = _pair(peak, thr, 4)
    formulas = {
        "concurrency_target": f"floor({p.target_fraction:g} × {target.saturation_concurrency:g})"
                              f" = {conc}   (planning.target_fraction × saturation_concurrency)",
        "min_replicas": f"ceil({base_s} / {thr_b}) + {p.redundancy} = {lo}   "
                        f"({f.MIN_FORMULA})",
        "max_replicas": f"ceil({peak_s} / {thr_p}) + {p.buffer} = "
                        f"{f.max_replicas(peak, thr, p.buffer)}   ({f.MAX_FORMULA})",
    }
    if traffic.peak_users is not None:
        formulas["peak_rps"] = (f"{traffic.peak_users:g} / ({users_latency:.4g} + "
                                f"{traffic.think_time_s:g}) = {peak:.4g}   ({f.USERS_FORMULA})")
        formulas["instances_for_users"] = (
            f"{traffic.peak_users:g} × {users_latency:.4g} / {thr:.4g} = {instances:.4g}   "
            f"(seed note 000: {f.INSTANCES_FORMULA})")
    plan = TargetPlan(
        target=target.name, knee=target.saturation_concurrency,
        target_fraction=p.target_fraction, concurrency_target=conc,
        throughput_per_replica_rps=thr, throughput_source=f"{measured.source}: {measured.how}",
        latency_s=users_latency if users_latency is not None else measured.latency_s,
        baseline_rps=baseline, peak_rps=peak, traffic_source=traffic.source,
        redundancy=p.redundancy, buffer=p.buffer, min_replicas=lo, max_replicas=hi,
        peak_users=traffic.peak_users,
        think_time_s=traffic.think_time_s if traffic.peak_users is not None else None,
        instances_for_users=instances, formulas=formulas, notes=notes)
    if now is not None:
        _add_now(plan, now)
    return plan


def _add_now(plan: TargetPlan, now: Now) -> None:
    plan.now = now
    thr = plan.throughput_per_replica_rps
    if now.rate_rps is None:
        return
    plan.replicas_needed_now = f.replicas_for(now.rate_rps, thr)
    rate_s, thr_s = _pair(now.rate_rps, thr, 4)
    plan.formulas["replicas_needed_now"] = (
        f"ceil({rate_s} / {thr_s}) = {plan.replicas_needed_now}   "
        f"(live rate / throughput_per_replica)")
    if now.replicas:
        plan.headroom_now = 1 - now.rate_rps / (now.replicas * thr)
        plan.formulas["headroom_now"] = (
            f"1 − {now.rate_rps:.4g} / ({now.replicas} × {thr:.4g}) = "
            f"{plan.headroom_now:.0%}   (1 − live rate / (replicas reporting × "
            f"throughput_per_replica))")
