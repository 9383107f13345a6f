"""Sweep output: ``results.json``, ``steps.csv`` and ``sweep.png``, each written atomically.

Every file is written to a temporary sibling and renamed over the target, so a reader (or
a Ctrl-C mid-write) never sees half a file.

Example::

    paths = write_report(result, Path("sweep-out"))
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

from redline_operator.sweep.runner import SweepResult

__all__ = ["write_report", "atomic_write_bytes", "atomic_write_text", "plot_png",
           "CSV_COLUMNS"]

CSV_COLUMNS = [
    "concurrency", "requests", "ok", "success_rate", "latency_p50", "latency_p95",
    "latency_p99", "latency_mean", "ttft_p50", "ttft_p95", "ttft_p99", "throughput_rps",
    "tokens_per_s", "attempts", "retries", "retry_rate", "mean_in_flight",
    "little_expected_in_flight", "little_rel_error", "little_ok", "duration_s", "accepted",
    "reject_reasons", "unit", "sessions_in_flight", "duty_cycle", "design_duty_cycle",
    "session_p95", "sessions_per_min", "session_success_rate",
]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _csv(result: SweepResult) -> str:
    verdicts = {v.concurrency: v for v in result.analysis.verdicts}
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for step in result.steps:
        row = step.to_dict()
        v = verdicts[step.concurrency]
        row["accepted"] = v.accepted
        row["reject_reasons"] = "; ".join(v.reasons)
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


def plot_png(result: SweepResult) -> bytes:
    """p50/p95/p99 latency vs concurrency, knee and threshold marked, throughput on the right."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = result.steps
    a = result.analysis
    xs = [s.concurrency for s in steps]
    fig = Figure(figsize=(14 if result.unit == "sessions" else 8, 5), dpi=100)
    ax = fig.add_subplot()
    for name, style in (("latency_p50", "o-"), ("latency_p95", "s-"), ("latency_p99", "^-")):
        ax.plot(xs, [getattr(s, name) for s in steps], style, label=name.replace("latency_", ""))
    ax.set_xlabel("in-flight concurrency")
    ax.set_ylabel("latency (s)")
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    if a.knee is not None:
        key = "saturation_sessions" if result.unit == "sessions" else "saturation_concurrency"
        ax.axvline(a.knee, color="red", linestyle="--", label=f"knee = {key} {a.knee:g}")
    if a.recommended_cap is not None:
        ax.axvline(a.recommended_cap, color="green", linestyle=":",
                   label=f"recommended cap {a.recommended_cap}")
    ax2 = ax.twinx()
    ax2.plot(xs, [s.throughput_rps for s in steps], "d--", color="gray", alpha=0.7,
             label="throughput")
    ax2.set_ylabel("throughput (req/s)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    if result.unit == "sessions":
        _plot_both_units(fig, ax, result)
    title = f"redline sweep: {result.model} @ {result.base_url}"
    if result.status != "complete":
        title += f" ({result.status})"
    ax.set_title(title, fontsize=10)
    if result.unit != "sessions":
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_both_units(fig, ax, result: SweepResult) -> None:
    """A session sweep: p95 of model calls against sessions open and against calls in flight.

    The same p95 drawn over both x axes shows the two knees side by side: the server's, in
    model calls in flight, and the one a product owner plans with, in concurrent sessions.
    """
    ax.set_xlabel("concurrent sessions")
    right = fig.add_subplot(1, 2, 2)
    ax.set_position([0.07, 0.1, 0.4, 0.8])
    right.set_position([0.57, 0.1, 0.4, 0.8])
    steps = result.steps
    sa = result.session_analysis
    right.plot([s.sessions_in_flight for s in steps], [s.latency_p95 for s in steps], "s-",
               label="p95 vs sessions in flight")
    right.plot([s.mean_in_flight for s in steps], [s.latency_p95 for s in steps], "o-",
               label="p95 vs model calls in flight")
    if sa is not None and sa.call_knee_used is not None:
        right.axvline(sa.call_knee_used, color="purple", linestyle="--",
                      label=f"model-call knee {sa.call_knee_used:.3g}")
    if sa is not None and sa.session_knee is not None:
        right.axvline(sa.session_knee, color="red", linestyle="--",
                      label=f"session knee {sa.session_knee:g}")
    if sa is not None and sa.predicted_sessions is not None:
        right.axvline(sa.predicted_sessions, color="orange", linestyle=":",
                      label=f"K / duty cycle {sa.predicted_sessions:.3g}")
    right.set_xlabel("in flight (measured)")
    right.set_ylabel("model-call p95 latency (s)")
    right.grid(True, alpha=0.3)
    right.legend(loc="upper left", fontsize=7)


def _json_default(obj: object) -> object:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def write_report(result: SweepResult, out_dir: Path, *, plot: bool = True) -> dict[str, Path]:
    """Write results.json, steps.csv and (with ``plot``) sweep.png into ``out_dir``.

    Returns:
        The paths written, by kind (``json``, ``csv``, ``png``).
    """
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "steps.csv"}
    atomic_write_text(paths["json"], json.dumps(result.to_dict(), indent=2,
                                                default=_json_default) + "\n")
    atomic_write_text(paths["csv"], _csv(result))
    if plot and result.steps:
        paths["png"] = out_dir / "sweep.png"
        atomic_write_bytes(paths["png"], plot_png(result))
    return paths
