"""The scale-out backend tells the same truth: the end-to-end and page tests, against
Thanos (2 receivers in a hashring with replication factor 2, query, ruler).

The tests are those of ``test_pipeline_e2e`` and ``test_alerts_live``, imported and run
here with this module's ``stack`` and ``run`` fixtures: a private Thanos topology
(``redline stack up --backend thanos`` on free ports). In the end-to-end run one
receiver is SIGKILLed while the app is mid-load; the exact counts then show that it lost
nothing.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from tests.test_alerts_live import (
    test_page_reaches_pager_in_time_first_and_again_after_resolving,
)
from tests.test_outages import _kill
from tests.test_pipeline_e2e import (
    SLOTS,
    _run_workload,
    test_p95_within_5_percent_of_client,
    test_peak_in_flight_equals_driven_concurrency,
    test_request_count_is_exact,
)
from tests.workloads.private_stack import PrivateStack

from redline_operator import promql
from redline_operator.sim import SimConfig, run_in_thread
from redline_operator.stack import Stack, StackError
from redline_operator.stack.thanos import wait_wired

pytestmark = [pytest.mark.stack, pytest.mark.slow]

__all__ = ["test_request_count_is_exact", "test_peak_in_flight_equals_driven_concurrency",
           "test_p95_within_5_percent_of_client",
           "test_page_reaches_pager_in_time_first_and_again_after_resolving"]

RUN_S = 10.0
KILL_AFTER_S = 4.0


@pytest.fixture(scope="module")
def stack(stack_binaries, repo_root, tmp_path_factory):
    try:
        for _ in Stack(repo_root, backend="thanos").build():  # `make thanos`; cached
            pass
    except StackError as exc:
        pytest.fail(f"building Thanos failed:\n{exc}")
    thanos = PrivateStack(repo_root, tmp_path_factory.mktemp("thanos"), backend="thanos")
    thanos.up()
    wait_wired(thanos.prometheus_url)
    yield thanos
    thanos.down()


@pytest.fixture(scope="module")
def own_stack(stack):
    """The page test's pristine stack is this module's Thanos topology (its ruler evaluates
    the generated rules and sends to its own Alertmanager)."""
    return stack


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory):
    """The e2e workload through Thanos, with receiver 1 SIGKILLed mid-run."""
    service = f"thanos-e2e-{uuid.uuid4().hex[:8]}"
    out = tmp_path_factory.mktemp("thanos-e2e") / "records.json"
    records: list = []
    with run_in_thread(SimConfig(slots=SLOTS, seed=7), port=0) as sim:
        worker = threading.Thread(target=lambda: records.extend(
            _run_workload(stack, sim.url, service, out, seconds=RUN_S)))
        worker.start()
        time.sleep(KILL_AFTER_S)
        _kill(stack, "thanos-receive-1")
        worker.join()
    assert records, "the workload failed"
    stack.up()  # receive-1 comes back (it then lacks the samples of its outage)
    wait_wired(stack.prometheus_url)
    prom = promql.PrometheusClient(stack.prometheus_url)
    yield service, records, prom
    prom.close()


def test_native_histograms_survive_remote_write(run):
    service, records, prom = run
    sel = promql.selector(job=service)
    name = "gen_ai_client_operation_duration_seconds"
    # a native histogram: no classic _bucket series, and histogram functions answer
    assert prom.query(f"{name}_bucket{{{sel}}}") == []
    assert prom.scalar(f"sum(histogram_count({name}{{{sel}}}))") == len(records)
    for key, metric in (("duration", name), ("ttft", f"{name[:-len('duration_seconds')]}"
                                                       "time_to_first_chunk_seconds")):
        exact = float(np.percentile([r[key] for r in records], 95))
        got = prom.scalar(f"histogram_quantile(0.95, sum({metric}{{{sel}}}))")
        print(f"\nThanos p95 {key}: {got:.4f} s vs client {exact:.4f} s "
              f"({(got - exact) / exact:+.2%}); {len(records)} calls")
