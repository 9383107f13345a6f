"""The knee method, the accept/reject rules, the step statistics and the YAML update.

Pure functions on synthetic data: no server, no clock.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from redline.config import ConfigError, load_config
from redline_operator.sweep.knee import AcceptRules, analyse, find_knee
from redline_operator.sweep.live import bucket_by_concurrency
from redline_operator.sweep.load import StepPlan, TokenDist, Workload
from redline_operator.sweep.report import write_report
from redline_operator.sweep.runner import StopRules, SweepResult, default_levels, parse_levels
from redline_operator.sweep.stats import StepStats, summarize
from redline_operator.sweep.yaml_update import update_saturation_text, write_saturation


def hockey(levels, slots, base=0.2, pre_slope=0.0, noise=0.0, rng=None):
    """p95 of an ideal N-slot server: flat (plus a slight slope) to the knee, then C/X."""
    rng = rng or random.Random(0)
    out = []
    for c in levels:
        y = base * (1 + pre_slope * (min(c, slots) - 1)) * max(1.0, c / slots)
        out.append(y * (1 + rng.uniform(-noise, noise)))
    return out


# --- find_knee -----------------------------------------------------------------------

@pytest.mark.parametrize("slots", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("levels_of", [
    lambda s: [1, 2, 4, 8, 16, 32, 64, 128],
    lambda s: default_levels(2 * s),
    lambda s: default_levels(4 * s),
])
def test_knee_of_an_ideal_hockey_stick_is_the_slot_count(slots, levels_of) -> None:
    levels = levels_of(slots)
    assert find_knee(levels, hockey(levels, slots, pre_slope=0.01)) == slots


@pytest.mark.parametrize("seed", range(10))
def test_knee_with_5_percent_noise_stays_within_25_percent(seed) -> None:
    levels = default_levels(64)
    rng = random.Random(seed)
    knee = find_knee(levels, hockey(levels, 16, noise=0.05, pre_slope=0.01, rng=rng))
    assert 12 <= knee <= 20


def test_no_knee_when_latency_is_flat_or_straight() -> None:
    levels = [1, 2, 4, 8, 16]
    assert find_knee(levels, [0.2] * 5) is None
    assert find_knee(levels, [0.1 * c for c in levels]) is None


def test_no_knee_from_too_few_points_or_nan() -> None:
    assert find_knee([1, 2], [0.1, 0.5]) is None
    assert find_knee([1, 2, 4], [0.1, math.nan, 0.5]) is None


def test_deep_saturation_tail_does_not_hide_a_low_knee() -> None:
    # knee at 4, sweep to 256: Kneedle alone sees too little of the flat part
    levels = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    assert find_knee(levels, hockey(levels, 4)) == 4


def test_knee_ignores_level_order() -> None:
    levels = [1, 2, 4, 8, 16, 32]
    ys = hockey(levels, 8)
    assert find_knee(levels[::-1], ys[::-1]) == 8


# --- accept / reject and the recommended cap ---------------------------------------

def step(c, p95, *, success=1.0, retry_rate=0.0, in_flight=None) -> StepStats:
    return StepStats(
        concurrency=c, duration_s=10, requests=100, ok=int(100 * success),
        success_rate=success, latency_p50=p95 * 0.8, latency_p95=p95, latency_p99=p95 * 1.1,
        latency_mean=p95 * 0.8, ttft_p50=0.01, ttft_p95=0.02, ttft_p99=0.03,
        throughput_rps=c / p95, tokens_per_s=16 * c / p95, attempts=100,
        retries=int(100 * retry_rate), retry_rate=retry_rate,
        mean_in_flight=c if in_flight is None else in_flight,
        little_expected_in_flight=c, little_rel_error=0.0)


LEVELS = [1, 2, 4, 8, 12, 16, 20, 24, 32]


def steps_for(slots=16) -> list[StepStats]:
    ys = hockey(LEVELS, slots, pre_slope=0.005)
    return [step(c, y) for c, y in zip(LEVELS, ys, strict=True)]


def test_clean_sweep_accepts_all_and_caps_below_the_knee() -> None:
    a = analyse(steps_for())
    assert a.knee == 16
    assert all(v.accepted for v in a.verdicts)
    assert a.recommended_cap == 12


def test_rising_retries_reject_that_level_and_all_above() -> None:
    steps = steps_for()
    steps[LEVELS.index(8)] = step(8, steps[LEVELS.index(8)].latency_p95, retry_rate=0.2)
    a = analyse(steps)
    verdicts = {v.concurrency: v for v in a.verdicts}
    assert verdicts[4].accepted
    assert not verdicts[8].accepted and "retry rate rose" in verdicts[8].reasons[0]
    assert not verdicts[12].accepted and verdicts[12].reasons == ["a lower level was rejected"]
    assert a.knee == 16 and a.recommended_cap == 4


def test_small_retry_noise_is_tolerated() -> None:
    steps = steps_for()
    steps[LEVELS.index(8)] = step(8, steps[LEVELS.index(8)].latency_p95, retry_rate=0.01)
    assert analyse(steps).recommended_cap == 12


def test_success_regression_rejects() -> None:
    steps = steps_for()
    steps[LEVELS.index(12)] = step(12, steps[LEVELS.index(12)].latency_p95, success=0.95)
    a = analyse(steps)
    v12 = next(v for v in a.verdicts if v.concurrency == 12)
    assert not v12.accepted and "success rate regressed" in v12.reasons[0]
    assert a.recommended_cap == 8


def test_level_not_held_in_flight_rejects() -> None:
    steps = steps_for()
    steps[LEVELS.index(12)] = step(12, steps[LEVELS.index(12)].latency_p95, in_flight=9.0)
    a = analyse(steps)
    assert a.recommended_cap == 8
    assert "in-flight 9.0 below 90%" in next(
        v for v in a.verdicts if v.concurrency == 12).reasons[0]


def test_custom_rules_tolerate_more() -> None:
    steps = steps_for()
    steps[LEVELS.index(12)] = step(12, steps[LEVELS.index(12)].latency_p95, success=0.95)
    assert analyse(steps, AcceptRules(success_tolerance=0.1)).recommended_cap == 12


def test_no_knee_caps_at_highest_accepted_level_and_says_why() -> None:
    steps = [step(c, 0.2 + 0.001 * c) for c in [1, 2, 4, 8]]
    a = analyse(steps)
    assert a.knee is None and a.recommended_cap == 8
    assert "did not reach saturation" in a.note


# A sweep measured against the 16-slot sim on a busy machine (load average ~6): the sim
# was starved during the 12 and 16 steps, so p95 bent upward at 8 while throughput was
# still climbing; throughput flattens at 20.
BUSY_LEVELS = [1, 2, 4, 8, 12, 16, 20, 24, 32]
BUSY_P95 = [0.440, 0.499, 0.505, 0.518, 0.631, 0.753, 0.700, 0.748, 0.935]
BUSY_RPS = [2.3, 4.2, 9.0, 16.3, 20.1, 25.7, 34.6, 35.2, 35.7]


def test_p95_bend_before_throughput_saturates_falls_back_to_throughput_knee() -> None:
    steps = [step(c, p) for c, p in zip(BUSY_LEVELS, BUSY_P95, strict=True)]
    for s, rps in zip(steps, BUSY_RPS, strict=True):
        s.throughput_rps = rps
    assert find_knee(BUSY_LEVELS, BUSY_P95) == 8
    a = analyse(steps)
    assert a.knee == 20
    assert a.method.startswith("kneedle(throughput")
    assert "not saturated yet" in a.note


def test_p95_knee_past_the_throughput_plateau_moves_down() -> None:
    # 8-slot sim on a busy machine: throughput stopped improving at 10, while the p95
    # outlier at 16 made Kneedle pick 12
    levels = [1, 2, 4, 6, 8, 10, 12, 16]
    p95 = [0.300, 0.332, 0.353, 0.358, 0.420, 0.442, 0.488, 0.814]
    rps = [3.4, 6.9, 11.7, 19.2, 20.5, 26.2, 25.7, 26.7]
    steps = [step(c, p) for c, p in zip(levels, p95, strict=True)]
    for s, r in zip(steps, rps, strict=True):
        s.throughput_rps = r
    assert find_knee(levels, p95) == 12
    a = analyse(steps)
    assert a.knee == 10 and "stopped improving at 10" in a.note
    assert a.method.startswith("kneedle(p95") and "moved down" in a.method


def test_p95_knee_kept_when_throughput_has_flattened() -> None:
    a = analyse(steps_for())  # ideal: throughput = C / p95 flattens exactly at the knee
    assert a.knee == 16 and a.method.startswith("kneedle(p95") and a.note == ""


# --- early stop ----------------------------------------------------------------------

def test_stop_rules() -> None:
    rules = StopRules(min_success=0.5, p95_explode_factor=10)
    first = step(1, 0.1)
    assert rules.check(first, step(8, 0.5)) is None
    assert "success collapsed" in rules.check(first, step(8, 0.5, success=0.4))
    assert "p95 exploded" in rules.check(first, step(8, 1.5))


# --- step statistics and Little's law -------------------------------------------------

@dataclass
class Rec:
    start: float
    end: float
    first_chunk: float = math.nan
    ok: bool = True
    error: str | None = None
    output_tokens: int = 4


def test_summarize_closed_loop_satisfies_littles_law() -> None:
    # 4 workers, each request 0.5 s, back to back, window [10, 20)
    recs = [Rec(s, s + 0.5, s + 0.1) for w in range(4) for s in
            [w * 0.125 + 0.5 * k for k in range(60)]]
    st = summarize(4, recs, 10.0, 20.0, attempts=80, retries=0)
    assert st.mean_in_flight == pytest.approx(4.0, rel=1e-6)
    assert st.throughput_rps == pytest.approx(8.0, rel=0.01)
    assert st.latency_p95 == pytest.approx(0.5) and st.ttft_p50 == pytest.approx(0.1)
    assert st.little_rel_error < 0.02 and st.little_ok
    assert st.tokens_per_s == pytest.approx(32.0, rel=0.01)


def test_summarize_counts_failures_and_retries() -> None:
    recs = [Rec(0.0, 1.0), Rec(0.0, 1.0, ok=False, error="http_500"), Rec(0.5, 5.0)]
    st = summarize(2, recs, 0.5, 2.0, attempts=6, retries=2)
    assert st.requests == 2 and st.ok == 1 and st.success_rate == 0.5
    assert st.errors == {"http_500": 1}
    assert st.retry_rate == pytest.approx(0.5)  # 2 retries over 4 first attempts


def test_little_check_flags_a_short_window() -> None:
    # one 10 s request finishing inside a 1 s window: lambda W says 10, in-flight says 1
    st = summarize(1, [Rec(0.0, 10.5)], 10.0, 11.0)
    assert not st.little_ok


def test_step_stats_json_round_trip() -> None:
    st = step(4, 0.3)
    st.ttft_p99 = math.nan
    d = st.to_dict()
    assert d["ttft_p99"] is None and d["little_ok"] is True
    assert StepStats.from_dict(json.loads(json.dumps(d))).latency_p95 == 0.3


# --- inputs ---------------------------------------------------------------------------

def test_default_levels() -> None:
    assert default_levels(64) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    assert default_levels(20) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    levels = default_levels(512)
    assert all(b / a <= 1.5 for a, b in zip(levels[1:], levels[2:], strict=False))


def test_parse_levels() -> None:
    assert parse_levels("8,1, 2,8") == [1, 2, 8]
    for bad in ("", "0,1", "a", "-2"):
        with pytest.raises(ValueError, match="bad --levels"):
            parse_levels(bad)


def test_token_dist() -> None:
    rng = random.Random(1)
    assert TokenDist.parse("16").sample(rng) == 16
    assert {TokenDist.parse("4-6").sample(rng) for _ in range(200)} == {4, 5, 6}
    assert {TokenDist.parse("1,9").sample(rng) for _ in range(100)} == {1, 9}
    for bad in ("0", "5-2", "x", "1,,2"):
        with pytest.raises(ValueError, match="bad token distribution"):
            TokenDist.parse(bad)


def test_mix_file(tmp_path: Path) -> None:
    mix = tmp_path / "mix.jsonl"
    mix.write_text('{"prompt": "hi", "max_tokens": 3}\n\n'
                   '{"messages": [{"role": "user", "content": "yo"}], "weight": 0}\n')
    w = Workload.from_file(mix)
    assert w.sample(random.Random(0)) == ([{"role": "user", "content": "hi"}], 3)
    mix.write_text('{"prompt": "hi"}\n[1]\n')
    with pytest.raises(ValueError, match=r"mix.jsonl:2: expected an object"):
        Workload.from_file(mix)
    with pytest.raises(ValueError, match="cannot read mix file"):
        Workload.from_file(tmp_path / "missing.jsonl")


def test_bucket_by_concurrency() -> None:
    rows = [(0.2, 9.0, 1), (1.1, 0.2, 4), (0.9, 0.3, 5), (1.4, 0.1, 6), (2.6, 0.5, 7),
            (3.0, 0.7, 8), (3.2, 0.9, 9), (2.0, float("nan"), 1)]
    assert bucket_by_concurrency(rows, min_samples=2) == (
        [1, 3], [[0.2, 0.7], [5, 8]], [3, 3])


# --- report ---------------------------------------------------------------------------

def test_report_files(tmp_path: Path) -> None:
    result = SweepResult(base_url="http://x/v1", model="m", levels=LEVELS, plan=StepPlan(),
                         steps=steps_for(), status="complete")
    paths = write_report(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["saturation_concurrency"] == 16 and data["recommended_cap"] == 12
    assert [s["concurrency"] for s in data["steps"]] == LEVELS
    assert "x-stainless-retry-count" in data["retries_counted_by"]
    assert len(paths["csv"].read_text().splitlines()) == 1 + len(LEVELS)
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


# --- yaml_update ----------------------------------------------------------------------

GOLDEN_IN = """\
# redline.yaml for the checkout service
version: 1
evaluation_interval: 5s   # fast

