"""promtool unit tests for each target's rules, derived from the same config.

For every alert the raw input series (what the OTLP receiver stores) are placed just above
and just below the configured threshold; the expected alerts carry their labels and fully
rendered annotations. promtool evaluates the real PromQL and Go templates, so a wrong
selector, operator, window or ``for`` fails here. Values are chosen so that the rendered
``{{ $value }}`` is exact (integer concurrency, histogram quantiles on bucket boundaries,
counter ratios that rate() extrapolation leaves unchanged).

Example::

    content = target_tests(cfg, cfg.target("sim"), rule_file="../sim.rules.yml")
"""

from __future__ import annotations

import math
import re

from redline.config import Config, Target, duration_seconds
from redline.semconv import METRICS, Attr, prom_label
from redline_operator.alerts import queries as q
from redline_operator.alerts import rules as r
from redline_operator.promql import quote

__all__ = ["target_tests", "address_tests", "humanize", "humanize_percentage",
           "humanize_duration"]

_SCHEMA = 3  # native-histogram buckets of ratio 2**(1/8): "just above" is within 9%


# --- Go template helpers (the subset the annotations use) -----------------------------------

def _g4(v: float) -> str:
    s = f"{v:.4g}"
    return s.replace("e+0", "e+").replace("e-0", "e-")


def humanize(v: float) -> str:
    """Prometheus' ``humanize`` (template/template.go): SI prefixes up and down."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize_percentage(v: float) -> str:
    return _g4(v * 100) + "%"


def humanize_duration(v: float) -> str:
    """Prometheus' ``humanizeDuration`` for positive values (template/template.go)."""
    if v >= 1:
        whole = int(v)
        secs, mins, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{days}d {hours}h {mins}m {secs}s"
        if hours:
            return f"{hours}h {mins}m {secs}s"
        if mins:
            return f"{mins}m {secs}s"
        return _g4(v) + "s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix + "s"


def _render(template: str, value: float, labels: dict[str, str]) -> str:
    out = template.replace("{{ $value | humanize }}", humanize(value))
    out = out.replace("{{ $value | humanizePercentage }}", humanize_percentage(value))
    out = out.replace("{{ $value | humanizeDuration }}", humanize_duration(value))
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], out)


# --- series -------------------------------------------------------------------------------

def _labels(**labels: str) -> str:
    # The same escaping as the rules' selectors: a quote or newline in a match value
    # must reach promtool as that character, not end the series' label value.
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in labels.items()) + "}"


def _call_labels(ex: _Expect, **extra: str) -> dict[str, str]:
    """Labels of a model-call series that the target's ``match`` selects, reported under
    the address the scenarios run with (``ex.address``)."""
    m = ex.target.match
    return {"job": m.service or "app",
            prom_label(Attr.SERVER_ADDRESS): ex.address or "api.example.com",
            prom_label(Attr.REQUEST_MODEL): m.model or "some-model", **extra}


def _series(metric: str, labels: dict[str, str], values: str) -> dict:
    return {"series": metric + _labels(**labels), "values": values}


def _ramp(start: float, step: float, count: int) -> str:
    """``count`` samples from ``start`` growing by ``step`` (promtool expanding notation)."""
    return f"{start:.12g}+{step:.12g}x{count - 1}"


