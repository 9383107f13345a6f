"""A PNG of the concurrency-vs-p95 view, drawn with matplotlib from live Prometheus data.

Grafana is not needed, and the picture is what the dashboard draws: :func:`fetch_knee`
runs the generated knee panel's queries the way Grafana 11.6 runs them (variables and
intervals expanded, range aligned to the step), joins them on Time as the panel's
``joinByField`` transformation does and takes its XY series with the panel's own mapping
(:mod:`.grafana`). The right-hand plot is exactly those (concurrency, p95) pairs and the
three threshold marks; the left-hand plot is the same joined frame over time.

Example::

    redline dashboards --render-png docs/img/concurrency-vs-p95.png \\
        --prometheus http://127.0.0.1:9090 --range 15m
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from redline.config import Config, Target
from redline_operator.dashboards import grafana
from redline_operator.promql import PrometheusClient

__all__ = ["KneePicture", "fetch_knee", "render_png"]

# Grafana's named colours (the panel's overrides) in matplotlib terms.
_COLORS = {"orange": "tab:orange", "red": "tab:red", "dark-red": "darkred",
           "purple": "tab:purple"}


@dataclass
class KneePicture:
    """The knee panel's joined frame and XY series for one target."""

    target: str
    times: list[float]
    fields: dict[str, list[float | None]]
    series: list[grafana.XYSeries]


def fetch_knee(prom: PrometheusClient, cfg: Config, target: Target, *, seconds: float,
               at: float | None = None) -> KneePicture:
    """The knee panel of ``cfg``'s saturation dashboard for ``target`` over the last
    ``seconds`` (ending ``at``, default now), as Grafana would compute it."""
    from redline_operator.dashboards import build_dashboards

    model = build_dashboards(cfg)["redline-saturation.json"]
    view = grafana.View(range_s=seconds)
    times, fields, series = grafana.knee_frame(prom, model, target.name, view,
                                               time.time() if at is None else at)
    return KneePicture(target.name, times, fields, series)


def render_png(picture: KneePicture, target: Target, path: str | Path) -> Path:
    """Draw the joined frame over time (two axes) and the panel's XY series.

    Raises:
        ValueError: the knee panel has no (concurrency, p95) pair to draw.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cloud, *marks = picture.series or [None]
    if cloud is None or not cloud.pairs:
        raise ValueError("the knee panel has no (concurrency, p95) pairs: is the workload "
                         "running, are the recording rules loaded, and does the target's "
                         "match selector fit its series?")
    t0 = picture.times[0]
    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110)
    fig.suptitle(f"redline — concurrency vs p95, target {target.name!r} (live Prometheus data)")

    def over_time(ax, name: str, **style):
        pts = [(t - t0, v) for t, v in zip(picture.times, picture.fields.get(name, []),
                                           strict=False) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)

    over_time(ax1, "in-flight", color="tab:blue", lw=2, label="in-flight")
    levels = [("warn", target.warn_concurrency), ("page", target.page_concurrency),
              ("saturation", target.saturation_concurrency)]
    for (name, value), mark in zip(levels, marks, strict=False):
        ax1.axhline(value, color=_COLORS.get(mark.color, "gray"), ls="--", lw=1.2,
                    label=f"{name} ({value:g})")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("calls in flight", color="tab:blue")
    ax2 = ax1.twinx()
    over_time(ax2, "p95", color="tab:purple", lw=2, label="p95 latency (1m)")
    ax2.set_ylabel("p95 latency (s)", color="tab:purple")
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax1.legend(handles=handles, loc="upper left", fontsize=8)
    ax1.set_title("over time (dashboard panel 1)", fontsize=10)

    ax3.scatter([x for x, _ in cloud.pairs], [y for _, y in cloud.pairs], s=14,
                color=_COLORS.get(cloud.color, "tab:purple"), alpha=0.7, label=cloud.name)
    for mark in marks:
        ys = [y for _, y in mark.pairs]
        x = mark.pairs[0][0] if mark.pairs else None
        if x is not None:
            ax3.plot([x, x], [min(ys), max(ys)], color=_COLORS.get(mark.color, "gray"),
                     ls="--", lw=1.4, label=f"{mark.name} ({x:g})")
    ax3.set_xlabel("calls in flight")
    ax3.set_ylabel("p95 latency over 1m (s)")
    ax3.set_title("p95 against concurrency: the knee (dashboard panel 2)", fontsize=10)
    ax3.legend(loc="upper left", fontsize=8)
    ax3.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
