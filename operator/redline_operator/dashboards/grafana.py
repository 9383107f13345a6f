"""What Grafana 11.6 does with redline's panels, in Python, so it can run without Grafana.

Grafana cannot run here, so the rules its source applies to these panels are ported,
each with the file it comes from (grafana/grafana, 11.6.x; stored commits of those files
were read, not a built tag):

* variables: ``interpolateQueryExpr`` with ``prometheusRegularEscape`` /
  ``prometheusSpecialRegexEscape`` (packages/grafana-prometheus/src/datasource.ts,
  feature toggle ``prometheusSpecialCharsInLabelValues`` off, its 11.6 default), and a
  custom "All" value inserted unescaped (public/app/features/templating/template_srv.ts);
* ``$__interval`` = ``roundInterval(range / maxDataPoints)``, at least the datasource's
  ``timeInterval`` (``calculateInterval``, packages/grafana-data/src/datetime/rangeutil.ts);
  the query step = that interval, at least ``range / 11000``, and ``$__rate_interval`` =
  ``max($__interval + timeInterval, 4 * timeInterval)`` (``calculatePrometheusInterval``,
  ``calculateRateInterval``, pkg/promlib/models/query.go); range start and end are
  aligned down to the step (``AlignTimeRange``, same file);
* the ``joinByField`` transformation in outer mode on ``Time`` (one frame out);
* the XY chart's series (``prepSeries``, public/app/plugins/panel/xychart/utils.ts):
  manual mode skips a series without a frame matcher, matches frames only ``byIndex``,
  x and y fields ``byName`` on the display name, numbers only, one series per config,
  colour from the y field's ``color`` (fixed mode), names from ``name.fixed``.

:func:`knee_frame` runs the knee panel's queries like Grafana and returns its series;
``redline dashboards --render-png`` draws the README picture from exactly that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "View",
    "Frame",
    "XYSeries",
    "round_interval_ms",
    "interval_s",
    "step_s",
    "rate_interval_s",
    "go_duration",
    "expand",
    "regular_escape",
    "special_regex_escape",
    "field_config",
    "join_by_time",
    "xy_series",
    "run_panel",
    "knee_frame",
]

_LADDER_MS = [  # roundInterval: (below this many ms, use this many ms)
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500),
    (1500, 1000), (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000),
    (25000, 20000), (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000),
    (750000, 600000), (1050000, 900000), (1500000, 1200000), (2700000, 1800000),
    (5400000, 3600000), (9000000, 7200000), (16200000, 10800000), (32400000, 21600000),
    (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000),
    (3628800000, 2592000000)]
SAFE_RESOLUTION = 11000  # Prometheus refuses more points per series; Grafana widens the step


def round_interval_ms(ms: float) -> int:
    """rangeutil.ts ``roundInterval``."""
    for below, value in _LADDER_MS:
        if ms < below:
            return value
    return 31536000000


@dataclass(frozen=True)
class View:
    """What a viewer has on screen: the time range and the panel's width in pixels
    (Grafana's ``maxDataPoints`` for a panel is its width)."""

    range_s: float = 1800.0  # the dashboards' default, now-30m
    max_data_points: int = 900  # a half-width panel on a 1920 px screen
    scrape_s: float = 5.0  # the datasource's jsonData.timeInterval (provisioning)


def interval_s(view: View) -> float:
    """``$__interval`` in seconds."""
    ms = round_interval_ms(view.range_s * 1000 / view.max_data_points)
    return max(ms, view.scrape_s * 1000) / 1000


def step_s(view: View) -> float:
    """The query step the backend sends to Prometheus."""
    safe = view.range_s / SAFE_RESOLUTION
    if safe > 1:
        safe = math.ceil(safe)
    return max(interval_s(view), safe)


def rate_interval_s(view: View) -> float:
    """``$__rate_interval`` in seconds (calculateRateInterval)."""
    return max(interval_s(view) + view.scrape_s, 4 * view.scrape_s)


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for whole seconds (what replaces the variable)."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def regular_escape(value: str) -> str:
    """``prometheusRegularEscape`` (a variable that is neither multi nor include-all)."""
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def special_regex_escape(value: str) -> str:
    """``prometheusSpecialRegexEscape`` (multi-value or include-all variables)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]+?.()|]", lambda m: "\\\\" + m.group(), value)


def _variable_value(variable: Mapping, selected: str | Sequence[str] | None) -> str:
    multi = variable.get("multi") or variable.get("includeAll")
    if selected is None:
        selected = variable["current"]["value"]
    if selected in ("$__all", ["$__all"]) and variable.get("allValue"):
        return variable["allValue"]  # a custom All value is inserted as it is
    if not multi:
        return regular_escape(selected if isinstance(selected, str) else selected[0])
    values = [selected] if isinstance(selected, str) else list(selected)
    escaped = [special_regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(expr: str, model: Mapping, view: View, selected: Mapping | None = None) -> str:
    """``expr`` as Grafana 11.6 sends it to Prometheus: dashboard variables (their
    current value unless ``selected`` names another), then the interval variables."""
    selected = selected or {}
    variables = {v["name"]: v for v in model["templating"]["list"]}
    for name in sorted(variables, key=len, reverse=True):  # $server_job before $job
        value = _variable_value(variables[name], selected.get(name))
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    for var, seconds in (("__rate_interval", rate_interval_s(view)),
                         ("__interval", interval_s(view)), ("__range", view.range_s)):
        expr = expr.replace("${" + var + "}", go_duration(seconds))
        expr = expr.replace("$" + var, go_duration(seconds))
    return expr


# --- frames ------------------------------------------------------------------------------

@dataclass
class Frame:
    """One series as Grafana's Prometheus datasource returns it: a time and a value field;
    the value field's display name is the rendered legend."""

    name: str
    labels: dict[str, str]
    points: list[tuple[float, float]]


def _legend(legend: str, labels: Mapping[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend)


def run_panel(prom, panel: Mapping, model: Mapping, view: View, at: float,
              selected: Mapping | None = None) -> list[Frame]:
    """Every query of ``panel`` through ``prom`` (a :class:`redline_operator.promql.
    PrometheusClient`) as Grafana runs it at time ``at``: frames in query order."""
    frames = []
    step = step_s(view)
    end = math.floor(at / step) * step
    start = math.floor((at - view.range_s) / step) * step
    for target in panel.get("targets", []):
        expr = expand(target["expr"], model, view, selected)
        if target.get("instant"):
            results = [{"metric": r.labels, "values": [(at, r.value)]}
                       for r in prom.query(expr, at)]
        else:
            results = prom.query_range(expr, start, end, step)
        for r in results:
            points = [(float(t), float(v)) for t, v in r["values"] if math.isfinite(float(v))]
            frames.append(Frame(_legend(target.get("legendFormat", ""), r["metric"]),
                                dict(r["metric"]), points))
    return frames


def join_by_time(frames: Sequence[Frame]) -> tuple[list[float], dict[str, list[float | None]]]:
    """joinByField, mode outer, on Time: one frame with every time any series has; a
    series without a value at a time gets null there. Fields keep their display names."""
    times = sorted({t for f in frames for t, _ in f.points})
    index = {t: i for i, t in enumerate(times)}
    fields: dict[str, list[float | None]] = {}
    for f in frames:
        values: list[float | None] = [None] * len(times)
        for t, v in f.points:
            values[index[t]] = v
        fields[f.name] = values
    return times, fields


def field_config(panel: Mapping, name: str) -> dict:
    """The field config Grafana applies to the field ``name``: defaults, then every
    ``byName`` override matching it, in order."""
    config = {k: v for k, v in panel["fieldConfig"]["defaults"].items()}
    config["custom"] = dict(config.get("custom", {}))
    for override in panel["fieldConfig"].get("overrides", []):
        matcher = override["matcher"]
        if matcher.get("id") == "byName" and matcher.get("options") == name:
            for prop in override["properties"]:
                if prop["id"].startswith("custom."):
                    config["custom"][prop["id"][len("custom."):]] = prop["value"]
                else:
                    config[prop["id"]] = prop["value"]
    return config


@dataclass
class XYSeries:
    """One series an XY chart draws: its legend name, colour, how it is drawn, and the
    (x, y) pairs of the rows where both fields have a value."""

    name: str
    color: str | None
    show: str
    pairs: list[tuple[float, float]] = field(default_factory=list)


def xy_series(panel: Mapping, fields: Mapping[str, list[float | None]]) -> list[XYSeries]:
    """``prepSeries`` for one joined frame (frame index 0), manual or auto mapping."""
    options = panel["options"]
    manual = options.get("mapping") == "manual"
    out = []
    for cfg in options.get("series") or [{}]:
        frame_matcher = (cfg.get("frame") or {}).get("matcher")
        x_m = (cfg.get("x") or {}).get("matcher")
        y_m = (cfg.get("y") or {}).get("matcher")
        if manual and (frame_matcher is None or x_m is None or y_m is None):
            continue  # "must match frame in manual mode"
        if frame_matcher is not None and not (frame_matcher.get("id") == "byIndex"
                                              and frame_matcher.get("options") == 0):
            continue  # getFrameMatcher2: byIndex only, strict equality with the index
        x_name = _match(x_m, fields)
        if x_name is None:
            continue
        y_name = next((n for n in fields if n != x_name and _matches(y_m, n)
                       and not field_config(panel, n)["custom"].get("hideFrom", {}).get("viz")),
                      None)
        if y_name is None:
            continue
        y_cfg = field_config(panel, y_name)
        color = y_cfg.get("color") or {}
        pairs = [(x, y) for x, y in zip(fields[x_name], fields[y_name], strict=True)
                 if x is not None and y is not None]
        out.append(XYSeries((cfg.get("name") or {}).get("fixed", y_name),
                            color.get("fixedColor") if color.get("mode") == "fixed" else None,
                            y_cfg["custom"].get("show", "points"), pairs))
    _auto_name(out)
    return out


def _matches(matcher: Mapping | None, name: str) -> bool:
    if matcher is None:
        return True  # byType number: every field here is a number
    return matcher.get("id") == "byName" and matcher.get("options") == name


def _match(matcher: Mapping | None, fields: Mapping) -> str | None:
    return next((n for n in fields if _matches(matcher, n)), None)


def _auto_name(series: list[XYSeries]) -> None:
    """autoNameSeries: strip word prefixes/suffixes common to every series name (the
    quirky index-aligned comparison of the source, kept)."""
    if len(series) < 2:
        return
    names = [s.name.split() for s in series]
    seg0 = names[0]
    for segs in names[1:]:
        if len(segs) < len(seg0):
            seg0 = segs
    prefix = suffix = math.inf
    for segs in names[1:]:  # the source starts at 1 and skips the shortest
        if segs is seg0:
            continue
        pre = next((j for j in range(len(seg0)) if j >= len(segs) or segs[j] != seg0[j]),
                   len(seg0))
        suf = 0
        for j in range(len(seg0) - 1, -1, -1):
            if j < len(segs) and segs[j] == seg0[j]:
                suf += 1
            else:
                break
        prefix, suffix = min(prefix, pre), min(suffix, suf)
    if prefix < math.inf or suffix < math.inf:
        for s, segs in zip(series, names, strict=True):
            s.name = " ".join(segs[int(prefix):len(segs) - int(suffix)])


KNEE_TITLE = "p95 against concurrency (the knee)"


def knee_frame(prom, model: Mapping, target: str, view: View, at: float
               ) -> tuple[list[float], dict[str, list[float | None]], list[XYSeries]]:
    """The knee panel as Grafana draws it for ``target``: the joined frame and its XY
    series (the (concurrency, p95) cloud first, then one series per threshold mark)."""
    panel = next(p for p in model["panels"] if p.get("title") == KNEE_TITLE)
    frames = run_panel(prom, panel, model, view, at, {"target": target})
    times, fields = join_by_time(frames)
    return times, fields, xy_series(panel, fields)