def _num(value: float) -> str:
    """A sample value that reads back as exactly ``value``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _samples(until_s: float, interval_s: float) -> int:
    return int(math.ceil(until_s / interval_s)) + 2


def _above(x: float) -> int:
    return math.floor(x) + 1


def _below(x: float) -> int:
    return math.ceil(x) - 1


def _ts(seconds: float) -> str:
    return f"{int(round(seconds))}s"


# --- expected alerts ----------------------------------------------------------------------

#: promtool evaluates every group at every test evaluation_interval over a test's whole
#: span; more evaluations than this per test only make the tests slow, not stricter.
_MAX_EVALUATIONS = 600
#: Most scenarios sample their series every 15 s: the tests must evaluate at least as often.
_SERIES_S = 15


def test_eval_seconds(cfg: Config, target: Target) -> float:
    """The fast rules' test evaluation interval: the config's (at most 15 s, the series'
    sampling), coarser only where long ``for`` durations at a short interval would need
    over ``_MAX_EVALUATIONS`` evaluations per test."""
    own = min(duration_seconds(cfg.evaluation_interval), _SERIES_S)
    d = target.durations
    span = max(duration_seconds(x) for x in (d.warn, d.page, d.latency)) + 360
    if span / own <= _MAX_EVALUATIONS:
        return own
    return float(min(_SERIES_S, math.ceil(span / _MAX_EVALUATIONS)))


class _Expect:
    def __init__(self, target: Target, cfg: Config, address: str | None = None) -> None:
        self.target, self.cfg = target, cfg
        addresses = target.match.server_addresses
        self.address = address or (addresses[0] if addresses else None)
        self.specs = r.alert_specs(target)
        self.eval_s = test_eval_seconds(cfg, target)

    def alert(self, name: str, severity: str, value: float, **labels: str) -> dict:
        spec = next(s for s in self.specs if s.name == name and s.severity == severity)
        rule = spec.rule(self.target, self.cfg.runbook_base_url)
        all_labels = {**labels, **rule["labels"]}
        ann = {k: _render(v, value, all_labels) for k, v in rule["annotations"].items()}
        return {"exp_labels": all_labels, "exp_annotations": ann}


def _check(eval_s: float, alertname: str, *alerts: dict) -> dict:
    return {"eval_time": _ts(eval_s), "alertname": alertname, "exp_alerts": list(alerts)}


def _test(name: str, interval_s: float, series: list[dict], checks: list[dict]) -> dict:
    return {"name": name, "interval": _ts(interval_s), "input_series": series,
            "alert_rule_test": checks}


# --- scenarios ----------------------------------------------------------------------------

def _concurrency(t: Target, ex: _Expect) -> list[dict]:
    iv = 15
    warn_s, page_s = duration_seconds(t.durations.warn), duration_seconds(t.durations.page)
    end = max(warn_s, page_s) + 2 * iv
    name = r.CONCURRENCY
    metric = METRICS.REQUESTS_IN_FLIGHT.prom

    def two_processes(total: float) -> list[dict]:
        # Halving is exact in binary floating point, so the two halves sum to `total`.
        a = total // 2 if float(total).is_integer() else total / 2
        return [_series(metric, _call_labels(ex, instance="a"),
                        f"{_num(a)}x{_samples(end, iv)}"),
                _series(metric, _call_labels(ex, instance="b"),
                        f"{_num(total - a)}x{_samples(end, iv)}")]

    hi_page, lo_page, lo_warn = (_above(t.page_concurrency), _below(t.page_concurrency),
                                 _below(t.warn_concurrency))
    if lo_page < t.warn_concurrency:  # no whole number between warn and page: the level
        lo_page = t.warn_concurrency  # itself (">=") is the one value that only warns
    return [
        _test(f"{name}: {hi_page} in flight (page level {t.page_concurrency:g}) warns and "
              f"pages, not before `for`", iv, two_processes(hi_page), [
                  *([_check(min(warn_s, page_s) - 5, name)] if min(warn_s, page_s) > 5
                    else []),
                  _check(end, name, ex.alert(name, "warn", hi_page),
                         ex.alert(name, "page", hi_page))]),
        _test(f"{name}: {lo_page} in flight only warns", iv, two_processes(lo_page),
              [_check(end, name, ex.alert(name, "warn", lo_page))]),
        _test(f"{name}: {lo_warn} in flight (warn level {t.warn_concurrency:g}) is quiet",
              iv, two_processes(lo_warn), [_check(end, name)]),
    ]


def _sessions(t: Target, ex: _Expect) -> list[dict]:
    if t.saturation_sessions is None:
        return []
    iv = 15
    end = duration_seconds(t.durations.warn) + 2 * iv
    name = r.SESSIONS
    metric = METRICS.SESSIONS_IN_FLIGHT.prom
    job = {"job": t.match.service} if t.match.service else {}

    def sessions(total: int) -> list[dict]:
        a = total // 2
        return [_series(metric, {**job, "instance": "a"}, f"{a}x{_samples(end, iv)}"),
                _series(metric, {**job, "instance": "b"}, f"{total - a}x{_samples(end, iv)}")]

    hi, lo = _above(t.warn_sessions), _below(t.warn_sessions)
    return [
        _test(f"{name}: {hi} sessions (warn level {t.warn_sessions:g}) warns", iv,
              sessions(hi), [_check(end, name, ex.alert(name, "warn", hi))]),
        _test(f"{name}: {lo} sessions is quiet", iv, sessions(lo), [_check(end, name)]),
    ]


def _predicted(t: Target, ex: _Expect) -> list[dict]:
    iv = ex.eval_s
    horizon = duration_seconds(t.durations.predict_horizon)
    hold = duration_seconds(t.durations.warn) + 2 * iv  # `for`, plus a margin
    # A minute of trend before `for` starts (the fit needs a few points), ending on an
    # evaluation: the forecast is checked at exactly the value computed there.
    end = math.ceil((hold + 60) / iv) * iv
    start_level = (t.predict_floor_concurrency + t.page_concurrency) / 2
    metric = METRICS.REQUESTS_IN_FLIGHT.prom
    tests = []
    # The forecast c(t) + slope * horizon grows with c(t). "Fires": it is just past the
    # knee when `for` starts; "quiet": it is just short of the knee at the end.
    for factor, fires in ((1.02, True), (0.98, False)):
        at = end - hold if fires else end
        slope = (t.saturation_concurrency * factor - start_level) / horizon
        first = start_level - slope * at
        forecast = first + slope * (end + horizon)
        series = [_series(metric, _call_labels(ex), _ramp(first, slope * iv,
                                                         int(end / iv) + 1))]
        expected = [ex.alert(r.PREDICTED, "warn", forecast)] if fires else []
        tests.append(_test(
            f"{r.PREDICTED}: trend reaching {t.saturation_concurrency * factor:g} in "
            f"{t.durations.predict_horizon} {'warns' if fires else 'is quiet'}", iv, series,
            [_check(end, r.PREDICTED, *expected)]))
    return tests


def _bucket_bound(index: int) -> float:
    return 2.0 ** (index / 2**_SCHEMA)


def _latency(t: Target, ex: _Expect, name: str, spec, slo: float) -> list[dict]:
    iv = 15
    end = duration_seconds(t.durations.latency) + 4 * iv
    exact = math.log2(slo) * 2**_SCHEMA
    tests = []
    # 95% of calls in bucket `a`, 5% in the next: p95 is exactly a's upper bound.
    for a, fires in ((math.floor(exact) + 1, True), (math.ceil(exact) - 1, False)):
        p95 = _bucket_bound(a)
        step = (f"{{{{schema:{_SCHEMA} sum:{95 * p95 + 5 * _bucket_bound(a + 1):.6g} "
                f"count:100 buckets:[95 5] offset:{a}}}}}")
        values = (f"{{{{schema:{_SCHEMA} sum:0 count:0}}}}+{step}x"
                  f"{_samples(end, iv)}")
        expected = [ex.alert(name, "page", p95)] if fires else []
        tests.append(_test(
            f"{name}: p95 {p95:.4g}s vs SLO {slo:g}s {'pages' if fires else 'is quiet'}",
            iv, [_series(spec.prom, _call_labels(ex), values)],
            [_check(end, name, *expected)]))
    return tests


def _window_ratio(end: float, window: float, iv: float, quiet_s: float, ratio: float) -> float:
    """Error ratio ``rate()`` sees: increases between the first and last sample in
    ``(end - window, end]`` (both counters share timestamps, so extrapolation cancels)."""
    first = max(0.0, math.floor((end - window) / iv + 1) * iv)

    def errors(ts: float) -> float:
        return max(0.0, ts - quiet_s) * ratio

    return (errors(end) - errors(first)) / (end - first)


def _burn_expected(ex: _Expect, e: float, iv: float, quiet_s: float, end: float,
                   ratio: float) -> list[dict]:
    """Which severities the multi-window rules must raise, computed independently of
    PromQL; the value is the long window's ratio of the first clause that holds."""
    out = []
    for severity in ("page", "warn"):
        for sev, factor, long, short in q.BURN_RATES:
            if sev != severity:
                continue
            ratios = [_window_ratio(end, duration_seconds(w), iv, quiet_s, ratio)
                      for w in (long, short)]
            if all(x > factor * e for x in ratios):
                out.append(ex.alert(r.ERROR_BUDGET, severity, ratios[0]))
                break
    return out


