"""``configure_telemetry``: the OTEL_* environment, redline's defaults, idempotence.

The global ``MeterProvider`` can be set once per process, so what touches it runs in a
subprocess; the environment parsing is checked in-process on the helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

from redline import telemetry
from redline.semconv import LATENCY_MAX_SCALE, LATENCY_MAX_SIZE, METRICS

OTEL_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
             "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
             "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in OTEL_VARS:
        monkeypatch.delenv(var, raising=False)


def test_defaults_point_at_the_local_collector_over_grpc():
    exporter = telemetry._exporter(None)
    assert isinstance(exporter, Grpc)
    assert exporter._endpoint == "127.0.0.1:4317"
    assert exporter._insecure
    assert telemetry._interval_ms(None) == 5000


def test_standard_env_vars_are_honoured(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1234")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    exporter = telemetry._exporter(None)
    assert isinstance(exporter, Http)
    assert exporter._endpoint == "http://collector:4318/v1/metrics"
    assert telemetry._interval_ms(None) == 1234
    assert telemetry._interval_ms(500) == 500  # an explicit argument wins
    res = telemetry._resource(None).attributes
    assert res["service.name"] == "checkout"
    assert res["deployment.environment"] == "prod"
    assert len(res["service.instance.id"]) == 36  # a uuid


def test_signal_specific_endpoint_and_explicit_arguments(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4318/custom/path")
    assert telemetry._exporter(None)._endpoint == "http://c:4318/custom/path"
    assert telemetry._exporter("http://other:4318")._endpoint == "http://other:4318/v1/metrics"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7")
    assert telemetry._resource("svc").attributes["service.instance.id"] == "pod-7"
    assert telemetry._resource("svc").attributes["service.name"] == "svc"


@pytest.mark.parametrize("given", ["127.0.0.1:4317", "localhost:4317", "[::1]:4317"])
def test_loopback_endpoint_without_scheme_is_plaintext(given, monkeypatch, caplog):
    exporter = telemetry._exporter(given)
    assert exporter._insecure, given
    assert exporter._endpoint == given.replace("[::1]", "::1") or exporter._endpoint == given
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", given)  # the same from the environment
    assert telemetry._exporter(None)._insecure
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert telemetry._exporter(given)._endpoint == f"http://{given}/v1/metrics"
    assert "no scheme" not in caplog.text


def test_remote_endpoint_without_scheme_is_tls_and_says_what_to_write(caplog):
    exporter = telemetry._exporter("collector.example:4317")
    assert not exporter._insecure
    assert "Write http://collector.example:4317 for a plaintext receiver" in caplog.text


@pytest.mark.stack
def test_scheme_less_loopback_endpoint_really_exports(stack):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader

    port = stack.otlp_grpc_endpoint.rsplit(":", 1)[1]
    exporter = telemetry._exporter(f"127.0.0.1:{port}")
    results = []
    real_export = exporter.export

    def export(data, **kw):
        results.append(real_export(data, **kw))
        return results[-1]

    exporter.export = export
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
        exporter, export_interval_millis=60_000)])
    provider.get_meter("t").create_counter("redline_scheme_test").add(1)
    provider.force_flush()
    provider.shutdown()
    assert results and results[0] is MetricExportResult.SUCCESS


def test_unknown_protocol_is_an_actionable_error(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP"):
        telemetry._exporter(None)


def test_every_latency_histogram_gets_an_exponential_view():
    views = telemetry.latency_views()
    names = {v._instrument_name for v in views}
    assert names == {m.name for m in METRICS.all() if m.exponential}
    agg = views[0]._aggregation
    assert isinstance(agg, ExponentialBucketHistogramAggregation)
    assert (agg._max_size, agg._max_scale) == (LATENCY_MAX_SIZE, LATENCY_MAX_SCALE)


def _run(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in OTEL_VARS}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, env={**clean, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_configure_is_idempotent_and_sets_the_global_provider():
    got = _run("""
        import json, redline
        from opentelemetry import metrics
        from redline.instruments import get_instruments
        p1 = redline.configure_telemetry(service_name="svc", export_interval_ms=60000)
        p2 = redline.configure_telemetry()
        reader = p1._metric_readers[0]
        out = dict(same=p1 is p2, is_global=metrics.get_meter_provider() is p1,
                   interval=reader._export_interval_millis,
                   instance=p1._sdk_config.resource.attributes.get("service.instance.id"),
                   name=p1._sdk_config.resource.attributes.get("service.name"),
                   views=len(p1._sdk_config.views),
                   instruments=get_instruments() is get_instruments(p1))
        redline.shutdown_telemetry()
        print(json.dumps(out))
    """)
    assert got["same"] and got["is_global"] and got["instruments"]
    assert got["interval"] == 60000 and got["name"] == "svc" and got["instance"]
    assert got["views"] == sum(1 for m in METRICS.all() if m.exponential)


def test_an_existing_global_provider_is_used_as_is():
    got = _run("""
        import json, redline
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        mine = MeterProvider()
        metrics.set_meter_provider(mine)
        print(json.dumps(dict(same=redline.configure_telemetry() is mine)))
        redline.shutdown_telemetry()
    """)
    assert got["same"]


def test_the_last_export_reports_nothing_in_flight():
    """FinalZeroExporter: after closing(), in-flight gauges export as 0, the rest as is."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )

    from redline._final_zero import IN_FLIGHT_NAMES, FinalZeroExporter

    class Recording(MetricExporter):
        def __init__(self):
            super().__init__(preferred_temporality={})
            self.exports = []

        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            self.exports.append({m.name: [p.value for p in m.data.data_points]
                                 for rm in metrics_data.resource_metrics
                                 for sm in rm.scope_metrics for m in sm.metrics})
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis=10_000):
            return True

        def shutdown(self, timeout_millis=30_000, **kwargs):
            pass

    inner = Recording()
    final = FinalZeroExporter(inner)
    assert final._preferred_temporality == inner._preferred_temporality
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
        final, export_interval_millis=3_600_000)])
    meter = provider.get_meter("t")
    in_flight = meter.create_up_down_counter(METRICS.REQUESTS_IN_FLIGHT.name)
    requests = meter.create_counter(METRICS.REQUESTS.name)
    in_flight.add(3, {"m": "a"})
    in_flight.add(2, {"m": "b"})
    requests.add(7)
    provider.force_flush()
    assert sorted(inner.exports[-1][METRICS.REQUESTS_IN_FLIGHT.name]) == [2, 3]
    final.closing()
    provider.shutdown()
    last = inner.exports[-1]
    assert last[METRICS.REQUESTS_IN_FLIGHT.name] == [0, 0]
    assert last[METRICS.REQUESTS.name] == [7]
    assert METRICS.REQUESTS_IN_FLIGHT.name in IN_FLIGHT_NAMES
    assert METRICS.REQUESTS.name not in IN_FLIGHT_NAMES


def test_explicit_bucket_histograms_are_detected_and_warned_once(caplog):
    import logging

    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics import MeterProvider as SDKProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    from redline import telemetry

    plain = SDKProvider(metric_readers=[InMemoryMetricReader()])
    explicit = telemetry.explicit_bucket_histograms(plain)
    assert "gen_ai.client.operation.duration" in explicit
    assert "gen_ai.client.operation.time_to_first_chunk" in explicit
    viewed = SDKProvider(metric_readers=[InMemoryMetricReader()],
                         views=telemetry.latency_views())
    assert telemetry.explicit_bucket_histograms(viewed) == []
    by_default = SDKProvider(metric_readers=[InMemoryMetricReader(
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()})])
    assert telemetry.explicit_bucket_histograms(by_default) == []
    assert telemetry.explicit_bucket_histograms(object()) is None
    telemetry._warned = False
    with caplog.at_level(logging.WARNING, logger="redline"):
        assert telemetry.warn_if_explicit_buckets(viewed) is False
        assert telemetry.warn_if_explicit_buckets(plain) is True
        assert telemetry.warn_if_explicit_buckets(plain) is False  # once per process
    assert caplog.text.count("as explicit buckets") == 1
    for p in (plain, viewed, by_default):
        p.shutdown()
