"""The agent concurrency split in `redline top` and its PromQL (the live read is in
tests/test_fw_stack.py)."""

from __future__ import annotations

import io

from rich.console import Console

from redline.config import load_config
from redline_operator import agents_promql as ap
from redline_operator.top import AgentSnapshot, TargetSnapshot, render


def test_frame_shows_where_agents_spend_their_concurrency(repo_root):
    t = load_config(repo_root / "redline.yaml").targets[0]
    snap = TargetSnapshot(t, in_flight=3.0, p95=0.5, p99=0.9, ttft_p95=0.1, retries_per_s=0.0)
    agents = [AgentSnapshot("app", "triage", 4.0, 0.25, 0.6, 0.15)]
    console = Console(record=True, width=160, color_system=None, file=io.StringIO())
    console.print(render([snap], "http://prom:9090", 2.0, now=0, agents=agents))
    text = console.export_text()
    assert "where agents spend their concurrency" in text
    row = next(line for line in text.splitlines() if "triage" in line)
    assert "4.0" in row and "25%" in row and "60%" in row and "15%" in row
    console = Console(record=True, width=160, color_system=None, file=io.StringIO())
    console.print(render([snap], "http://prom:9090", 2.0, now=0))
    assert "where agents spend" not in console.export_text()  # no agents: no table


def test_share_queries_select_the_job_and_pool_metrics():
    assert 'job=~"$job"' in ap.share("$job") and "$job" not in ap.share()
    for pool, (gauge, hist) in ap.POOLS.items():
        expr = ap.littles_law(pool)
        assert gauge.prom in expr and hist.prom in expr