def _error_budget(t: Target, ex: _Expect, first_only: bool = False) -> list[dict]:
    e, name, iv = t.slo.error_ratio, r.ERROR_BUDGET, 60
    metric = METRICS.REQUESTS.prom
    err_labels = _call_labels(ex, **{prom_label(Attr.ERROR_TYPE): "timeout"})
    tests = []
    # (burn factor, seconds of quiet traffic first, seconds of burn). The 2h of quiet keep
    # the 6h window under 6x while 1h and 5m burn at 14.4x. Without quiet, every window
    # longer than the data sees the burn ratio itself (rate() over what there is), which
    # keeps promtool quick: 3d of samples would take minutes.
    scenarios = ((14.4, 2 * 3600, 3900), (6.0, 0, 2100), (3.0, 0, 2100), (1.0, 0, 2100))
    for factor, quiet_s, burn_s in scenarios[:1] if first_only else scenarios:
        for k in (1.05,) if first_only else (1.05, 0.95):
            ratio = factor * e * k
            per = 1000 * iv / 60  # 1000 calls a minute
            quiet, burn = int(quiet_s / iv), int(burn_s / iv) + 1
            ok = _ramp(0, per * (1 - ratio), burn)
            bad = _ramp(0, per * ratio, burn)
            if quiet:
                ok = _ramp(0, per, quiet) + " " + _ramp(quiet * per, per * (1 - ratio), burn)
                bad = _ramp(0, 0, quiet) + " " + bad
            end = quiet_s + burn_s
            exp = _burn_expected(ex, e, iv, quiet_s, end, ratio)
            verdict = "/".join(a["exp_labels"]["severity"] for a in exp) or "quiet"
            tests.append(_test(
                f"{name}: {ratio:.4g} errors ({k:g} x {factor:g}x budget) for "
                f"{burn_s / 3600:.3g}h after {quiet_s / 3600:g}h quiet: {verdict}", iv,
                [_series(metric, _call_labels(ex), ok), _series(metric, err_labels, bad)],
                [_check(end, name, *exp)]))
    return tests


