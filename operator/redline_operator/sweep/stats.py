"""Per-step statistics of a closed-loop load step, including the Little's-law check.

A step's measurement window is ``[t0, t1)``. Latency, TTFT, throughput and success are
taken over the requests that *finished* inside the window; the mean in-flight count is
the time-average over the window of every request's overlap with it (warm-up requests
still running at ``t0`` and requests cut off at ``t1`` included), which is what the server
actually saw.

Little's law says that for any stable window ``L = λ·W``: mean in flight equals
completion rate times mean latency. Both sides are measured independently here, so their
relative difference is a check on the measurement itself (a client that cannot keep up,
or a window too short for its latency, shows up as a large error).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

__all__ = ["StepStats", "summarize", "percentile", "LITTLE_TOLERANCE"]

#: Relative error above which a step's Little's-law check is reported as failed.
LITTLE_TOLERANCE = 0.10


class _Record(Protocol):
    start: float
    end: float
    first_chunk: float
    ok: bool
    error: str | None
    output_tokens: int


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class StepStats:
    """What one concurrency level measured. Times in seconds."""

    concurrency: int
    duration_s: float
    requests: int
    ok: int
    success_rate: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    latency_mean: float
    ttft_p50: float
    ttft_p95: float
    ttft_p99: float
    throughput_rps: float
    tokens_per_s: float
    attempts: int
    retries: int
    retry_rate: float
    mean_in_flight: float
    little_expected_in_flight: float
    little_rel_error: float
    warmup_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    attempt_causes: dict[str, int] = field(default_factory=dict)
    # A session sweep (``--unit sessions``) adds these; ``concurrency`` is then the number
    # of sessions kept open and ``mean_in_flight`` stays the model calls in flight.
    unit: str = "calls"
    sessions_in_flight: float = math.nan
    duty_cycle: float = math.nan
    design_duty_cycle: float = math.nan
    session_p95: float = math.nan
    sessions_per_min: float = math.nan
    session_success_rate: float = math.nan

    @property
    def held_in_flight(self) -> float:
        """What the level asked to keep in flight, as measured: calls, or sessions."""
        return self.sessions_in_flight if self.unit == "sessions" else self.mean_in_flight

    @property
    def little_ok(self) -> bool:
        return self.little_rel_error <= LITTLE_TOLERANCE

    def to_dict(self) -> dict:
        d = asdict(self)
        d["little_ok"] = self.little_ok
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> StepStats:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: (math.nan if v is None else v) for k, v in d.items() if k in names})


def summarize(concurrency: int, records: Iterable[_Record], t0: float, t1: float, *,
              attempts: int = 0, retries: int = 0, attempt_causes: dict | None = None,
              warmup_s: float = 0.0) -> StepStats:
    """Reduce a step's request records to :class:`StepStats` over the window ``[t0, t1)``.

    Args:
        concurrency: the in-flight target C of the step.
        records: every request the step started; unfinished ones carry ``end`` = the time
            they were cut off (or NaN, read as ``t1``).
        t0: window start (monotonic seconds).
        t1: window end.
        attempts: HTTP attempts sent during the window.
        retries: attempts after the first during the window.
        attempt_causes: attempt outcomes by cause during the window.
        warmup_s: warm-up length, reported as is.
    """
    records = list(records)
    span = max(t1 - t0, 1e-9)
    busy = 0.0
    finished = []
    for r in records:
        end = t1 if math.isnan(r.end) else r.end
        busy += max(0.0, min(end, t1) - max(r.start, t0))
        if t0 <= end < t1 and not math.isnan(r.end) and (r.ok or r.error):
            finished.append(r)
    good = [r for r in finished if r.ok]
    lat = [r.end - r.start for r in good]
    ttft = [r.first_chunk - r.start for r in good if not math.isnan(r.first_chunk)]
    all_lat = [r.end - r.start for r in finished]
    mean_in_flight = busy / span
    rate = len(finished) / span
    mean_lat = sum(all_lat) / len(all_lat) if all_lat else math.nan
    expected = rate * mean_lat if all_lat else math.nan
    rel = (abs(mean_in_flight - expected) / mean_in_flight
           if all_lat and mean_in_flight else math.nan)
    first_attempts = max(attempts - retries, 1)
    return StepStats(
        concurrency=concurrency, duration_s=span, requests=len(finished), ok=len(good),
        success_rate=len(good) / len(finished) if finished else math.nan,
        latency_p50=percentile(lat, 50), latency_p95=percentile(lat, 95),
        latency_p99=percentile(lat, 99),
        latency_mean=sum(lat) / len(lat) if lat else math.nan,
        ttft_p50=percentile(ttft, 50), ttft_p95=percentile(ttft, 95),
        ttft_p99=percentile(ttft, 99),
        throughput_rps=len(good) / span,
        tokens_per_s=sum(r.output_tokens for r in good) / span,
        attempts=attempts, retries=retries, retry_rate=retries / first_attempts,
        mean_in_flight=mean_in_flight, little_expected_in_flight=expected,
        little_rel_error=rel, warmup_s=warmup_s,
        errors=dict(Counter(r.error for r in finished if not r.ok)),
        attempt_causes=dict(attempt_causes or {}),
    )
