"""Bad values in ``redline.yaml``: real promtool/amtool output or a clear error, never a mess.

Hypothesis mutates one to three keys of a valid config with hostile values (huge, tiny,
infinite, boolean, negative, quotes, newlines, Go-template braces, control characters,
overflowing durations). For each, ``redline rules`` and ``redline dashboards`` run as a user
runs them (the console script, in a scratch copy of the project) and must either

* exit 0 with rule files, promtool tests and Alertmanager configs that pass the real
  ``promtool check rules``, ``promtool test rules`` and ``amtool check-config``, or
* exit non-zero naming the file and the key, with no traceback and no file changed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.badinput import BASE, classify, make_project, set_key, snapshot, yaml_text

T = ("targets", 0)
KEYS = [
    ("evaluation_interval",), ("runbook_base_url",), (*T, "name"),
    (*T, "match", "model"), (*T, "match", "service"), (*T, "match", "server_address"),
    (*T, "match", "gpu_job"), (*T, "saturation_concurrency"), (*T, "saturation_sessions"),
    (*T, "warn_fraction"),
    (*T, "page_fraction"), (*T, "predict_floor_fraction"), (*T, "retry_storm_ratio"),
    (*T, "gpu_utilization_ceiling"), (*T, "work_conserving_violation_ratio"),
    *[(*T, "durations", k) for k in ("warn", "page", "latency", "absent", "predict_window",
                                     "predict_horizon", "absent_lookback")],
    *[(*T, "slo", k) for k in ("ttft_p95_seconds", "latency_p95_seconds", "error_ratio")],
    (*T, "limiter", "model_cap"),
    ("pager", "receivers", 0, "url"), ("pager", "receivers", 0, "name"),
    ("pager", "group_wait"), ("pager", "group_interval"), ("pager", "repeat_interval"),
    ("pager", "secrets_dir"),
]

durations = st.builds(lambda n, u: f"{n}{u}", st.one_of(
    st.integers(0, 120), st.integers(0, 10**25)), st.sampled_from(["ms", "s", "m", "h", "d"]))
nasty_text = st.text(alphabet=st.sampled_from('"\\\n\t\r{}$`\'ü€\x00\x7f a-Z9:/.'),
                     min_size=0, max_size=30)
urls = st.sampled_from(["http://x/{{", "http://x/}}", "http://a b/", "http://x/\ny",
                        "https://", "http://[::1", "http://h:99999/", "ftp://x",
                        "http://ok.example/runbooks", "http://127.0.0.1:9096/alerts"])
values = st.one_of(
    durations, urls, nasty_text, st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
    st.sampled_from([0, 1, 0.0001, 0.5, 1e308, -3, True, False, None, "", [], {}]),
    st.lists(st.integers(), max_size=2),
)
mutations = st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3)


def _config(muts) -> str:
    data = BASE
    for path, value in muts:
        if path[-2:-1] == ("limiter",) and "limiter" not in data["targets"][0]:
            data = set_key(data, path[:-1], {})
        data = set_key(data, path, value)
    return yaml_text(data)


def _assert_good(result) -> None:
    assert result.outcome in ("ok", "clear_error"), (
        f"{result.outcome}: redline {' '.join(result.command)} exit {result.code}\n"
        f"{result.detail}\nchanged: {result.changed}\n{result.stderr[-3000:]}")
    if result.outcome == "clear_error":
        assert "key " in result.stderr or "line " in result.stderr, result.stderr


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutations)
@example([((*T, "match", "model"), "a\nb")])
@example([((*T, "match", "model"), 'say "hi"'), ((*T, "match", "service"), 'a"b\\')])
@example([((*T, "durations", "warn"), "99999999999999999999999d")])
@example([(("runbook_base_url",), "http://x/{{")])
@example([(("pager", "receivers", 0, "url"), "http://x/\nb")])
@example([(("evaluation_interval",), "0s")])
@example([((*T, "saturation_concurrency"), 1e308)])
@example([((*T, "saturation_concurrency"), float("inf"))])
@example([((*T, "saturation_concurrency"), 0.0001)])
@example([((*T, "saturation_concurrency"), True)])
@example([((*T, "saturation_concurrency"), 1)])
@example([((*T, "saturation_concurrency"), 1_000_000)])
@example([((*T, "name"), "x" * 10_000)])
@example([((*T, "durations", "warn"), "0s"), ((*T, "durations", "page"), "0s")])
@example([((*T, "durations", "warn"), "6h"), (("evaluation_interval",), "1s")])
@example([((*T, "slo", "latency_p95_seconds"), 86400), ((*T, "slo", "ttft_p95_seconds"), 0.001)])
def test_rules_and_dashboards_output_is_valid_or_a_clear_error(stack_binaries, muts):
    text = _config(muts)
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp), text)
        rules = classify(project, ["rules"], in_process=True)
        _assert_good(rules)
        dashboards = classify(project, ["dashboards"], in_process=True)
        _assert_good(dashboards)
        assert (rules.outcome == "ok") == (dashboards.outcome == "ok"), (
            rules.stderr, dashboards.stderr)
        if dashboards.outcome == "ok":
            for path in (project / "dashboards").glob("*.json"):
                body = path.read_text(encoding="utf-8")
                assert "vector(inf)" not in body and "NaN" not in body, path


@pytest.mark.slow
@pytest.mark.parametrize("muts", [
    [((*T, "match", "model"), 'a "quoted"\nmodel\\'), ((*T, "slo", "error_ratio"), 0.00001)],
    [((*T, "durations", "absent"), "1h"), ((*T, "durations", "absent_lookback"), "1d")],
    [((*T, "slo", "error_ratio"), 0.06)],
], ids=["escapes-tiny-error-ratio", "longest-absent", "largest-error-ratio"])
def test_long_window_promtool_tests_pass_at_the_bounds(stack_binaries, tmp_path, muts):
    project = make_project(tmp_path, _config(muts))
    result = classify(project, ["rules"], long_tests=True, timeout=600)
    assert result.outcome == "ok", f"{result.detail}\n{result.stderr}"


@pytest.mark.parametrize("raw, expect", [
    (b"version: 1\ntargets: \xff\xfe\n", "line 2: byte 0xff is not UTF-8"),
    (b"[" * 5000, "not valid YAML"),
    (b"a: b\n" * 300_000, "larger than 1024 KiB"),
    (b"- 1\n- 2\n", "expected a mapping"),
])
@pytest.mark.parametrize("command", ["rules --check", "dashboards", "top --once"])
def test_unreadable_config_is_a_clear_error(tmp_path, raw, expect, command):
    project = make_project(tmp_path, raw)
    before = snapshot(project)
    result = classify(project, command.split(), validate=False)
    assert result.outcome == "clear_error", result
    assert expect in result.stderr and "redline.yaml" in result.stderr
    assert snapshot(project) == before


def test_values_that_make_no_sense_say_why(tmp_path):
    cases = {
        (*T, "saturation_concurrency"): (True, "valid number"),
        (*T, "warn_fraction"): (0.0001, "greater than or equal to 0.01"),
        (*T, "match", "model"): ("m" * 10_000, "at most 1024 characters"),
        ("evaluation_interval",): ("0s", "between 1s and 5m"),
        (*T, "durations", "warn"): ("99999999999999999999999d", "should match pattern"),
        (*T, "durations", "page"): ("2h", "between 0s and 1h"),
        ("runbook_base_url",): ("http://x/{{", "Go template"),
        ("pager", "receivers", 0, "url"): ("http://x/\nb", "printable ASCII"),
    }
    for path, (value, reason) in cases.items():
        project = make_project(tmp_path / "_".join(map(str, path)), _config([(path, value)]))
        result = classify(project, ["rules"], validate=False)
        assert result.outcome == "clear_error", result
        key = ".".join(str(p) for p in path).replace(".0.", "[0].")
        key = key.replace("receivers[0].", "receivers[0].webhook.")  # the union's tag
        assert f"key {key}" in result.stderr and reason in result.stderr, result.stderr
