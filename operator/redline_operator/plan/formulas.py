"""The capacity formulas of the source notes, one function each, with the formula as text.

Seed note 004 (concurrency target per replica)::

    throughput_per_replica = requests_per_second at target concurrency
    min_replicas = (baseline_rps / throughput_per_replica) + 1   # +1 for redundancy
    max_replicas = (peak_rps / throughput_per_replica) + buffer

Its worked example: 10 req/s per replica at concurrency 32, baseline 25 req/s, peak
80 req/s: min 4, max 10. The quotient is rounded up (2.5 -> 3, so 3 + 1 = 4): a fraction
of a replica is a whole one.

Seed note 000 (concurrency level)::

    Required Instances = (Peak Concurrent Users * Avg. Latency) / Target RPS per Instance

:func:`peak_rps_from_users` is the closed-system form used when ``--peak-users`` comes
with a think time: each user waits for a reply (latency W) then thinks (Z) before the
next request, so N users offer ``N / (W + Z)`` requests per second (the interactive
response-time law, Little's law applied to the whole user loop). With Z = 1 s - W each
user sends one request per second and ``N / (W + Z) = N``.

Example::

    >>> min_replicas(25, 10), max_replicas(80, 10)
    (4, 10)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["concurrency_target", "min_replicas", "max_replicas", "replicas_for",
           "peak_rps_from_users", "instances_for_users", "interpolate",
           "MIN_FORMULA", "MAX_FORMULA", "USERS_FORMULA", "INSTANCES_FORMULA"]

MIN_FORMULA = "ceil(baseline_rps / throughput_per_replica) + redundancy"
MAX_FORMULA = "ceil(peak_rps / throughput_per_replica) + buffer"
USERS_FORMULA = "peak_users / (latency + think_time)"
INSTANCES_FORMULA = "peak_users * avg_latency / target_rps_per_instance"


def _ceil(x: float) -> int:
    """Round up, ignoring float noise (80 / 10 * 1.0000000001 is still 8)."""
    return math.ceil(round(x, 9))


def concurrency_target(knee: float, fraction: float) -> int:
    """Concurrency target per replica: ``floor(fraction * knee)``, at least 1."""
    if not knee > 0:
        raise ValueError(f"the knee must be > 0, got {knee!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"the target fraction must be in (0, 1], got {fraction!r}")
    return max(1, math.floor(knee * fraction + 1e-9))


def replicas_for(rps: float, throughput_per_replica: float) -> int:
    """Replicas that serve ``rps`` at ``throughput_per_replica`` each (rounded up)."""
    if not throughput_per_replica > 0:
        raise ValueError(f"throughput per replica must be > 0, got {throughput_per_replica!r}")
    if rps < 0:
        raise ValueError(f"a request rate must be >= 0, got {rps!r}")
    return _ceil(rps / throughput_per_replica)


def min_replicas(baseline_rps: float, throughput_per_replica: float,
                 redundancy: int = 1) -> int:
    """Seed note 004: ``ceil(baseline_rps / throughput_per_replica) + redundancy``."""
    return replicas_for(baseline_rps, throughput_per_replica) + redundancy


def max_replicas(peak_rps: float, throughput_per_replica: float, buffer: int = 2) -> int:
    """Seed note 004: ``ceil(peak_rps / throughput_per_replica) + buffer``."""
    return replicas_for(peak_rps, throughput_per_replica) + buffer


def peak_rps_from_users(users: float, latency_s: float, think_s: float) -> float:
    """Requests/s offered by ``users`` who each wait ``latency_s`` then think ``think_s``."""
    if users < 0 or latency_s < 0 or think_s < 0 or latency_s + think_s <= 0:
        raise ValueError("users, latency and think time must be >= 0, latency + think > 0")
    return users / (latency_s + think_s)


def instances_for_users(users: float, latency_s: float, rps_per_instance: float) -> float:
    """Seed note 000, as written: ``peak_users * avg_latency / target_rps_per_instance``.

    ``users * latency`` is the requests in flight when each user sends one request per
    second (Little's law); the note divides it by the per-instance figure. Not rounded.
    """
    if not rps_per_instance > 0:
        raise ValueError(f"target rps per instance must be > 0, got {rps_per_instance!r}")
    return users * latency_s / rps_per_instance


def interpolate(xs: Sequence[float], ys: Sequence[float], at: float, *,
                through_origin: bool = False) -> float:
    """Linear interpolation of ``ys`` over ascending ``xs`` at ``at``.

    With ``through_origin`` the point (0, 0) is added (no requests in flight, no
    throughput), so a target below the lowest level measured scales down linearly.

    Raises:
        ValueError: ``at`` lies outside the measured range (there is no data there).
    """
    pts = sorted(zip(xs, ys, strict=True))
    if through_origin and (not pts or pts[0][0] > 0):
        pts.insert(0, (0.0, 0.0))
    if not pts:
        raise ValueError("no measured levels")
    if at < pts[0][0] or at > pts[-1][0]:
        raise ValueError(f"{at:g} lies outside the measured levels "
                         f"{pts[0][0]:g}..{pts[-1][0]:g}")
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= at <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    return pts[0][1]  # a single point equal to ``at``
