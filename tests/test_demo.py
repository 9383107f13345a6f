"""`redline demo`, the README's main job, shortened: real stack, real sim, real SDK."""

import math
import os
import re
import socket
import subprocess
import sys
import uuid

import pytest

from redline_operator.demo import ramp_levels


def test_ramp_reaches_twice_the_slots_with_points_around_the_knee():
    levels = ramp_levels(16)
    assert levels[0] == 1 and levels[-1] == 32
    assert {12, 16, 20, 24} <= set(levels)
    assert levels == sorted(set(levels))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.stack
def test_short_demo_prints_what_prometheus_reports(stack, repo_root):
    # its own service name: the shared stack may hold an earlier run's series of this test
    env = dict(os.environ, COLUMNS="120", OTEL_SERVICE_NAME=f"demo-test-{uuid.uuid4().hex[:8]}")
    proc = subprocess.run(
        # The plan needs 3 one-second samples of a 4 s average at one level at or past the
        # concurrency target (12): the top level goes past it, and its step outlasts the
        # average's ramp (4 s steps at exactly 12 passed or failed with the machine's load).
        [sys.executable, "-m", "redline_operator", "demo", "--levels", "1,4,16", "--slots", "4",
         "--step-seconds", "8", "--warmup-seconds", "1", "--sim-port", str(_free_port())],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"│\s+(\d+)\s+│\s+(\d+)\s+│\s+([\d.]+)\s+│\s+([\d.]+) s\s+│", proc.stdout)
    assert [int(r[0]) for r in rows] == [1, 4, 16], proc.stdout
    for agents, calls, in_flight, p95 in rows:
        assert int(calls) > 0
        # in-flight read back from Prometheus matches the agents the demo drove
        assert abs(float(in_flight) - int(agents)) <= 0.5 * int(agents), proc.stdout
        assert float(p95) > 0
    assert "Knee" in proc.stdout or "never turned upward" in proc.stdout
    # the plan for the sim: the concurrency target is 12 in flight (0.75 x knee 16)
    plan = re.search(r"Capacity plan for the sim \(4 slots per replica\): with 12 in flight "
                     r"per replica \(75% of the knee at 16\) one replica serves ([\d.]+) "
                     r"req/s: your peak of ([\d.]+) req/s needs (\d+) replicas?",
                     " ".join(proc.stdout.split()))
    assert plan, proc.stdout
    thr, peak, need = float(plan[1]), float(plan[2]), int(plan[3])
    assert thr > 0 and need == math.ceil(round(peak / thr, 9)), proc.stdout


def test_bad_levels_are_a_clear_error(repo_root):
    proc = subprocess.run([sys.executable, "-m", "redline_operator", "demo", "--levels", "1,x"],
                          cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--levels: expected comma-separated integers" in proc.stderr
