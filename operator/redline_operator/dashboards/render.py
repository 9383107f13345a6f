"""A PNG of the concurrency-vs-p95 view, drawn with matplotlib from live Prometheus data.

Grafana is not needed: the picture runs the *same* expressions as the dashboard's lead
panels (``queries.target_concurrency``/``target_p95`` and the threshold levels), over a
``query_range``, so the README image shows what the dashboard shows.

Example::

    redline dashboards --render-png docs/img/concurrency-vs-p95.png \\
        --prometheus http://127.0.0.1:9090 --range 15m
"""

from __future__ import annotations

import time
from pathlib import Path

from redline.config import Config, Target
from redline_operator.dashboards import queries as q
from redline_operator.promql import PrometheusClient

__all__ = ["fetch_series", "render_png"]


def fetch_series(prom: PrometheusClient, cfg: Config, target: Target, *, seconds: float,
                 step: float = 2.0, rate_interval: str = "30s") -> dict[str, list[tuple]]:
    """``{"in-flight": [(t, v)...], "p95": [...]}`` for one target over the last ``seconds``."""
    end = time.time()
    out: dict[str, list[tuple]] = {}
    for query in (q.target_concurrency(cfg.targets, cfg.fresh_window), q.target_p95(cfg.targets)):
        expr = q.substitute(query.expr, target=target.name, rate_interval=rate_interval)
        result = prom.query_range(expr, end - seconds, end, step)
        out[query.legend] = [(float(t), float(v)) for r in result for t, v in r["values"]
                             if v not in ("NaN", "+Inf", "-Inf")]
    return out


def render_png(series: dict[str, list[tuple]], target: Target, path: str | Path) -> Path:
    """Draw concurrency and p95 over time (two axes) and p95 against concurrency.

    Raises:
        ValueError: there are no points where both series have a value.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc, p95 = dict(series["in-flight"]), dict(series["p95"])
    # Idle instants carry the p95 of calls that already ended; they are not a load point.
    both = sorted(t for t in conc if t in p95 and conc[t] > 0)
    if not both:
        raise ValueError("no instants with both concurrency and p95: is the workload running "
                         "and does the target's match selector fit its series?")
    t0 = both[0]
    levels = [("warn", target.warn_concurrency, "tab:orange"),
              ("page", target.page_concurrency, "tab:red"),
              ("saturation", target.saturation_concurrency, "darkred")]

    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110)
    fig.suptitle(f"redline — concurrency vs p95, target {target.name!r} (live Prometheus data)")
    xs = [t - t0 for t in sorted(conc)]
    ax1.plot(xs, [conc[t] for t in sorted(conc)], color="tab:blue", lw=2, label="in-flight")
    for name, value, color in levels:
        ax1.axhline(value, color=color, ls="--", lw=1.2, label=f"{name} ({value:g})")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("calls in flight", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot([t - t0 for t in sorted(p95)], [p95[t] for t in sorted(p95)], color="tab:purple",
             lw=2, label="p95 latency")
    ax2.set_ylabel("p95 latency (s)", color="tab:purple")
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax1.legend(handles=handles, loc="upper left", fontsize=8)
    ax1.set_title("over time (dashboard panel 1)", fontsize=10)

    ax3.scatter([conc[t] for t in both], [p95[t] for t in both], s=14, color="tab:purple",
                alpha=0.7, label="p95 at that concurrency")
    for name, value, color in levels:
        ax3.axvline(value, color=color, ls="--", lw=1.2, label=f"{name} ({value:g})")
    ax3.set_xlabel("calls in flight")
    ax3.set_ylabel("p95 latency (s)")
    ax3.set_title("p95 against concurrency: the knee (dashboard panel 2)", fontsize=10)
    ax3.legend(loc="upper left", fontsize=8)
    ax3.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
