"""`redline plan`: the notes' formulas, a sweep's results.json, bad input, --write."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from redline.config import load_config
from redline_operator.cli.main import main
from redline_operator.plan import formulas as f
from redline_operator.plan.sources import throughput_from_results

REPO = Path(__file__).resolve().parent.parent


def _results(path: Path, steps: list[tuple[int, float, float]], knee: float | None = None):
    path.write_text(json.dumps({
        "generated_by": "redline sweep", "format": 1, "model": "m",
        "base_url": "http://127.0.0.1:1/v1", "saturation_concurrency": knee,
        "steps": [{"concurrency": c, "throughput_rps": t, "latency_mean": lat}
                  for c, t, lat in steps]}))
    return path


#: redline.yaml has two targets (sim, vllm): a sweep's results are one of them
PLAN = ["plan", "--target", "sim"]


def _config(tmp_path: Path, knee: float = 32, fraction: float = 1.0) -> Path:
    text = (REPO / "redline.yaml").read_text()
    text = text.replace("saturation_concurrency: 16 ", f"saturation_concurrency: {knee:g} ")
    text = text.replace("target_fraction: 0.75", f"target_fraction: {fraction:g}")
    path = tmp_path / "redline.yaml"
    path.write_text(text)
    assert load_config(path).target("sim").concurrency_target == math.floor(knee * fraction)
    return path


def _plan_json(capsys, *args: str) -> dict:
    assert main([*PLAN, *args, "--json"]) == 0
    [plan] = json.loads(capsys.readouterr().out)["targets"]
    return plan


# --- seed note 004: 10 req/s per replica at concurrency 32, baseline 25, peak 80 -----------

def test_note_004_worked_example():
    assert f.min_replicas(25, 10) == 4  # (25 / 10) + 1, rounded up
    assert f.max_replicas(80, 10) == 10  # (80 / 10) + 2
    assert f.concurrency_target(32, 1.0) == 32


def test_note_004_worked_example_through_the_cli(tmp_path, capsys):
    cfg = _config(tmp_path, knee=32, fraction=1.0)
    res = _results(tmp_path / "results.json", [(8, 3.0, 2.6), (16, 6.0, 2.7), (32, 10.0, 3.2),
                                               (64, 10.4, 6.1)], knee=32)
    plan = _plan_json(capsys, "--config", str(cfg), "--results", str(res),
                      "--baseline-rps", "25", "--peak-rps", "80")
    assert (plan["concurrency_target"], plan["throughput_per_replica_rps"]) == (32, 10.0)
    assert (plan["min_replicas"], plan["max_replicas"]) == (4, 10)
    assert plan["formulas"]["min_replicas"].startswith("ceil(25 / 10) + 1 = 4")
    assert plan["formulas"]["max_replicas"].startswith("ceil(80 / 10) + 2 = 10")


# --- seed note 000: instances = peak users x avg latency / target rps per instance ---------

def test_note_000_instances_formula():
    assert f.instances_for_users(200, 1.5, 10) == 30.0
    assert f.instances_for_users(1000, 0.8, 16) == 50.0


def test_peak_users_with_think_time(tmp_path, capsys):
    cfg = _config(tmp_path, knee=16, fraction=0.75)  # target 12
    res = _results(tmp_path / "results.json", [(8, 10.0, 0.8), (16, 16.0, 1.0)])
    plan = _plan_json(capsys, "--config", str(cfg), "--results", str(res),
                      "--peak-users", "300", "--think-time", "9.1", "--baseline-rps", "5")
    # target 12 lies halfway between 8 and 16: 13 req/s, 0.9 s
    assert plan["throughput_per_replica_rps"] == pytest.approx(13.0)
    assert plan["latency_s"] == pytest.approx(0.9)
    assert plan["peak_rps"] == pytest.approx(300 / (0.9 + 9.1))  # 30 req/s
    assert plan["max_replicas"] == 3 + 2  # ceil(30 / 13) + buffer
    assert plan["min_replicas"] == 1 + 1
    assert plan["instances_for_users"] == pytest.approx(300 * 0.9 / 13.0)


def test_throughput_below_the_lowest_level_scales_through_zero(tmp_path):
    res = _results(tmp_path / "results.json", [(4, 8.0, 0.5), (8, 14.0, 0.57)])
    m = throughput_from_results(res, 2)
    assert m.throughput_rps == pytest.approx(4.0) and "through 0" in m.how
    assert throughput_from_results(res, 8).how == "measured at concurrency 8"


def test_interpolate_refuses_to_extrapolate():
    with pytest.raises(ValueError, match="outside"):
        f.interpolate([4, 8], [1, 2], 9)


# --- bad input: a clear error naming what to fix, exit 2, nothing written -----------------

def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", ["missing", "zero", "unknown_target", "not_a_sweep"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, case):
    cfg = _config(tmp_path, knee=16, fraction=0.75)
    res = tmp_path / "results.json"
    args = ["--results", str(res)]
    if case == "zero":
        _results(res, [(8, 0.0, 0.8), (16, 0.0, 1.0)])
    elif case == "unknown_target":
        _results(res, [(8, 10.0, 0.8), (16, 16.0, 1.0)])
        args += ["--target", "nosuch"]
    elif case == "not_a_sweep":
        res.write_text('{"steps": []}')
    before = _files(tmp_path)
    rc = main([*PLAN, "--config", str(cfg), *args, "--baseline-rps", "5", "--peak-rps", "20",
               "--write"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    expected = {
        "missing": [str(res), "file not found", "redline sweep"],
        "zero": [str(res), "0 req/s", "steps[", "throughput_rps"],
        "unknown_target": ["no target named 'nosuch'", "'sim'", str(cfg)],
        "not_a_sweep": [str(res), "generated_by", "redline sweep"],
    }[case]
    for text in expected:
        assert text in err, err
    assert _files(tmp_path) == before


def test_traffic_is_required_and_checked(tmp_path, capsys):
    cfg = _config(tmp_path, knee=16, fraction=0.75)
    res = _results(tmp_path / "results.json", [(8, 10.0, 0.8), (16, 16.0, 1.0)])
    assert main([*PLAN, "--config", str(cfg), "--results", str(res), "--peak-rps", "9"]) == 2
    assert "--baseline-rps" in capsys.readouterr().err
    assert main([*PLAN, "--config", str(cfg), "--results", str(res), "--baseline-rps", "9",
                 "--peak-rps", "3"]) == 2
    assert "above the peak" in capsys.readouterr().err
    assert main([*PLAN, "--config", str(cfg), "--baseline-rps", "1", "--peak-rps", "3"]) == 2
    assert "--results" in capsys.readouterr().err


# --- --write: the plan's numbers into redline.yaml, then `redline autoscaling` ------------

def test_write_keeps_comments_and_feeds_autoscaling(tmp_path, capsys):
    cfg = _config(tmp_path, knee=16, fraction=0.75)
    res = _results(tmp_path / "results.json", [(8, 10.0, 0.8), (12, 15.0, 0.8), (16, 16.0, 1)])
    assert main([*PLAN, "--config", str(cfg), "--results", str(res), "--baseline-rps", "20",
                 "--peak-rps", "100", "--write"]) == 0
    out = capsys.readouterr().out
    assert "min_replicas 3" in out and "max_replicas 9" in out  # ceil(20/15)+1, ceil(100/15)+2
    text = cfg.read_text()
    assert "# the knee: in-flight concurrency where p95 turns upward" in text
    p = load_config(cfg).target("sim").planning
    assert (p.throughput_per_replica_rps, p.min_replicas, p.max_replicas) == (15.0, 3, 9)
    assert main(["autoscaling", "--config", str(cfg)]) == 0
    keda = (tmp_path / "autoscaling" / "sim.keda.yaml").read_text()
    assert "maxReplicaCount: 9" in keda and "threshold: '12'" in keda
    assert main(["autoscaling", "--config", str(cfg), "--check"]) == 0
    # drift: a new target fraction changes the threshold; --check says so and writes nothing
    cfg.write_text(text.replace("target_fraction: 0.75", "target_fraction: 0.5"))
    capsys.readouterr()
    assert main(["autoscaling", "--config", str(cfg), "--check"]) == 1
    diff = capsys.readouterr().out
    assert "-        threshold: '12'" in diff and "+        threshold: '8'" in diff
    assert (tmp_path / "autoscaling" / "sim.keda.yaml").read_text() == keda


def test_sentence_and_formulas_keep_a_close_peak_and_throughput_apart(tmp_path, capsys):
    """CI printed "one replica serves 7.97 req/s: your peak of 7.97 req/s needs 2 replicas":
    both rounded to 3 digits, the exact ratio was 7.971 / 7.967 > 1. Printed figures must
    reproduce the replica count."""
    cfg = _config(tmp_path, knee=32, fraction=1.0)
    res = _results(tmp_path / "results.json", [(16, 4.0, 2.7), (32, 7.9668, 3.2)], knee=32)
    assert main([*PLAN, "--config", str(cfg), "--results", str(res),
                 "--baseline-rps", "4.87", "--peak-rps", "7.9671"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    m = re.search(r"serves ([\d.]+) req/s: your peak of ([\d.]+) req/s needs "
                  r"(\d+) replica", out)
    assert m, out
    thr, peak, need = float(m[1]), float(m[2]), int(m[3])
    assert (thr, peak, need) == (7.9668, 7.9671, 2)
    assert "ceil(7.9671 / 7.9668) + 2 = 4" in out
