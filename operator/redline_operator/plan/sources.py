"""Where a plan's numbers come from: a sweep's ``results.json`` or live Prometheus data.

Both give the throughput of one replica at the concurrency target and the mean latency
there. A sweep measured one replica (one endpoint) at fixed concurrency levels; the
figure at the target is read off its steps, interpolated linearly between the two levels
around it (through 0 req/s at 0 in flight below the lowest). Live data comes from the
target's series in Prometheus: at every ``step`` over a window, the in-flight
concurrency and the finished-call rate divided by the replicas reporting (the distinct
``instance`` labels, OTel ``service.instance.id``), grouped by concurrency level like
``redline knee`` does, and read off at the target the same way.

Example::

    m = throughput_from_results(Path("sweep-out/results.json"), at=12)
    print(m.throughput_rps, m.how)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from redline.semconv import METRICS, Attr, prom_label
from redline_operator import promql
from redline_operator.plan.formulas import interpolate
from redline_operator.sweep.live import bucket_by_concurrency

__all__ = ["PlanError", "Measured", "Traffic", "Now", "throughput_from_results",
           "throughput_from_prometheus", "traffic_from_prometheus", "now_from_prometheus",
           "replicas_reporting", "ok_rate", "mean_latency"]


class PlanError(Exception):
    """A plan input a user can fix: names the file, key or flag and what was expected."""


@dataclass(frozen=True)
class Measured:
    """Throughput of one replica at the concurrency target, and where it came from."""

    throughput_rps: float
    latency_s: float | None
    source: str
    how: str
    knee: float | None = None  # the knee the source itself found (sweep), if any


@dataclass(frozen=True)
class Traffic:
    baseline_rps: float | None
    peak_rps: float | None
    source: str


@dataclass(frozen=True)
class Now:
    rate_rps: float | None
    replicas: int | None
    concurrency: float | None


# --- PromQL (raw series, so a plan works without the generated rules) ---------------------

def replicas_reporting(sel: str) -> str:
    """Distinct processes (``instance``) reporting the selector's in-flight series."""
    return f"count(count by (instance) ({METRICS.REQUESTS_IN_FLIGHT.prom}{{{sel}}}))"


def ok_rate(sel: str, window: str) -> str:
    """Successful model calls per second (``error_type`` unset), like a sweep counts them."""
    ok = ",".join(p for p in (sel, f'{prom_label(Attr.ERROR_TYPE)}=""') if p)
    return f"sum(rate({METRICS.REQUESTS.prom}{{{ok}}}[{window}]))"


def mean_latency(sel: str, window: str) -> str:
    h = f"sum(rate({METRICS.OPERATION_DURATION.prom}{{{sel}}}[{window}]))"
    return f"histogram_sum({h}) / histogram_count({h})"


# --- results.json ----------------------------------------------------------------------------

def _load_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"{path}: file not found; run `redline sweep --out DIR` and pass "
                        f"DIR/results.json") from None
    except OSError as exc:
        raise PlanError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise PlanError(f"{path}: not JSON ({exc}); expected the results.json that "
                        f"`redline sweep` writes") from None
    if not isinstance(data, dict) or data.get("generated_by") != "redline sweep":
        raise PlanError(f"{path}: key generated_by: expected \"redline sweep\" (a sweep's "
                        f"results.json)")
    if not isinstance(data.get("steps"), list) or not data["steps"]:
        raise PlanError(f"{path}: key steps: expected at least one measured step")
    return data


def throughput_from_results(path: Path, at: float) -> Measured:
    """Throughput and mean latency of the sweep's replica at concurrency ``at``.

    Raises:
        PlanError: the file is missing or not a sweep's results, ``at`` is beyond the
            levels measured, or the throughput there is 0.
    """
    data = _load_results(path)
    pts = []
    for i, step in enumerate(data["steps"]):
        c, thr = step.get("concurrency"), step.get("throughput_rps")
        if not isinstance(c, int | float) or not isinstance(thr, int | float) or c <= 0:
            raise PlanError(f"{path}: key steps[{i}]: expected a positive concurrency and "
                            f"a number throughput_rps, got {c!r} and {thr!r}")
        pts.append((float(c), float(thr), step.get("latency_mean")))
    pts.sort()
    levels = [p[0] for p in pts]
    try:
        thr = interpolate(levels, [p[1] for p in pts], at, through_origin=True)
    except ValueError:
        raise PlanError(f"{path}: the concurrency target {at:g} is above the highest level "
                        f"the sweep measured ({levels[-1]:g}); sweep higher "
                        f"(--max-concurrency) or lower planning.target_fraction") from None
    how = _how(levels, [p[1] for p in pts], at)
    if not thr > 0:
        i = next((i for i, p in enumerate(data["steps"]) if p.get("concurrency") >= at), 0)
        raise PlanError(f"{path}: throughput at concurrency {at:g} is {thr:g} req/s (key "
                        f"steps[{i}].throughput_rps); a replica that serves nothing cannot "
                        f"be planned for: check the endpoint and re-run `redline sweep`")
    lat_pts = [(c, lat) for c, _, lat in pts if isinstance(lat, int | float) and lat > 0]
    latency = None
    if lat_pts:
        xs, ys = [p[0] for p in lat_pts], [p[1] for p in lat_pts]
        latency = interpolate(xs, ys, min(max(at, xs[0]), xs[-1]))
    return Measured(throughput_rps=thr, latency_s=latency,
                    source=f"{path} (sweep of {data.get('model')} at {data.get('base_url')})",
                    how=how, knee=data.get("saturation_concurrency"))


