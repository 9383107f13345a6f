"""The knee of p95 latency vs concurrency, and the cap-setting accept/reject rules.

**Knee.** Kneedle (Satopää et al. 2011, via :mod:`kneed`) on p95 latency vs in-flight
concurrency, treated as a convex increasing curve: both axes are normalised to [0, 1] and
the knee is the level where the normalised curve lies furthest below the chord from the
first to the last point, i.e. where latency stops being flat and turns upward because
requests start to queue for a slot. That level is the **saturation concurrency** the alert
rules key on (``targets[*].saturation_concurrency``).

**Cross-check.** Queueing bends p95 upward only once throughput stops growing (Little:
W = L / λ), so the p95 knee is checked against throughput both ways. If throughput at the
p95 knee is still below 75% of the best measured, the bend was a disturbance, not
saturation, and the knee of throughput vs concurrency (Kneedle, concave increasing: where
throughput stops improving) is used instead. If a lower level already reached the knee's
throughput (within 3%), throughput had stopped improving there and the knee moves down
to it. The analysis says which in its ``method`` and ``note``.

**Accept/reject.** A step is accepted when (seed note 003):

* the client held the server near the cap: achieved mean in-flight >= 90% of the level
  (the work-conserving check; otherwise the level was never really tested);
* the retry rate does not rise above the lowest rate seen so far by more than
  ``retry_tolerance`` retries per request;
* the success rate does not regress below the best seen so far by more than
  ``success_tolerance``, and is at least ``min_success`` (a level where most requests
  fail has regressed, even when it is the first one measured).

Once a step is rejected, every higher level is rejected too (the cap must stay below the
point where retries rise). The **recommended cap** is the highest accepted level strictly
below the knee; with no knee, the highest accepted level.

Example::

    analysis = analyse(steps)
    print(analysis.knee, analysis.recommended_cap)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from redline_operator.sweep.stats import StepStats

__all__ = ["AcceptRules", "Analysis", "SessionAnalysis", "session_analysis", "StepVerdict",
           "analyse", "find_knee", "saturation_knee", "cross_checked_knee", "throughput_knee",
           "SATURATED_FRACTION"]

#: Share of the best measured throughput a level must reach to count as saturated.
SATURATED_FRACTION = 0.75
#: Throughput within this share of the knee's counts as "no longer improving".
PLATEAU_TOLERANCE = 0.03

_METHODS = {
    "p95": "kneedle(p95 latency vs concurrency, convex increasing)",
    "throughput": "kneedle(throughput vs concurrency, concave increasing): p95 bent before "
                  "saturation",
    "plateau": "kneedle(p95 latency vs concurrency), moved down to where throughput "
               "stopped improving",
}


@dataclass(frozen=True)
class AcceptRules:
    """Tolerances of the accept/reject rules."""

    min_in_flight_ratio: float = 0.9
    retry_tolerance: float = 0.02
    success_tolerance: float = 0.01
    min_success: float = 0.9


@dataclass
class StepVerdict:
    concurrency: int
    accepted: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    """Result of :func:`analyse`: the knee, the recommended cap and each step's verdict."""

    knee: float | None
    recommended_cap: int | None
    verdicts: list[StepVerdict]
    method: str = "kneedle(p95 latency vs concurrency, convex increasing)"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def find_knee(levels: Sequence[float], p95: Sequence[float], *,
              sensitivity: float = 1.0) -> float | None:
    """Kneedle knee of p95 latency vs concurrency.

    Args:
        levels: concurrency levels, ascending.
        p95: p95 latency at each level (NaN levels are dropped).
        sensitivity: Kneedle's S; higher needs a sharper knee.

    Returns:
        The level at the knee, or ``None`` when latency never turns upward (the sweep did
        not reach saturation) or there are fewer than three usable points.
    """
    pts = sorted((x, y) for x, y in zip(levels, p95, strict=True)
                 if not (math.isnan(x) or y is None or math.isnan(y)))
    if len(pts) < 3:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    # Kneedle normalises x over the whole sweep, so a long run of deeply saturated levels
    # squeezes a knee near the low end below its significance threshold. Levels whose p95
    # is already past twice the floor add nothing to where the curve turned; drop them
    # from the top one at a time until Kneedle sees the knee (or only 4 points remain).
    while True:
        knee = _kneedle(xs, ys, sensitivity)
        if knee is not None or len(xs) <= 4 or ys[-1] <= 2 * min(ys):
            return knee
        xs, ys = xs[:-1], ys[:-1]