def _retry_storm(t: Target, ex: _Expect) -> list[dict]:
    iv, name = 15, r.RETRY_STORM
    end = 300 + duration_seconds(t.durations.page) + 2 * iv
    n = _samples(end, iv)
    cause = {prom_label(Attr.ATTEMPT_CAUSE): "http_429"}
    tests = []
    for k, busy, fires in ((1.05, True, True), (0.95, True, False), (1.05, False, False)):
        ratio = t.retry_storm_ratio * k
        level = _above(t.warn_concurrency) if busy else _below(t.warn_concurrency)
        series = [
            _series(METRICS.RETRIES.prom, _call_labels(ex, **cause), _ramp(0, 100 * ratio, n)),
            _series(METRICS.REQUESTS.prom, _call_labels(ex), _ramp(0, 100, n)),
            _series(METRICS.REQUESTS_IN_FLIGHT.prom, _call_labels(ex), f"{level}x{n}"),
        ]
        exp = [ex.alert(name, "page", ratio)] if fires else []
        tests.append(_test(f"{name}: {ratio:.4g} retries per request at {level} in flight "
                           f"{'pages' if fires else 'is quiet'}", iv, series,
                           [_check(end, name, *exp)]))
    return tests


def _work_conserving(t: Target, ex: _Expect) -> list[dict]:
    iv, name = 15, r.WORK_CONSERVING
    end = duration_seconds(t.durations.warn) + 60 + 2 * iv
    pool = prom_label(Attr.POOL)
    labels = {prom_label(Attr.TARGET): t.name, pool: "model"}
    if t.match.service:
        labels["job"] = t.match.service
    tests = []
    for k, fires in ((1.05, True), (0.95, False)):
        frac = t.work_conserving_violation_ratio * k
        series = [_series(METRICS.LIMITER_WORK_CONSERVING_GAP.prom, labels,
                          _ramp(0, frac * iv, _samples(end, iv)))]
        exp = [ex.alert(name, "warn", frac, **{pool: "model"})] if fires else []
        tests.append(_test(f"{name}: queued while idle {frac:.4g} of the time "
                           f"{'warns' if fires else 'is quiet'}", iv, series,
                           [_check(end, name, *exp)]))
    return tests