def _how(levels: list[float], thr: list[float], at: float) -> str:
    if at in levels:
        return f"measured at concurrency {at:g}"
    above = next(i for i, c in enumerate(levels) if c > at)
    if above == 0:
        return (f"{thr[0]:.3g} req/s at {levels[0]:g} scaled linearly to {at:g} "
                f"(through 0 at 0)")
    lo, hi = above - 1, above
    return (f"interpolated between concurrency {levels[lo]:g} ({thr[lo]:.3g} req/s) and "
            f"{levels[hi]:g} ({thr[hi]:.3g} req/s)")


# --- live data ------------------------------------------------------------------------------

def _series(result: list[dict]) -> dict[float, float]:
    out: dict[float, float] = {}
    for s in result:
        for ts, v in s.get("values", []):
            out[float(ts)] = out.get(float(ts), 0.0) + float(v)
    return out


def throughput_from_prometheus(prom: promql.PrometheusClient, sel: str, at: float, *,
                               window_s: float = 3600.0, step_s: float = 5.0,
                               rate_window: str = "1m", min_samples: int = 3,
                               end: float | None = None) -> Measured:
    """Live throughput per replica at ``at`` in flight per replica, over ``window_s``.

    Raises:
        PlanError: no samples, or live traffic never reached ``at`` per replica.
        redline_operator.promql.PrometheusError: Prometheus unreachable or refused a query.
    """
    end = time.time() if end is None else end
    start = end - window_s
    sub = f"[{rate_window}:1s]"
    queries = {
        "concurrency": f"avg_over_time({promql.in_flight(sel)}{sub})",
        "replicas": f"max_over_time({replicas_reporting(sel)}{sub})",
        "throughput": ok_rate(sel, rate_window),
        "latency": mean_latency(sel, rate_window),
    }
    got = {k: _series(prom.query_range(q, start, end, step_s)) for k, q in queries.items()}
    rows = []
    for ts in sorted(got["concurrency"].keys() & got["replicas"].keys()
                     & got["throughput"].keys()):
        n = got["replicas"][ts]
        if n >= 1:
            lat = got["latency"].get(ts, math.nan)
            rows.append((got["concurrency"][ts] / n, got["throughput"][ts] / n, lat))
    where = f"Prometheus at {prom.url}, selector {{{sel}}}"
    if not rows:
        raise PlanError(f"{where}: no in-flight and request-rate samples in the last "
                        f"{window_s:g} s; check the target's match and that the app is "
                        f"instrumented")
    levels, (thr, lat), counts = bucket_by_concurrency(rows, min_samples=min_samples)
    if not levels or at > levels[-1]:
        top = f"{levels[-1]}" if levels else "none"
        raise PlanError(f"{where}: live traffic never held {at:g} in flight per replica "
                        f"for {min_samples} samples (highest level seen: {top}); run load "
                        f"at that level, widen --window, or plan from a sweep (--results)")
    value = interpolate(levels, thr, at, through_origin=True)
    if not value > 0:
        raise PlanError(f"{where}: live throughput at {at:g} in flight per replica is "
                        f"{value:g} req/s; every call failed or none finished")
    good = [(c, v) for c, v in zip(levels, lat, strict=True) if not math.isnan(v)]
    latency = None
    if good:
        xs, ys = [g[0] for g in good], [g[1] for g in good]
        latency = interpolate(xs, ys, min(max(at, xs[0]), xs[-1]))
    n = sum(c for lv, c in zip(levels, counts, strict=True) if abs(lv - at) <= 1)
    return Measured(throughput_rps=value, latency_s=latency, source=where,
                    how=f"{_how([float(x) for x in levels], thr, at)}, live ({n} samples "
                        f"of {step_s:g} s near the target, rate over {rate_window})")


def traffic_from_prometheus(prom: promql.PrometheusClient, sel: str, *, window: str = "7d",
                            rate_window: str = "5m", resolution: str = "1m",
                            end: float | None = None) -> Traffic:
    """Baseline (median) and peak (maximum) of the request rate over ``window``.

    Raises:
        PlanError: no request data in the window.
    """
    rate = f"sum(rate({METRICS.REQUESTS.prom}{{{sel}}}[{rate_window}]))"
    peak = prom.scalar(f"max_over_time({rate}[{window}:{resolution}])", end)
    baseline = prom.scalar(f"quantile_over_time(0.5, {rate}[{window}:{resolution}])", end)
    if peak is None:
        raise PlanError(f"Prometheus at {prom.url}: no {METRICS.REQUESTS.prom} samples for "
                        f"{{{sel}}} in the last {window}; pass --baseline-rps/--peak-rps")
    return Traffic(baseline_rps=baseline, peak_rps=peak,
                   source=f"Prometheus, last {window}: median and max of the "
                          f"{rate_window} request rate")


def now_from_prometheus(prom: promql.PrometheusClient, sel: str,
                        rate_window: str = "1m") -> Now:
    """The request rate, replicas reporting and concurrency right now."""
    rate = prom.scalar(f"sum(rate({METRICS.REQUESTS.prom}{{{sel}}}[{rate_window}]))")
    replicas = prom.scalar(replicas_reporting(sel))
    conc = prom.scalar(promql.in_flight(sel))
    return Now(rate_rps=rate, replicas=None if replicas is None else int(replicas),
               concurrency=conc)
