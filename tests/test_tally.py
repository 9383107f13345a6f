"""The hot path's counters and in-flight gauges (issue 16): per-process tallies observed at
collection must export exactly what the synchronous instruments did, stay exact under
threads and across a fork, and the cheaper ``guarded`` must swallow what it swallowed."""

from __future__ import annotations

import os
import threading

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    Sum,
)

import redline
from redline._api.guard import guarded
from redline._api.testing import MetricsCapture
from redline.instruments import Instruments, Tally
from redline.semconv import METRICS, Attr


def _metric(reader: InMemoryMetricReader, name: str):
    data = reader.get_metrics_data()
    return next(m for rm in data.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.name == name)


def test_tallies_export_the_kind_unit_and_values_of_the_synchronous_instruments():
    reader = InMemoryMetricReader()
    inst = Instruments(MeterProvider(metric_readers=[reader]))
    assert isinstance(inst.requests_in_flight, Tally) and isinstance(inst.requests, Tally)
    a = {Attr.PROVIDER: "openai", Attr.REQUEST_MODEL: "m"}
    b = {Attr.REQUEST_MODEL: "m", Attr.PROVIDER: "openai", Attr.ERROR_TYPE: "cancelled"}
    for _ in range(3):
        inst.requests_in_flight.add(1, a)
    inst.requests_in_flight.add(-1, dict(reversed(a.items())))  # same set, other order
    inst.requests.add(5, a)
    inst.requests.add(2, b)
    gauge, counter = (_metric(reader, METRICS.REQUESTS_IN_FLIGHT.name),
                      _metric(reader, METRICS.REQUESTS.name))
    for metric, monotonic in ((gauge, False), (counter, True)):
        assert isinstance(metric.data, Sum)
        assert metric.data.is_monotonic is monotonic
        assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert gauge.unit == METRICS.REQUESTS_IN_FLIGHT.unit
    assert [(dict(p.attributes), p.value) for p in gauge.data.data_points] == [(a, 2)]
    assert sorted((len(p.attributes), p.value) for p in counter.data.data_points) == [
        (2, 5), (3, 2)]


def test_a_tally_is_exact_under_threads():
    reader = InMemoryMetricReader()
    inst = Instruments(MeterProvider(metric_readers=[reader]))
    a = {Attr.PROVIDER: "openai"}
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(20_000):
            inst.requests_in_flight.add(1, a)
            inst.requests.add(1, a)
            inst.requests_in_flight.add(-1, a)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inst.requests_in_flight.value(a) == 0
    assert inst.requests.value(a) == 160_000
    points = _metric(reader, METRICS.REQUESTS.name).data.data_points
    assert [p.value for p in points] == [160_000]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_child_forked_while_another_thread_holds_a_tally_lock_can_still_count():
    with MetricsCapture() as cap:
        from redline.instruments import get_instruments

        tally = get_instruments().requests_in_flight
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with tally._lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: the holder thread does not exist here
            ok = threading.Event()

            def count() -> None:
                with redline.model_call(provider="openai", model="m"):
                    pass
                ok.set()

            threading.Thread(target=count, daemon=True).start()
            os._exit(0 if ok.wait(5) else 1)
        release.set()
        holder.join()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child deadlocked on the tally"
        assert cap.sum(METRICS.REQUESTS.name) == 0  # the child's call is not the parent's


def test_guarded_swallows_and_counts_exceptions_but_not_cancellation():
    with MetricsCapture() as cap:
        with guarded("test_component"):
            raise ValueError("redline's own bug")
        with pytest.raises(KeyboardInterrupt), guarded("test_component"):
            raise KeyboardInterrupt
        assert cap.sum(METRICS.INSTRUMENTATION_ERRORS.name,
                       redline_component="test_component") == 1


# --- a call shape's attribute sets, built once (redline._api.attrs) ------------------------

