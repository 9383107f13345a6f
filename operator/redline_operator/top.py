"""``redline top``: a terminal view of each target's concurrency against its thresholds.

Every number is read back from Prometheus with the same expressions as the Grafana
dashboards (:mod:`redline_operator.dashboards.queries`), so ``top`` and the dashboards never
disagree about what "p95" or "in flight" means.

Example::

    from rich.console import Console
    from redline.config import load_config
    from redline_operator.promql import PrometheusClient
    from redline_operator.top import collect, render

    with PrometheusClient("http://127.0.0.1:9090") as prom:
        Console().print(render(collect(prom, load_config()), prom.url, 2.0))
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from redline.config import Config, Target
from redline.semconv import METRICS
from redline_operator.dashboards import queries as q
from redline_operator.promql import PrometheusClient, PrometheusError

__all__ = ["TargetSnapshot", "collect", "render", "run_top", "state_of"]


@dataclass(frozen=True)
class TargetSnapshot:
    """One target's numbers at one instant (``None``: Prometheus has no value)."""

    target: Target
    in_flight: float | None
    p95: float | None
    p99: float | None
    ttft_p95: float | None
    retries_per_s: float | None

    @property
    def headroom(self) -> float | None:
        """1 - in_flight / saturation (negative past the knee)."""
        if self.in_flight is None:
            return None
        return 1 - self.in_flight / self.target.saturation_concurrency


def state_of(in_flight: float | None, target: Target) -> str:
    """``idle``, ``ok``, ``warn``, ``page`` or ``saturated`` by the target's thresholds."""
    if in_flight is None:
        return "idle"
    if in_flight >= target.saturation_concurrency:
        return "saturated"
    if in_flight >= target.page_concurrency:
        return "page"
    if in_flight >= target.warn_concurrency:
        return "warn"
    return "ok"


_STYLE = {"idle": "dim", "ok": "green", "warn": "yellow", "page": "bold red",
          "saturated": "bold white on red"}


def _target_exprs(cfg: Config, target: Target, window: str) -> dict[str, str]:
    def sub(expr: str) -> str:
        return q.substitute(expr, target=target.name, rate_interval=window)

    sel = q.substitute(q.target_selector(target), target=target.name)
    retries = f"sum(rate({METRICS.RETRIES.prom}{{{sel}}}[{window}]))"

    def quantile(qv: float, name: str) -> str:
        return f"histogram_quantile({qv}, sum(rate({name}{{{sel}}}[{window}])))"

    ttft = quantile(0.95, METRICS.TIME_TO_FIRST_CHUNK.prom)
    p99 = quantile(0.99, METRICS.OPERATION_DURATION.prom)
    return {"in_flight": sub(q.target_concurrency_raw(cfg.targets).expr),
            "p95": sub(q.target_p95_raw(cfg.targets).expr), "p99": p99, "ttft_p95": ttft,
            "retries_per_s": retries}


def collect(prom: PrometheusClient, cfg: Config, window: str = "1m") -> list[TargetSnapshot]:
    """Query Prometheus once for every target.

    Raises:
        PrometheusError: Prometheus is unreachable or refused a query.
    """
    rows = []
    for target in cfg.targets:
        values = {k: prom.scalar(e) for k, e in _target_exprs(cfg, target, window).items()}
        rows.append(TargetSnapshot(target=target, **values))
    return rows


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _bar(snapshot: TargetSnapshot, width: int = 12) -> Text:
    """Concurrency as a bar against saturation, with the warn and page marks."""
    t = snapshot.target
    full = max(t.saturation_concurrency, snapshot.in_flight or 0)
    filled = round(width * (snapshot.in_flight or 0) / full)
    marks = {round(width * t.warn_concurrency / full): "w",
             round(width * t.page_concurrency / full): "p"}
    bar = Text()
    for i in range(width):
        char = "█" if i < filled else marks.get(i, "·")
        bar.append(char, style=_STYLE[state_of(snapshot.in_flight, t)] if i < filled else "dim")
    return bar


def render(rows: Sequence[TargetSnapshot], prom_url: str, interval: float,
           error: str | None = None, now: float | None = None) -> Group:
    """One frame: a table of targets plus a status line."""
    table = Table(title="redline top — concurrency vs saturation", title_justify="left",
                  expand=False)
    for col, justify in (("target", "left"), ("in-flight", "right"), ("warn/page/sat", "right"),
                         ("load", "left"), ("headroom", "right"), ("state", "left"),
                         ("p95", "right"), ("p99", "right"), ("TTFT p95", "right"),
                         ("retry/s", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in rows:
        t, state = r.target, state_of(r.in_flight, r.target)
        table.add_row(
            t.name, _num(r.in_flight, ".1f"),
            f"{t.warn_concurrency:g}/{t.page_concurrency:g}/{t.saturation_concurrency:g}",
            _bar(r), _num(r.headroom, ".0%"), Text(state, style=_STYLE[state]),
            Text(_secs(r.p95), style="red" if (r.p95 or 0) > t.slo.latency_p95_seconds else ""),
            _secs(r.p99),
            Text(_secs(r.ttft_p95), style="red" if (r.ttft_p95 or 0) > t.slo.ttft_p95_seconds
                 else ""),
            _num(r.retries_per_s, ".2f"))
    stamp = time.strftime("%H:%M:%S", time.localtime(now or time.time()))
    status = Text(f"{prom_url} · refresh {interval:g}s · {stamp} · Ctrl-C to quit", style="dim")
    parts = [table, status]
    if error:
        parts.append(Text(f"error: {error}", style="bold red"))
    return Group(*parts)


def run_top(prom: PrometheusClient, cfg: Config, *, interval: float = 2.0, window: str = "1m",
            console: Console | None = None, frames: int | None = None) -> int:
    """Refresh the view every ``interval`` seconds until Ctrl-C (or ``frames`` frames).

    A Prometheus outage is shown in the view and retried; it does not end ``top``.
    Returns the exit code: 0, also after Ctrl-C; 1 when ``frames`` was given and the
    last frame could not be read from Prometheus.
    """
    console = console or Console()
    shown = 0
    rows: list[TargetSnapshot] = []
    error = None
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while frames is None or shown < frames:
                error = None
                try:
                    rows = collect(prom, cfg, window)
                except PrometheusError as exc:
                    error = str(exc)
                live.update(render(rows, prom.url, interval, error), refresh=True)
                shown += 1
                if frames is None or shown < frames:
                    time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    return 1 if frames is not None and error else 0
