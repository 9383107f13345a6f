"""Runbook links resolve: ``runbook_base_url`` is required (no made-up default), and the
local pager serves every generated runbook at the URL the alerts carry."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML
from tests.workloads.private_stack import PrivateStack

from redline_operator.cli.main import main

REPO = Path(__file__).resolve().parent.parent


def test_rules_require_runbook_base_url(tmp_path, capsys):
    text = (REPO / "redline.yaml").read_text()
    cfg = tmp_path / "redline.yaml"
    cfg.write_text("\n".join(line for line in text.splitlines()
                             if not line.startswith("runbook_base_url:")) + "\n")
    assert main(["rules", "--config", str(cfg)]) != 0
    err = capsys.readouterr().err
    assert f"{cfg}: key runbook_base_url is not set" in err
    assert not (tmp_path / "alerts").exists()  # nothing half-written


@pytest.mark.stack
def test_every_runbook_url_resolves_on_the_local_pager(stack_binaries, tmp_path):
    stack = PrivateStack(REPO, tmp_path / "stack")
    stack.up()
    try:
        urls = {r["annotations"]["runbook_url"]
                for path in (REPO / "alerts").glob("*.rules.yml")
                for g in YAML(typ="safe").load(path.read_text())["groups"]
                for r in g["rules"] if "alert" in r}
        assert urls
        for url in urls:
            assert url.startswith("http://127.0.0.1:9096/runbooks/"), url
            name = url.rsplit("/", 1)[1]
            got = httpx.get(f"{stack.pager_url}/runbooks/{name}", timeout=10)
            assert got.status_code == 200, url
            assert got.text == (REPO / "alerts" / "runbooks" / name).read_text()
        assert httpx.get(f"{stack.pager_url}/runbooks/Nope.md", timeout=10).status_code == 404
        assert httpx.get(f"{stack.pager_url}/runbooks/..%2Fsim.rules.yml",
                         timeout=10).status_code == 404
    finally:
        stack.down()