def test_calls_of_one_shape_share_their_attribute_sets_and_record_the_same_attributes():
    from redline._api import attrs as shapes

    with MetricsCapture() as cap:
        calls = [redline.model_call(provider="vllm", model="m", server_address="gpu-1",
                                    server_port=8000, streaming=True) for _ in range(3)]
        for i, call in enumerate(calls):
            with call:
                call.chunk()
                call.response_model("m-2024")
                call.usage(input_tokens=3, output_tokens=4)
                call.attempt("ok" if i else "http_429", 0.01)
        assert calls[0].attrs is calls[1].attrs is calls[2].attrs
        assert shapes.attr_set("vllm", "m", "gpu-1", 8000, "chat").attrs_view is calls[0].attrs
        with pytest.raises(TypeError):  # shared by every call of the shape: read-only
            calls[0].attrs["gen_ai.request.model"] = "x"  # type: ignore[index]
        with pytest.raises(TypeError):
            calls[0].route["gen_ai.request.model"] = "x"  # type: ignore[index]
        want = {Attr.OPERATION: "chat", Attr.PROVIDER: "vllm", Attr.REQUEST_MODEL: "m",
                Attr.SERVER_ADDRESS: "gpu-1", Attr.SERVER_PORT: 8000}
        assert calls[0].attrs == want
        [done] = cap.points(METRICS.REQUESTS.name)
        assert dict(done.attributes) == {**want, Attr.RESPONSE_MODEL: "m-2024"}
        assert done.value == 3
        assert sorted((dict(p.attributes)[Attr.ATTEMPT_CAUSE], p.value)
                      for p in cap.points(METRICS.ATTEMPTS.name)) == [("http_429", 1), ("ok", 2)]
        assert cap.hist_sum(METRICS.TOKEN_USAGE.name, gen_ai_token_type="output") == 12
        [dur] = cap.points(METRICS.OPERATION_DURATION.name)
        assert dict(dur.attributes) == {**want, Attr.RESPONSE_MODEL: "m-2024",
                                        Attr.STREAMING: True}
        assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0


def test_the_shape_cache_is_bounded_and_forgets_with_the_cardinality_limits(monkeypatch):
    from redline._api import attrs as shapes
    from redline._api.cardinality import reset_limits

    monkeypatch.setenv("REDLINE_MAX_MODELS", "2")
    monkeypatch.setattr(shapes, "MAX_SHAPES", 4)
    reset_limits()
    try:
        assert shapes._shapes == {}
        with MetricsCapture() as cap:
            for i in range(10):
                with redline.model_call(provider="p", model=f"model-{i}"):
                    pass
            assert len(shapes._shapes) == 4  # the rest built per call, never stored
            models = sorted(dict(p.attributes)[Attr.REQUEST_MODEL]
                            for p in cap.points(METRICS.REQUESTS.name))
            assert models == ["_OTHER", "model-0", "model-1"]
            assert cap.sum(METRICS.REQUESTS.name) == 10
        # a cached "_OTHER" must not outlive the limits it was folded under
        monkeypatch.setenv("REDLINE_MAX_MODELS", "20")
        reset_limits()
        assert shapes._shapes == {}
        with MetricsCapture() as cap, redline.model_call(provider="p", model="model-9"):
            pass
        assert dict(cap.points(METRICS.REQUESTS.name)[0].attributes)[Attr.REQUEST_MODEL] == \
            "model-9"
    finally:
        monkeypatch.delenv("REDLINE_MAX_MODELS")
        reset_limits()


def test_an_unhashable_model_object_is_recorded_by_its_string():
    class Model(list):  # unhashable, as a careless wrapper object may be
        def __str__(self) -> str:
            return "odd-model"

    with MetricsCapture() as cap:
        with redline.model_call(provider="p", model=Model()):
            pass
        [done] = cap.points(METRICS.REQUESTS.name)
        assert dict(done.attributes)[Attr.REQUEST_MODEL] == "odd-model"