def _kneedle(xs: list[float], ys: list[float], sensitivity: float,
             curve: str = "convex") -> float | None:
    from kneed import KneeLocator  # imports matplotlib; keep it off the CLI's import path

    if max(ys) - min(ys) <= 1e-9 * max(abs(max(ys)), 1e-12):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns "no knee" instead of returning quietly
        kl = KneeLocator(xs, ys, S=sensitivity, curve=curve, direction="increasing",
                         interp_method="interp1d", online=True)
    return None if kl.knee is None else float(kl.knee)


def throughput_knee(levels: Sequence[float], throughput: Sequence[float], *,
                    sensitivity: float = 1.0) -> float | None:
    """Kneedle knee of throughput vs concurrency (concave): where throughput stops growing."""
    pts = sorted((x, y) for x, y in zip(levels, throughput, strict=True)
                 if not (math.isnan(x) or y is None or math.isnan(y)))
    if len(pts) < 3:
        return None
    return _kneedle([p[0] for p in pts], [p[1] for p in pts], sensitivity, curve="concave")


def saturation_knee(steps: Sequence[StepStats], *, sensitivity: float = 1.0,
                    saturated_fraction: float = SATURATED_FRACTION) -> tuple[float | None, str]:
    """The saturation concurrency: the p95 knee, cross-checked against throughput.

    Queueing is what bends p95 upward at saturation, and queueing means throughput has
    stopped growing. A p95 knee at a level whose throughput is still below
    ``saturated_fraction`` of the best measured is therefore not saturation but a
    disturbance (a noisy neighbour, a GC pause, a step measured on a busy machine); the
    knee of throughput vs concurrency is used instead. Conversely, a lower level whose
    throughput was already within ``PLATEAU_TOLERANCE`` of the knee's means throughput had
    stopped improving there, and the knee moves down to it.

    Returns:
        (knee or ``None``, which method gave it and why).
    """
    steps = sorted(steps, key=lambda s: s.concurrency)
    return cross_checked_knee([s.concurrency for s in steps], [s.latency_p95 for s in steps],
                              [s.throughput_rps for s in steps], sensitivity=sensitivity,
                              saturated_fraction=saturated_fraction)


def cross_checked_knee(levels: Sequence[float], p95: Sequence[float],
                       thr: Sequence[float], *, sensitivity: float = 1.0,
                       saturated_fraction: float = SATURATED_FRACTION
                       ) -> tuple[float | None, str]:
    """:func:`saturation_knee` on plain lists (levels ascending), e.g. from live data."""
    levels, thr = list(levels), list(thr)
    knee = find_knee(levels, p95, sensitivity=sensitivity)
    if knee is None:
        return None, "p95"
    best = max((t for t in thr if not math.isnan(t)), default=0.0)
    at_knee = thr[levels.index(knee)]
    if best <= 0 or at_knee >= saturated_fraction * best:
        # Not past saturation either: a lower level that already reached the knee's
        # throughput means throughput had stopped improving there (seed note 003).
        flat = [c for c, t in zip(levels, thr, strict=True)
                if c < knee and t >= (1 - PLATEAU_TOLERANCE) * at_knee]
        if flat:
            return min(flat), (
                f"plateau: p95 turned upward at {knee:g}, but throughput had stopped "
                f"improving at {min(flat):g} ({thr[levels.index(min(flat))]:.3g} vs "
                f"{at_knee:.3g} req/s); the knee is not past that level")
        return knee, "p95"
    fallback = throughput_knee(levels, thr, sensitivity=sensitivity)
    why = (f"p95 turned upward at {knee:g}, but throughput there ({at_knee:.3g} req/s) was "
           f"below {saturated_fraction:.0%} of the best ({best:.3g} req/s), so the server was "
           f"not saturated yet; used the throughput knee")
    return (fallback, "throughput: " + why) if fallback is not None else (knee, "p95")


