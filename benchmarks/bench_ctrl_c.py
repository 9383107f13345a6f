"""How fast do ``redline sweep`` and ``redline top`` stop after Ctrl-C?

Prints figures; it is not a timed test (the tests assert generous bounds). Each command
runs as a child with the default SIGINT disposition (what a terminal gives it, whatever
this script inherited) and gets SIGINT at a known point:

1. ``redline sweep`` in the middle of a level of C requests in flight against the real
   simulator (8 slots, so most of the C wait for a slot), for several C.
2. ``redline top`` while its query hangs on a fake Prometheus that accepts the request
   and never answers.

Usage::

    .venv/bin/python benchmarks/bench_ctrl_c.py [--levels 64,512,2000]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIM = [sys.executable, "-m", "redline_operator", "sim", "--port", "0", "--slots", "8",
       "--decode-base-s", "0.02", "--prefill-base-s", "0.001"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen) -> float:
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return time.monotonic() - sent


def _sim_url(proc: subprocess.Popen) -> str:
    for line in proc.stdout:
        if "http://127.0.0.1:" in line:
            return "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0].rstrip("/")
    raise RuntimeError("the sim did not say where it listens")


def sweep_stop(url: str, level: int, out: Path) -> tuple[float, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline_operator", "sweep", "--base-url", f"{url}/v1",
         "--model", "sim-model", "--levels", f"1,{level}", "--output-tokens", "16",
         "--prompt-tokens", "8", "--warmup", "0", "--min-duration", "0.5",
         "--min-requests", "6", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_default_sigint)
    while proc.poll() is None:
        try:
            if json.loads((out / "results.json").read_text())["steps"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    time.sleep(5)  # the level's workers are connected and waiting
    return _interrupt(proc), proc.returncode


def top_stop() -> tuple[float, int]:
    asked = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conns = []
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            asked.set()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    proc = subprocess.Popen([sys.executable, "-m", "redline_operator", "top", "--prometheus",
                             url, "--interval", "0.5"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_default_sigint)
    asked.wait(60)
    time.sleep(1)
    took = _interrupt(proc)
    server.close()
    return took, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="64,512,2000")
    args = parser.parse_args()
    with open("/proc/loadavg") as fh:
        print(f"load average before: {fh.read().split()[0]}")
    sim = subprocess.Popen(SIM, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = _sim_url(sim)
        for level in (int(x) for x in args.levels.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                took, rc = sweep_stop(url, level, Path(tmp))
            print(f"redline sweep, {level:5d} in flight: exit {rc} {took:.2f} s after SIGINT")
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    took, rc = top_stop()
    print(f"redline top, query hanging: exit {rc} {took:.2f} s after SIGINT")


if __name__ == "__main__":
    main()
