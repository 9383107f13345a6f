"""Session sweeps (``redline sweep --unit sessions``): multi-turn agent sessions against the sim.

The live test runs the real sim with a known slot count and a workload with known tool and
think times, then checks what the issue asks of the measurement: the measured duty cycle
(model calls in flight / sessions in flight, both time-averaged) within 5% of the workload's
design value, the session knee within +-25% of slots / duty cycle, and the Little's-law
prediction (model-call knee / duty cycle) within 25% of the measured session knee.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from tests.test_sweep import _sweep as request_sweep
from tests.test_sweep import knee_levels, sim_process, sim_timing

from redline_operator.cli.main import main as cli_main
from redline_operator.sweep.knee import session_analysis
from redline_operator.sweep.load import StepPlan, TokenDist
from redline_operator.sweep.runner import SweepResult, run_sweep
from redline_operator.sweep.sessions import (
    SecondsDist,
    SessionLoadGenerator,
    SessionWorkload,
    summarize_sessions,
)
from redline_operator.sweep.stats import StepStats


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sessions.yaml"
    p.write_text(text)
    return p


def test_defaults_and_file_round_trip(tmp_path: Path) -> None:
    spec = SessionWorkload.from_file(_write(tmp_path, (
        "turns: 2-4\nprompt_tokens: 32\nturn_tokens: 8\noutput_tokens: 12\nstream: false\n"
        "tool:\n  probability: 0.5\n  duration_s: 0.1-0.3\nthink_s: 0.5,1.5\n")))
    assert spec.turns == TokenDist(low=2, high=4)
    assert spec.stream is False and spec.tool_probability == 0.5
    assert spec.tool_s.mean == pytest.approx(0.2) and spec.think_s.mean == pytest.approx(1.0)
    assert SessionWorkload.from_file(_write(tmp_path, "")) == SessionWorkload()
    assert SessionWorkload.from_file(_write(tmp_path, "tool: false\n")).tool_probability == 0


def test_design_duty_cycle_is_calls_over_the_whole_session() -> None:
    spec = SessionWorkload(turns=TokenDist(values=(3,)), tool_probability=1.0,
                           tool_s=SecondsDist(values=(0.5,)), think_s=SecondsDist(values=(1.0,)))
    # 3 calls of 0.5 s, 3 tools of 0.5 s, 2 thinks of 1 s: 1.5 / (1.5 + 1.5 + 2)
    assert spec.design_duty_cycle(0.5) == pytest.approx(1.5 / 5.0)


@pytest.mark.parametrize(("text", "line", "field"), [
    ("turns: 3\nthink_s: -1\n", 2, "think_s"),
    ("turns: zero\n", 1, "turns"),
    ("turns: 3\n\nstream: maybe\n", 3, "stream"),
    ("tool:\n  probability: 2\n", 2, "tool.probability"),
    ("tool:\n  duration_s: 1\n  speed: 3\n", 3, "tool.speed"),
    ("turns: 3\nthinking: 1\n", 2, "thinking"),
    ("turns: 100000\n", 1, "turns"),
    ("tool: 7\n", 1, "tool"),
])
def test_bad_session_file_names_line_and_field(tmp_path: Path, text: str, line: int,
                                               field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        SessionWorkload.from_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    assert field in msg, msg


def test_bad_session_file_is_a_cli_error_before_any_load(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "turns: 3\nthink_s: soon\n")
    code = cli_main(["sweep", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                     "--unit", "sessions", "--sessions", str(path), "--out",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:2" in err and "think_s" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_sessions_flag_needs_unit_sessions(tmp_path: Path, capsys) -> None:
    code = cli_main(["sweep", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                     "--sessions", str(_write(tmp_path, "turns: 2\n"))])
    assert code == 2 and "--unit sessions" in capsys.readouterr().err


def _record(start: float, end: float, **kw):
    from redline_operator.sweep.load import RequestRecord

    return RequestRecord(start=start, end=end, first_chunk=start + 0.01, ok=True, done=True,
                         output_tokens=4, **kw)


def test_summary_integrates_sessions_and_calls_over_the_window() -> None:
    from redline_operator.sweep.sessions import SessionRecord

    # two sessions open across the whole 10 s window; four calls, three inside it
    calls = [_record(t, t + 3.0) for t in (0.0, 5.0, 10.0)] + [_record(2.0, 5.0)]
    sessions = [SessionRecord(start=-5.0, end=20.0, done=True),
                SessionRecord(start=-5.0, end=20.0, done=True)]
    step = summarize_sessions(2, calls, sessions, 0.0, 10.0, spec=SessionWorkload())
    assert step.sessions_in_flight == pytest.approx(2.0)
    assert step.mean_in_flight == pytest.approx(0.9)  # 3 + 3 + 0 + 3 seconds busy / 10
    assert step.duty_cycle == pytest.approx(0.45)
    assert step.held_in_flight == step.sessions_in_flight


def _step(level: int, sessions: float, calls: float, p95: float, rps: float) -> StepStats:
    nan = math.nan
    return StepStats(level, 10.0, 100, 100, 1.0, p95, p95, p95, p95, nan, nan, nan, rps, 0,
                     0, 0, 0.0, calls, calls, 0.0, unit="sessions", sessions_in_flight=sessions,
                     duty_cycle=calls / sessions)


def test_session_analysis_bridges_the_knees_with_little() -> None:
    # duty 0.4 below the knee; the call knee at 8 in flight means about 20 sessions
    steps = [_step(s, s, 0.4 * s, p95, rps) for s, p95, rps in (
        (5, 0.30, 6.7), (10, 0.30, 13.3), (15, 0.31, 20.0), (20, 0.32, 26.0),
        (25, 0.60, 26.5), (30, 0.90, 26.6))]
    sa = session_analysis(steps, session_knee=20, call_knee=8.0)
    assert sa.call_knee_source == "request-level sweep"
    assert sa.duty_cycle == pytest.approx(0.4)
    assert sa.predicted_sessions == pytest.approx(20.0)
    assert sa.prediction_error == pytest.approx(0.0)
    own = session_analysis(steps, session_knee=20)
    assert own.call_knee_measured == pytest.approx(8.0)  # 0.4 x 20 sessions


SLOTS = 8
#: 3 turns of ~0.3 s calls, a 0.2-0.4 s tool after each, 0.2-0.4 s think between: the
#: design duty cycle is 0.9 / 2.4 = 0.375, so the session knee should sit near 8/0.375 = 21.
SESSION_FILE = ("turns: 3\nprompt_tokens: 8\nturn_tokens: 4\noutput_tokens: 16\nstream: true\n"
                "tool:\n  probability: 1.0\n  duration_s: 0.2-0.4\nthink_s: 0.2-0.4\n")
SESSION_LEVELS = [4, 8, 12, 16, 20, 24, 28, 32, 40]
SESSION_PLAN = StepPlan(warmup_s=1.0, min_duration_s=4.0, min_requests=20, max_duration_s=30,
                        min_latencies=2.5, ramp_s=2.4)


@pytest.mark.slow
def test_session_sweep_against_the_sim(tmp_path: Path) -> None:
    spec = SessionWorkload.from_file(_write(tmp_path, SESSION_FILE))

    async def go(url: str) -> SweepResult:
        async with SessionLoadGenerator(base_url=url, api_key="test", model="sim-model",
                                        sessions=spec, seed=1) as gen:
            await gen.preflight()
            return await run_sweep(gen, SESSION_LEVELS, SESSION_PLAN, drain_s=0)

    with sim_process(**sim_timing(SLOTS, 1)) as url:
        calls = request_sweep(url, knee_levels(SLOTS), 1)  # the request-level knee K
        result = asyncio.run(go(url))
    result.unit, result.calls_knee = "sessions", calls.analysis.knee
    table = "\n".join(
        f"S={s.concurrency:3d} sessions={s.sessions_in_flight:6.2f} calls={s.mean_in_flight:5.2f}"
        f" duty={s.duty_cycle:.3f} design={s.design_duty_cycle:.3f} p95={s.latency_p95:.3f}"
        f" rps={s.throughput_rps:5.1f}" for s in result.steps)
    sa = result.session_analysis
    summary = (f"call knee K={calls.analysis.knee} session knee={result.analysis.knee} "
               f"duty={sa.duty_cycle} predicted={sa.predicted_sessions} "
               f"error={sa.prediction_error}")
    print("\n" + table + "\n" + summary)
    assert calls.analysis.knee is not None
    knee = result.analysis.knee
    assert knee is not None, table
    for s in result.steps:
        assert s.sessions_in_flight == pytest.approx(s.concurrency, rel=0.05), table
        if s.concurrency <= knee:
            # The design value describes the workload while calls do not queue; past the
            # knee a call's latency depends on when in the window it was queued, and the
            # mean over the calls that finished no longer stands for the ones in flight.
            assert s.duty_cycle == pytest.approx(s.design_duty_cycle, rel=0.05), table
    assert 0.75 * SLOTS / sa.duty_cycle <= knee <= 1.25 * SLOTS / sa.duty_cycle, summary
    assert sa.prediction_error is not None and sa.prediction_error <= 0.25, summary
    doc = result.to_dict()
    assert doc["unit"] == "sessions" and doc["saturation_sessions"] == knee
    assert doc["sessions"]["predicted_sessions"] == pytest.approx(sa.predicted_sessions)


@pytest.mark.slow
def test_cli_session_sweep_writes_saturation_sessions(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "redline.yaml"
    config.write_text((repo_root / "redline.yaml").read_text())
    spec = _write(tmp_path, "turns: 2\noutput_tokens: 8\ntool:\n  duration_s: 0.1\n"
                  "think_s: 0.1\n")
    out = tmp_path / "out"
    with sim_process(slots=4, decode_base_s=0.02, decode_alpha=0.0, prefill_base_s=0.001,
                     prefill_per_token_s=0.0, prompt_tokens=8) as url:
        code = cli_main(["sweep", "--base-url", url, "--model", "sim-model", "--unit",
                         "sessions", "--sessions", str(spec), "--levels", "2,4,8,12,16,24",
                         "--warmup", "0.5", "--min-duration", "2", "--min-requests", "10",
                         "--ramp", "0.5", "--out", str(out), "--config", str(config),
                         "--target", "sim", "--write-threshold"])
    doc = json.loads((out / "results.json").read_text())
    assert code == 0, doc
    assert doc["unit"] == "sessions" and doc["sessions"]["duty_cycle"] > 0
    assert (out / "sweep.png").stat().st_size > 10_000
    from redline.config import load_config

    target = load_config(config).target("sim")
    assert target.saturation_sessions == doc["saturation_sessions"]
    assert target.saturation_concurrency == 16  # the call-level threshold is untouched


def test_session_capacity_rules_pass_promtool(stack_binaries: Path, repo_root: Path,
                                              tmp_path: Path, monkeypatch) -> None:
    """With ``saturation_sessions`` set, the rules warn on open sessions; promtool agrees."""
    import shutil
    import subprocess

    from ruamel.yaml import YAML

    shutil.copytree(repo_root / "alerts", tmp_path / "alerts")
    (tmp_path / "compose").mkdir()
    text = (repo_root / "redline.yaml").read_text()
    assert "saturation_sessions" not in text
    (tmp_path / "redline.yaml").write_text(text.replace(
        "saturation_concurrency: 16", "saturation_concurrency: 16\n    saturation_sessions: 40"))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["rules"]) == 0
    groups = YAML(typ="safe").load((tmp_path / "alerts" / "sim.rules.yml").read_text())
    rules = {r.get("alert") or r["record"]: r for r in groups["groups"][0]["rules"]}
    assert rules["RedlineSessionsNearCapacity"]["expr"] == \
        'redline:target_sessions_in_flight:sum{target="sim"} >= 28'  # 0.7 x 40
    assert (tmp_path / "alerts" / "runbooks" / "RedlineSessionsNearCapacity.md").is_file()
    for args in (["check", "rules", "alerts/sim.rules.yml"],
                 ["test", "rules", "alerts/tests/sim.test.yml"]):
        done = subprocess.run([str(stack_binaries / "promtool"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    tests = (tmp_path / "alerts" / "tests" / "sim.test.yml").read_text()
    assert "RedlineSessionsNearCapacity: 29 sessions (warn level 28) warns" in tests
    assert "RedlineSessionsNearCapacity: 27 sessions is quiet" in tests
