"""``redline rules --format prometheus-operator``: PrometheusRule objects whose spec is
exactly the generated rule groups, and valid for the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from redline.config import load_config
from redline_operator.cli.main import main

REPO = Path(__file__).resolve().parent.parent


def test_prometheus_rule_objects_lint_with_promtool(capsys, tmp_path, stack_binaries):
    assert main(["rules", "--config", str(REPO / "redline.yaml"), "--format",
                 "prometheus-operator", "--namespace", "observability"]) == 0
    docs = list(YAML(typ="safe").load_all(capsys.readouterr().out))
    cfg = load_config(REPO / "redline.yaml")
    assert [d["metadata"]["name"] for d in docs] == [f"redline-{t.name}" for t in cfg.targets]
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
        assert doc["metadata"]["namespace"] == "observability"
        committed = [g for suffix in ("rules.yml", "long.rules.yml")
                     for g in YAML(typ="safe").load(
                         (REPO / "alerts" / f"{doc['metadata']['name'][8:]}.{suffix}")
                         .read_text())["groups"]]
        assert doc["spec"]["groups"] == committed
        spec = tmp_path / f"{doc['metadata']['name']}.spec.yml"
        with spec.open("w") as f:
            YAML().dump(doc["spec"], f)
        lint = subprocess.run([str(stack_binaries / "promtool"), "check", "rules", str(spec)],
                              capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
