"""``redline top``: frames recorded with a rich Console, from fixed snapshots and live data."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from redline.config import load_config
from redline_operator.cli.main import main
from redline_operator.promql import PrometheusClient
from redline_operator.top import TargetSnapshot, collect, render, run_top, state_of

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "redline.yaml"
WORKLOAD = ROOT / "tests" / "workloads" / "fixed_concurrency.py"


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG)


def recording_console() -> Console:
    """A Console that records what it prints and writes it nowhere."""
    return Console(record=True, width=160, color_system=None, file=io.StringIO())


def frame_text(renderable) -> str:
    console = recording_console()
    console.print(renderable)
    return console.export_text()


def test_state_follows_the_thresholds(cfg):
    t = cfg.targets[0]  # saturation 16, warn 11.2, page 13.6
    assert [state_of(v, t) for v in (None, 0, 11.1, 11.2, 13.6, 16, 30)] == \
        ["idle", "ok", "ok", "warn", "page", "saturated", "saturated"]


def test_frame_shows_levels_headroom_latency_and_refresh(cfg):
    t = cfg.targets[0]
    snap = TargetSnapshot(t, in_flight=14.0, p95=0.8, p99=1.6, ttft_p95=0.25, retries_per_s=1.5)
    text = frame_text(render([snap], "http://prom:9090", 2.0, now=0))
    assert t.name in text and "14.0" in text
    assert f"{t.warn_concurrency:g}/{t.page_concurrency:g}/{t.saturation_concurrency:g}" in text
    assert "12%" in text and "page" in text  # headroom 1 - 14/16
    assert "800 ms" in text and "1.60 s" in text and "250 ms" in text and "1.50" in text
    assert "refresh 2s" in text and "Ctrl-C" in text


def test_unreachable_prometheus_is_shown_and_once_exits_1(cfg):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    console = recording_console()
    with PrometheusClient(f"http://127.0.0.1:{port}", timeout=2) as prom:
        assert run_top(prom, cfg, interval=0.1, console=console, frames=1) == 1
    assert "unreachable" in console.export_text()


def test_bad_interval_is_a_user_error(capsys):
    assert main(["top", "--interval", "0", "--config", str(CONFIG)]) == 2
    assert "--interval" in capsys.readouterr().err


@pytest.fixture(scope="module")
def busy(stack):
    """Six calls held in flight against the sim (4 slots) while the test looks."""
    from redline_operator.sim import SimConfig, run_in_thread

    service = f"top-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, OTEL_SERVICE_NAME=service,
               OTEL_EXPORTER_OTLP_ENDPOINT=stack.otlp_endpoint,
               OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_METRIC_EXPORT_INTERVAL="1000")
    with run_in_thread(SimConfig(slots=4, seed=5), port=0) as sim:
        proc = subprocess.Popen([sys.executable, str(WORKLOAD), sim.url, "6", "25",
                                 "/dev/null"], env=env)
        time.sleep(12)  # exports every second; p95 needs a few of them in the rate window
        try:
            yield stack.prometheus_url
        finally:
            proc.wait(timeout=60)


@pytest.mark.stack
@pytest.mark.slow
def test_live_frame_reads_concurrency_and_latency(busy, cfg):
    with PrometheusClient(busy) as prom:
        snap = collect(prom, cfg)[0]
        console = recording_console()
        assert run_top(prom, cfg, interval=0.1, console=console, frames=1) == 0
    assert snap.in_flight is not None and snap.in_flight >= 1
    assert snap.p95 is not None and 0 < snap.p95 < 60
    assert snap.ttft_p95 is not None and snap.ttft_p95 <= snap.p95
    text = console.export_text()
    assert cfg.targets[0].name in text and "error" not in text


def _default_sigint() -> None:
    # A suite started in the background (`make test &`, a CI runner without job control)
    # inherits SIGINT ignored, and so would `redline top`: give it what a terminal gives.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _top(prometheus: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "redline_operator", "top", "--prometheus",
                             prometheus, "--config", str(CONFIG), "--interval", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _interrupt(proc: subprocess.Popen) -> tuple[float, str, str]:
    """SIGINT; returns seconds until exit, stdout, stderr."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    return time.monotonic() - sent, out, err


class FakeStuckPrometheus:
    """A named fake: accepts HTTP requests and never finishes answering them.

    ``hang`` never sends a byte; ``trickle`` sends a status line and headers, then one
    body byte per second, so the client is stuck reading a response that never ends.
    ``asked`` is set once a request has arrived (the client is inside a query).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.asked = threading.Event()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeStuckPrometheus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        conns = []
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        for conn in conns:
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.asked.set()
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000000\r\n\r\n")
                while not self._stop.wait(1.0):
                    conn.sendall(b" ")
            else:
                self._stop.wait()
        except OSError:
            pass  # the client went away


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_ctrl_c_exits_within_a_second_while_prometheus_hangs(mode):
    with FakeStuckPrometheus(mode) as prom:
        proc = _top(prom.url)
        assert prom.asked.wait(60), "redline top never queried the fake Prometheus"
        time.sleep(0.3)  # well inside the query that will not end
        assert proc.poll() is None
        took, out, err = _interrupt(proc)
    print(f"\nredline top ({mode}): exit {took:.2f}s after SIGINT")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert took < 2.0, f"redline top took {took:.1f}s to exit after Ctrl-C"  # ~0.1 s idle


@pytest.mark.stack
@pytest.mark.slow
def test_ctrl_c_exits_cleanly(busy):
    proc = _top(busy)
    time.sleep(8)  # past start-up (imports on a busy machine) into the refresh loop
    took, out, err = _interrupt(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "redline top" in out
    assert took < 2.0, f"redline top took {took:.1f}s to exit after Ctrl-C"