targets:
  # the model gateway
  - name: gateway
    match: {service: gw, model: "gpt-x"}
    saturation_concurrency: 16   # the knee
    warn_fraction: 0.7           # warn early
    page_fraction: 0.85
    slo:
      ttft_p95_seconds: 1.5
  - name: sim
    saturation_concurrency: 8
pager:
  receivers:
    - type: webhook
      name: local
      url: 'http://127.0.0.1:9096/alerts'
  page_receiver: local
  warn_receiver: local
"""

GOLDEN_OUT = GOLDEN_IN.replace("saturation_concurrency: 16   # the knee",
                               "saturation_concurrency: 24   # the knee")


def test_yaml_update_changes_one_value_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "redline.yaml"
    path.write_text(GOLDEN_IN)
    assert write_saturation(path, "gateway", 24.0) == 16
    assert path.read_text() == GOLDEN_OUT
    cfg = load_config(path)
    assert cfg.target("gateway").saturation_concurrency == 24
    assert cfg.target("sim").saturation_concurrency == 8
    assert not [p for p in tmp_path.iterdir() if p.name != "redline.yaml"]


def test_yaml_update_fractional_and_flush_sequence_style() -> None:
    text = ("version: 1\ntargets:\n- name: a   # c\n  saturation_concurrency: 8\n"
            "pager:\n  receivers:\n  - {type: webhook, name: p, url: 'http://x'}\n"
            "  page_receiver: p\n  warn_receiver: p\n")
    new, old = update_saturation_text(text, "a", 12.5)
    assert old == 8
    assert new == text.replace("saturation_concurrency: 8", "saturation_concurrency: 12.5")


def test_yaml_update_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no target named 'nope'.*known: \\['gateway', 'sim'\\]"):
        update_saturation_text(GOLDEN_IN, "nope", 4)
    with pytest.raises(ConfigError, match="must be > 0"):
        update_saturation_text(GOLDEN_IN, "gateway", 0)
    with pytest.raises(ConfigError, match="file not found"):
        write_saturation(tmp_path / "missing.yaml", "gateway", 4)
    with pytest.raises(ConfigError, match="not valid YAML"):
        update_saturation_text("targets: [\n", "gateway", 4)