def _gpu(t: Target, ex: _Expect) -> list[dict]:
    iv, name = 15, r.GPU
    end = duration_seconds(t.durations.warn) + 2 * iv
    n = _samples(end, iv)
    job = t.match.gpu_job or t.match.service
    base = {"job": job} if job else {}
    tests = []
    for delta, fires in ((0.01, True), (-0.01, False)):
        util = round(t.gpu_utilization_ceiling + delta, 6)
        series = [
            _series(METRICS.GPU_UTILIZATION.prom,
                    {**base, "instance": "node-a", prom_label(Attr.HW_GPU_INDEX): "0"},
                    f"{util:g}x{n}"),
            _series("DCGM_FI_DEV_GPU_UTIL", {**base, "instance": "dcgm-b", "gpu": "1"},
                    f"{util * 100:g}x{n}"),
        ]
        exp = ([ex.alert(name, "warn", util, instance="node-a", gpu="0"),
                ex.alert(name, "warn", util, instance="dcgm-b", gpu="1")] if fires else [])
        tests.append(_test(f"{name}: {util:g} busy from NVML and DCGM "
                           f"{'warns' if fires else 'is quiet'}", iv, series,
                           [_check(end, name, *exp)]))
    return tests


def _absent(t: Target, ex: _Expect) -> list[dict]:
    iv, name = 15, r.ABSENT
    step = duration_seconds(r.LONG_INTERVAL)
    absent = duration_seconds(t.durations.absent)
    lookback = duration_seconds(t.durations.absent_lookback)
    last = 600  # the app reports for 10 minutes, then stops
    reporting = [_series(METRICS.REQUESTS_IN_FLIGHT.prom, _call_labels(ex),
                         f"3x{int(last / iv)}")]
    return [
        _test(f"{name}: a target that stops reporting alerts after {t.durations.absent}, "
              f"until {t.durations.absent_lookback}", iv, reporting, [
                  _check(last - iv, name),
                  _check(last + absent - step, name),
                  _check(last + absent + step, name, ex.alert(name, "warn", 1)),
                  _check(last + lookback - 60, name, ex.alert(name, "warn", 1)),
                  _check(last + lookback + step, name)]),
        _test(f"{name}: a target that never reported is quiet (fresh Prometheus)", iv, [], [
            _check(absent + 60, name), _check(lookback + 600, name)]),
    ]


def address_tests(cfg: Config, target: Target, rule_file: str, address: str,
                  long: bool = False) -> dict:
    """promtool tests of one rule file with series reported under another ``address`` of
    the target (e.g. ``sim``, what docker compose's workload reports for
    ``http://sim:8000``): the scenarios that select model-call series, each named with it."""
    ex = _Expect(target, cfg, address)
    if long:
        tests = _error_budget(target, ex, first_only=True) + _absent(target, ex)[:1]
    else:
        tests = (_concurrency(target, ex)[:1] + _predicted(target, ex)[:1]
                 + _latency(target, ex, r.LATENCY, METRICS.OPERATION_DURATION,
                            target.slo.latency_p95_seconds)[:1]
                 + _latency(target, ex, r.TTFT, METRICS.TIME_TO_FIRST_CHUNK,
                            target.slo.ttft_p95_seconds)[:1]
                 + _retry_storm(target, ex)[:1])
    for test in tests:
        test["name"] += f" [{prom_label(Attr.SERVER_ADDRESS)}={address}]"
    interval = r.LONG_INTERVAL if long else _ts(ex.eval_s)
    return {"rule_files": [rule_file], "evaluation_interval": interval, "tests": tests}


