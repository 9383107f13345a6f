"""A sweep: one closed-loop step per concurrency level, low to high, with early stop.

Example::

    async with LoadGenerator(base_url=url, api_key="k", model="m") as gen:
        await gen.preflight()
        result = await run_sweep(gen, [1, 2, 4, 8, 16], StepPlan(min_duration_s=5))
    print(result.analysis.knee)
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from redline_operator.sweep.knee import (
    AcceptRules,
    Analysis,
    SessionAnalysis,
    analyse,
    session_analysis,
)
from redline_operator.sweep.stats import StepStats

if TYPE_CHECKING:  # the load generator needs the openai SDK; results do not
    from redline_operator.sweep.load import LoadGenerator, StepPlan

__all__ = ["StopRules", "SweepResult", "run_sweep", "parse_levels", "default_levels",
           "RETRIES_COUNTED_BY"]

RETRIES_COUNTED_BY = ("httpx event hook on the shared pool: one count per HTTP attempt the "
                      "openai SDK sends; attempts with x-stainless-retry-count > 0 are retries")


@dataclass(frozen=True)
class StopRules:
    """When a sweep stops before its last level.

    Attributes:
        min_success: stop after a step whose success rate falls below this.
        p95_explode_factor: stop after a step whose p95 exceeds this multiple of the
            first step's p95.
    """

    min_success: float = 0.5
    p95_explode_factor: float = 20.0

    def check(self, first: StepStats, step: StepStats) -> str | None:
        """Why the sweep must stop after ``step``, or ``None`` to go on."""
        success = 0.0 if math.isnan(step.success_rate) else step.success_rate
        if success < self.min_success:
            return (f"success collapsed at concurrency {step.concurrency}: "
                    f"{success:.0%} < {self.min_success:.0%}")
        if (first.latency_p95 > 0 and not math.isnan(step.latency_p95)
                and step.latency_p95 > self.p95_explode_factor * first.latency_p95):
            return (f"p95 exploded at concurrency {step.concurrency}: "
                    f"{step.latency_p95:.3g} s > {self.p95_explode_factor:g} x "
                    f"{first.latency_p95:.3g} s at concurrency {first.concurrency}")
        return None


@dataclass
class SweepResult:
    """Everything a sweep measured, plus how it was run. Serialised to results.json."""

    base_url: str
    model: str
    levels: list[int]
    plan: StepPlan
    steps: list[StepStats] = field(default_factory=list)
    status: str = "running"  # running | complete | stopped_early | interrupted
    stop_reason: str | None = None
    started_at: str = field(default_factory=lambda: _now())
    finished_at: str | None = None
    rules: AcceptRules = AcceptRules()
    workload: dict = field(default_factory=dict)
    unit: str = "calls"  # calls | sessions: what a level keeps in flight
    #: the model-call knee of a request-level sweep, for the sessions prediction
    calls_knee: float | None = None

    @property
    def analysis(self) -> Analysis:
        return analyse(self.steps, self.rules)

    @property
    def session_analysis(self) -> SessionAnalysis | None:
        """Both knees and the K / duty-cycle prediction; ``None`` for a calls sweep."""
        if self.unit != "sessions":
            return None
        return session_analysis(self.steps, self.analysis.knee, call_knee=self.calls_knee)

    def to_dict(self) -> dict:
        a = self.analysis
        return {
            "generated_by": "redline sweep",
            "format": 1,
            "base_url": self.base_url,
            "model": self.model,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "levels_planned": self.levels,
            "plan": asdict(self.plan),
            "workload": self.workload,
            "accept_rules": asdict(self.rules),
            "retries_counted_by": RETRIES_COUNTED_BY,
            "unit": self.unit,
            # the knee of the swept unit: in-flight model calls, or open sessions
            ("saturation_sessions" if self.unit == "sessions" else "saturation_concurrency"):
                a.knee,
            "recommended_cap": a.recommended_cap,
            "analysis": a.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            **({"sessions": self.session_analysis.to_dict()} if self.unit == "sessions"
               else {}),
        }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def parse_levels(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (sorted, unique).

    Raises:
        ValueError: a level is not a positive integer.
    """
    try:
        levels = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise ValueError(f"bad --levels {text!r}: expected positive integers like "
                         "1,2,4,8") from None
    if not levels or levels[0] < 1:
        raise ValueError(f"bad --levels {text!r}: expected positive integers like 1,2,4,8")
    return levels


def default_levels(max_concurrency: int) -> list[int]:
    """Powers of two up to ``max_concurrency`` with a half step between each (x1.5).

    Neighbouring levels differ by at most 50%, so a knee found on this grid is within
    +-25% of the true knee. ``default_levels(64)`` is 1,2,3,4,6,8,12,16,24,32,48,64.
    """
    if max_concurrency < 1:
        raise ValueError("--max-concurrency must be at least 1")
    levels, p = {max_concurrency}, 1
    while p <= max_concurrency:
        levels.add(p)
        if p * 3 // 2 <= max_concurrency and p >= 2:
            levels.add(p * 3 // 2)
        p *= 2
    return sorted(levels)


async def run_sweep(gen: LoadGenerator, levels: Sequence[int], plan: StepPlan, *,
                    stop: StopRules | None = None, result: SweepResult | None = None,
                    on_step: Callable[[SweepResult], None] | None = None,
                    on_level: Callable[[int, int], None] | None = None,
                    progress: Callable[[int, float], None] | None = None,
                    drain_s: float = 10.0) -> SweepResult:
    """Run every level in ascending order; stop early when success collapses or p95 explodes.

    Args:
        gen: an open load generator (preflight already passed).
        levels: concurrency levels.
        plan: how long each step runs.
        stop: early-stop rules.
        result: the result to fill (pass one to keep finished steps if interrupted).
        on_step: called after each finished step with the result so far (save it here:
            a Ctrl-C then loses only the step in progress).
        on_level: called with (index, level) before each step starts.
        progress: forwarded to :meth:`LoadGenerator.run_step`.
        drain_s: at the end, seconds the last requests get to finish before cancellation.
    """
    stop = stop or StopRules()
    levels = sorted(set(levels))
    result = result or SweepResult(base_url=gen.base_url, model=gen.model, levels=levels,
                                   plan=plan)
    for i, level in enumerate(levels):
        if on_level:
            on_level(i, level)
        step = await gen.run_step(level, plan, progress)
        result.steps.append(step)
        reason = stop.check(result.steps[0], step)
        if reason:
            result.status, result.stop_reason = "stopped_early", reason
        if on_step:
            on_step(result)
        if reason:
            break
    else:
        result.status = "complete"
    await gen.stop_workers(drain_s=drain_s)
    result.finished_at = _now()
    return result
