"""redline.yaml: the committed example loads; bad input names file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from redline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "redline.yaml"
    with path.open("w") as fh:
        YAML().dump(data, fh)
    return path


def _base() -> dict:
    return {
        "targets": [{"name": "t", "saturation_concurrency": 16}],
        "pager": {"receivers": [{"type": "webhook", "name": "hook",
                                 "url": "http://127.0.0.1:9096/alerts"}],
                  "page_receiver": "hook", "warn_receiver": "hook"},
    }


@pytest.mark.parametrize("name", ["redline.yaml", "redline.example.yaml"])
def test_committed_configs_load(name):
    cfg = load_config(REPO / name)
    sim = cfg.target("sim")
    assert sim.warn_concurrency == 11.2
    assert sim.page_concurrency == 13.6
    assert sim.predict_floor_concurrency == 8


def test_defaults_fill_new_keys(tmp_path):
    cfg = load_config(_write(tmp_path, _base()))
    t = cfg.targets[0]
    assert t.durations.absent_lookback == "6h"
    assert t.work_conserving_violation_ratio == 0.05
    assert cfg.pager.secrets_dir == ".cache/secrets"


@pytest.mark.parametrize("mutate,key,expected", [
    (lambda d: d["targets"][0].update(warn_fraction=0.9), "targets[0]",
     "warn_fraction (0.9) must be below page_fraction (0.85)"),
    (lambda d: d["targets"][0].update(predict_floor_fraction=0.9), "targets[0]",
     "predict_floor_fraction (0.9) must be below page_fraction"),
    (lambda d: d["targets"][0].update(durations={"absent": "50m", "absent_lookback": "40m"}),
     "targets[0].durations", "absent_lookback (40m) must be longer than absent (50m)"),
    (lambda d: d["targets"][0].update(durations={"page": "30 seconds"}),
     "targets[0].durations.page", "should match pattern"),
    (lambda d: d["targets"][0].update(saturation_concurrency=0),
     "targets[0].saturation_concurrency", "greater than or equal to 1"),
    (lambda d: d["targets"][0].update(match={"modle": "x"}), "targets[0].match.modle",
     "Extra inputs are not permitted"),
    (lambda d: d["pager"].update(page_receiver="nobody"), "pager",
     "page_receiver 'nobody' is not one of the receivers ['hook']"),
    (lambda d: d["pager"]["receivers"].append({"type": "pagerduty", "name": "pd"}),
     "pager.receivers[1].pagerduty", "set routing_key_env"),
    (lambda d: d["pager"]["receivers"][0].update(compose_url="host:9096"),
     "pager.receivers[0].webhook.compose_url", "must be an http:// or https:// URL"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path, mutate, key, expected):
    data = _base()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert f"key {key}" in message
    assert expected in message


def test_missing_file_and_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        load_config(bad)