def _verdicts(steps: Sequence[StepStats], rules: AcceptRules) -> list[StepVerdict]:
    out: list[StepVerdict] = []
    best_success = -math.inf
    low_retry = math.inf
    rejected_below = False
    for s in sorted(steps, key=lambda s: s.concurrency):
        reasons = []
        if s.held_in_flight < rules.min_in_flight_ratio * s.concurrency:
            reasons.append(f"in-flight {s.held_in_flight:.1f} below "
                           f"{rules.min_in_flight_ratio:.0%} of the level")
        if s.retry_rate > low_retry + rules.retry_tolerance:
            reasons.append(f"retry rate rose to {s.retry_rate:.3f}/request "
                           f"(lowest {low_retry:.3f})")
        success = 0.0 if math.isnan(s.success_rate) else s.success_rate
        if success < rules.min_success:
            reasons.append(f"success rate {success:.1%} below {rules.min_success:.0%}")
        elif success < best_success - rules.success_tolerance:
            reasons.append(f"success rate regressed to {success:.1%} "
                           f"(best {best_success:.1%})")
        if rejected_below and not reasons:
            reasons.append("a lower level was rejected")
        rejected_below = rejected_below or bool(reasons)
        out.append(StepVerdict(s.concurrency, not reasons, reasons))
        best_success = max(best_success, success)
        low_retry = min(low_retry, s.retry_rate)
    return out


def analyse(steps: Sequence[StepStats], rules: AcceptRules | None = None, *,
            sensitivity: float = 1.0) -> Analysis:
    """Knee, accept/reject verdicts and the recommended cap of a sweep's steps."""
    rules = rules or AcceptRules()
    steps = sorted(steps, key=lambda s: s.concurrency)
    verdicts = _verdicts(steps, rules)
    knee, method = saturation_knee(steps, sensitivity=sensitivity)
    accepted = [v.concurrency for v in verdicts if v.accepted]
    below = [c for c in accepted if knee is None or c < knee]
    cap = max(below) if below else None
    note = ""
    if knee is None:
        note = ("no knee: p95 never turned upward; the sweep did not reach saturation "
                "(raise --max-concurrency)") if len(steps) >= 3 else "fewer than 3 steps"
    elif knee == steps[-1].concurrency:
        note = "knee at the highest level measured; saturation may lie beyond it"
    if method != "p95":
        note = (note + "; " if note else "") + method.split(": ", 1)[1]
    return Analysis(knee=knee, recommended_cap=cap, verdicts=verdicts,
                    method=_METHODS[method.split(":", 1)[0]], note=note)


@dataclass
class SessionAnalysis:
    """Both knees of a session sweep and the Little's-law bridge between them."""

    session_knee: float | None
    call_knee_measured: float | None
    call_knee_used: float | None
    call_knee_source: str
    duty_cycle: float | None
    predicted_sessions: float | None
    prediction_error: float | None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def session_analysis(steps: list[StepStats], session_knee: float | None, *,
                     call_knee: float | None = None) -> SessionAnalysis:
    """The model-call knee in calls in flight, the session knee, and K / duty-cycle.

    Args:
        steps: the session sweep's steps.
        session_knee: the knee in sessions (the sweep's own analysis).
        call_knee: the model-call knee from a request-level sweep (``--calls-knee``); when
            missing, the knee of p95 vs *measured* calls in flight of this same sweep.
    """
    steps = sorted(steps, key=lambda s: s.sessions_in_flight)
    measured, _ = cross_checked_knee([s.mean_in_flight for s in steps],
                                     [s.latency_p95 for s in steps],
                                     [s.throughput_rps for s in steps])
    used = call_knee if call_knee is not None else measured
    source = "request-level sweep" if call_knee is not None else "this sweep (calls in flight)"
    # The duty cycle below saturation: past the knee calls queue and grow longer, so the
    # cycle measured there no longer describes the workload.
    below = [s for s in steps if used is None or s.mean_in_flight <= used]
    ref = below[-1] if below else (steps[0] if steps else None)
    duty = ref.duty_cycle if ref is not None and not math.isnan(ref.duty_cycle) else None
    predicted = used / duty if used is not None and duty else None
    error = (abs(predicted - session_knee) / session_knee
             if predicted is not None and session_knee else None)
    note = "" if session_knee is not None else "no session knee: raise the session levels"
    return SessionAnalysis(session_knee=session_knee, call_knee_measured=measured,
                           call_knee_used=used, call_knee_source=source, duty_cycle=duty,
                           predicted_sessions=predicted, prediction_error=error, note=note)

