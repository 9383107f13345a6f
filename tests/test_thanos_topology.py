"""The Thanos topology's wiring, without starting it (the live tests are test_thanos.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redline_operator.stack import Ports, Stack, StackError
from redline_operator.stack.thanos import (
    REPLICA_LABEL,
    ThanosPorts,
    components,
    resolve_backend,
)

REPO = Path(__file__).resolve().parent.parent


def _argv(comps, name: str) -> list[str]:
    return next(c for c in comps if c.name == name).argv


def test_two_receivers_replicate_and_query_dedups(tmp_path):
    tp = ThanosPorts()
    comps = components(REPO, tmp_path, Ports(), tp=tp)
    assert [c.name for c in comps] == ["pager", "alertmanager", "thanos-receive-0",
                                       "thanos-receive-1", "thanos-query", "thanos-rule",
                                       "collector"]
    ring = json.loads((tmp_path / "thanos-hashring.json").read_text())
    assert ring == [{"hashring": "default", "endpoints": [
        f"127.0.0.1:{tp.receive0_grpc}", f"127.0.0.1:{tp.receive1_grpc}"]}]
    for i in (0, 1):
        argv = _argv(comps, f"thanos-receive-{i}")
        assert "--receive.replication-factor=2" in argv
        assert f'--label={REPLICA_LABEL}="{i}"' in argv
        assert all("0.0.0.0" not in a for a in argv)  # loopback only
    query = _argv(comps, "thanos-query")
    assert f"--http-address=127.0.0.1:{Ports().prometheus}" in query
    assert f"--query.replica-label={REPLICA_LABEL}" in query
    assert sum(a.startswith("--endpoint=") for a in query) == 3  # 2 receivers + ruler
    rule = _argv(comps, "thanos-rule")
    assert f"--rule-file={REPO / 'alerts' / '*.rules.yml'}" in rule
    assert f"--alertmanagers.url=http://127.0.0.1:{Ports().alertmanager}" in rule
    collector = next(c for c in comps if c.name == "collector")
    assert collector.argv[-1] == f"--config=file:{REPO / 'collector' / 'thanos.yaml'}"
    assert collector.env["REDLINE_THANOS_RECEIVE_1_URL"] == (
        f"http://127.0.0.1:{tp.receive1_write}/api/v1/receive")


def test_backend_choice_and_bad_ports(tmp_path, monkeypatch):
    assert resolve_backend(None, tmp_path) == "prometheus"
    (tmp_path / "backend").write_text("thanos\n")
    assert resolve_backend(None, tmp_path) == "thanos"  # what `up` recorded
    assert resolve_backend("prometheus", tmp_path) == "prometheus"
    with pytest.raises(StackError, match="unknown stack backend 'mimir'"):
        Stack(REPO, state_dir=tmp_path, backend="mimir")
    monkeypatch.setenv("REDLINE_THANOS_RULE_GRPC_PORT", "99999")
    with pytest.raises(StackError, match="REDLINE_THANOS_RULE_GRPC_PORT='99999' is not a port"):
        Stack(REPO, state_dir=tmp_path, backend="thanos")