def _fleet(t: Target, ex: _Expect) -> list[dict]:
    """The request rate grows linearly (the counter quadratically) toward the fleet's
    capacity at max_replicas: the forecast just past it when `for` starts fires, just
    short of it at the end is quiet.

    Samples every evaluation interval ``iv``: the 1m rate at ``t`` then sees the samples in
    ``(t - 60, t]``, and Prometheus extrapolates their increase to the whole window, so the
    recorded rate is exactly ``a + b (t - (60 - iv) / 2)`` for a counter
    ``c(t) = C0 + a t + b t^2 / 2``, and the linear fit over the predict window is exact.
    """
    cap = q.fleet_capacity(t)
    if cap is None:
        return []
    iv = ex.eval_s
    horizon = duration_seconds(t.durations.predict_horizon)
    window = duration_seconds(t.durations.predict_window)
    hold = duration_seconds(t.durations.warn) + 2 * iv
    end = 60 + window + hold
    lag = (60 - iv) / 2
    floor = cap * t.planning.fleet_floor_fraction
    metric = METRICS.REQUESTS.prom
    tests = []
    for factor, fires in ((1.05, True), (0.95, False)):
        at = end - hold if fires else end
        rate_at = (floor + cap) / 2  # above the floor, below the capacity
        b = (cap * factor - rate_at) / horizon
        a = rate_at - b * (at - lag)

        values = " ".join(f"{1e6 + a * ts + b * ts * ts / 2:.12g}"
                          for ts in (i * iv for i in range(int(end / iv) + 1)))
        forecast = a + b * (end - lag + horizon)
        expected = [ex.alert(r.FLEET, "warn", forecast)] if fires else []
        tests.append(_test(
            f"{r.FLEET}: rate trend reaching {cap * factor:g} req/s (capacity {cap:g}) in "
            f"{t.durations.predict_horizon} {'warns' if fires else 'is quiet'}", iv,
            [_series(metric, _call_labels(ex), values)], [_check(end, r.FLEET, *expected)]))
    return tests


def _per_replica(t: Target, ex: _Expect) -> list[dict]:
    """Two replicas at 7 and 5 in flight, 30 req/s in all: the per-replica records."""
    iv, end = 15, 120
    n = _samples(end, iv)
    in_flight, reqs = METRICS.REQUESTS_IN_FLIGHT.prom, METRICS.REQUESTS.prom
    series = [_series(in_flight, _call_labels(ex, instance="a"), f"7x{n}"),
              _series(in_flight, _call_labels(ex, instance="b"), f"5x{n}"),
              _series(reqs, _call_labels(ex, instance="a"), _ramp(0, 20 * iv, n)),
              _series(reqs, _call_labels(ex, instance="b"), _ramp(0, 10 * iv, n))]
    target = {"target": t.name}
    checks = [
        {"expr": q.recorded(q.INSTANCE_CONCURRENCY, t), "eval_time": _ts(end),
         "exp_samples": [{"labels": q.INSTANCE_CONCURRENCY + _labels(instance=i, **target),
                          "value": v} for i, v in (("a", 7), ("b", 5))]},
        {"expr": q.recorded(q.REPLICAS, t), "eval_time": _ts(end),
         "exp_samples": [{"labels": q.REPLICAS + _labels(**target), "value": 2}]},
    ]
    if q.has_plan(t):
        need = math.ceil(round(30 / t.planning.throughput_per_replica_rps, 9))
        checks.append({"expr": q.recorded(q.REPLICAS_NEEDED, t), "eval_time": _ts(end),
                       "exp_samples": [{"labels": q.REPLICAS_NEEDED + _labels(**target),
                                        "value": need}]})
    return [{"name": "per replica: 2 replicas at 7 and 5 in flight, 30 req/s", "interval":
             _ts(iv), "input_series": series, "promql_expr_test": checks}]


def target_tests(cfg: Config, target: Target, rule_file: str, long: bool = False) -> dict:
    """The promtool test file content for one of the target's rule files."""
    ex = _Expect(target, cfg)
    if long:
        tests = _error_budget(target, ex) + _absent(target, ex)
    else:
        tests = (_concurrency(target, ex) + _sessions(target, ex) + _predicted(target, ex)
                 + _latency(target, ex, r.TTFT, METRICS.TIME_TO_FIRST_CHUNK,
                            target.slo.ttft_p95_seconds)
                 + _latency(target, ex, r.LATENCY, METRICS.OPERATION_DURATION,
                            target.slo.latency_p95_seconds)
                 + _retry_storm(target, ex) + _work_conserving(target, ex) + _gpu(target, ex)
                 + _fleet(target, ex) + _per_replica(target, ex))
    # The long group runs every LONG_INTERVAL; its scenarios are timed on that cadence.
    interval = r.LONG_INTERVAL if long else _ts(ex.eval_s)
    return {"rule_files": [rule_file], "evaluation_interval": interval,
            "tests": tests}
