"""One call to get redline's metrics to the Collector: :func:`configure_telemetry`.

It builds an OpenTelemetry SDK ``MeterProvider`` from the standard ``OTEL_*`` environment
(endpoint, protocol, service name, resource attributes, export interval), with redline's
defaults where the environment says nothing: OTLP/gRPC to the local Collector on
``127.0.0.1:4317``, an export every 5 s, cumulative temporality, a random
``service.instance.id`` so that several processes never overwrite each other's series, and
base-2 exponential histograms for every latency metric so Prometheus stores native
histograms.

Example:
    >>> import redline
    >>> provider = redline.configure_telemetry(service_name="checkout-agent")
    >>> redline.instrument()
    >>> ...  # the app runs
    >>> redline.shutdown_telemetry()
"""

from __future__ import annotations

import atexit
import fnmatch
import logging
import os
import threading
import uuid

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_METRIC_EXPORT_INTERVAL,
)
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource

from redline._final_zero import FinalZeroExporter
from redline.instruments import set_default_meter_provider
from redline.semconv import LATENCY_MAX_SCALE, LATENCY_MAX_SIZE, METRICS

__all__ = [
    "configure_telemetry",
    "shutdown_telemetry",
    "force_flush",
    "latency_views",
    "explicit_bucket_histograms",
    "warn_if_explicit_buckets",
    "normalize_endpoint",
    "DEFAULT_GRPC_ENDPOINT",
    "DEFAULT_HTTP_ENDPOINT",
    "DEFAULT_EXPORT_INTERVAL_MS",
]

_log = logging.getLogger(__name__)

DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_EXPORT_INTERVAL_MS = 5000

_lock = threading.Lock()
_provider: MeterProvider | None = None  # what configure_telemetry returned
_owned = False  # True when redline built it (and so shuts it down)
_final: FinalZeroExporter | None = None  # its exporter: the last export reports 0 in flight

_CUMULATIVE = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter,
                 ObservableGauge)
}


def latency_views() -> list[View]:
    """Views giving every ``exponential`` histogram of the catalogue a base-2 exponential
    aggregation (``LATENCY_MAX_SIZE`` buckets, ``LATENCY_MAX_SCALE``).

    Use them when you build your own ``MeterProvider``:
    ``MeterProvider(metric_readers=[...], views=redline.telemetry.latency_views())``.
    """
    return [
        View(instrument_name=spec.name,
             aggregation=ExponentialBucketHistogramAggregation(
                 max_size=LATENCY_MAX_SIZE, max_scale=LATENCY_MAX_SCALE))
        for spec in METRICS.all() if spec.exponential
    ]


def explicit_bucket_histograms(provider: MeterProvider | None) -> list[str] | None:
    """The catalogue's exponential histograms that ``provider`` would aggregate as explicit
    buckets (classic histograms in Prometheus); ``None`` when that cannot be told (not an
    SDK provider, or an SDK whose internals differ).

    A histogram is exponential when a view names it with a base-2 exponential aggregation,
    or when every reader's default for histograms is one (what
    ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram``
    sets on the OTLP exporter).
    """
    if not isinstance(provider, SDKMeterProvider):
        return None
    try:
        views = list(provider._sdk_config.views)
        readers = list(provider._metric_readers)
        # keyed by the SDK's private instrument classes (_Histogram, a Histogram subclass)
        by_reader = [next((a for cls, a in r._instrument_class_aggregation.items()
                           if issubclass(cls, Histogram)), None) for r in readers]
    except AttributeError:
        return None
    readers_exponential = bool(readers) and all(
        isinstance(a, ExponentialBucketHistogramAggregation) for a in by_reader)
    explicit = []
    for spec in METRICS.all():
        if not spec.exponential or spec.name.startswith(("redline.limiter.", "hw.")):
            continue
        named = [v for v in views if fnmatch.fnmatchcase(spec.name, v._instrument_name or "")]
        if any(isinstance(v._aggregation, ExponentialBucketHistogramAggregation) for v in named):
            continue
        if not named and readers_exponential:
            continue
        explicit.append(spec.name)
    return explicit


_warned = False


def warn_if_explicit_buckets(provider: MeterProvider | None) -> bool:
    """Log one WARNING (per process) when ``provider`` makes redline's latency histograms
    explicit-bucket ones; returns whether it warned. Rules and dashboards still answer
    (they fall back to the classic ``_bucket`` series), with the semconv buckets' coarser
    resolution."""
    global _warned
    if _warned:
        return False
    try:
        explicit = explicit_bucket_histograms(provider or metrics.get_meter_provider())
    except Exception:  # never let a check break instrument()
        return False
    if not explicit:
        return False
    _warned = True
    _log.warning(
        "redline: the active MeterProvider aggregates %d of redline's latency histograms "
        "(%s, ...) as explicit buckets, so Prometheus stores classic histograms with the "
        "semconv boundaries: p95 rules and panels still answer, at bucket resolution. For "
        "native histograms set OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION="
        "base2_exponential_bucket_histogram, or pass views=redline.telemetry.latency_views() "
        "to your MeterProvider", len(explicit), explicit[0])
    return True


def _global_sdk_provider() -> MeterProvider | None:
    """The global provider when someone (e.g. ``opentelemetry-instrument``) already set one."""
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    provider = metrics.get_meter_provider()
    if isinstance(provider, (_ProxyMeterProvider, metrics.NoOpMeterProvider)):
        return None
    return provider


def _protocol() -> str:
    proto = (os.environ.get(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
             or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL) or "grpc")
    return proto.strip().lower()


_LOOPBACK = ("localhost", "::1", "[::1]")


def _is_loopback(host: str) -> bool:
    host = host.strip().lower()
    return host in _LOOPBACK or host.startswith("127.") or host.endswith(".localhost")


def normalize_endpoint(endpoint: str | None) -> str | None:
    """Give an OTLP endpoint without a scheme one: ``http://`` (plaintext) on a loopback
    address, where a local Collector listens without TLS; otherwise ``https://``, with a
    warning saying what to write for plaintext. With a scheme it is returned as is.

    Example:
        >>> normalize_endpoint("127.0.0.1:4317")
        'http://127.0.0.1:4317'
    """
    if endpoint is None or "://" in endpoint:
        return endpoint
    raw = endpoint.strip()
    host = raw.rsplit(":", 1)[0] if raw.count(":") == 1 or raw.startswith("[") else raw
    host = host.split("/", 1)[0]
    if _is_loopback(host):
        return f"http://{raw}"
    _log.warning("redline: OTLP endpoint %r has no scheme; using TLS (https://%s). Write "
                 "http://%s for a plaintext receiver", raw, raw, raw)
    return f"https://{raw}"


def _exporter(endpoint: str | None):
    """The OTLP metric exporter for the configured protocol (gRPC unless told otherwise)."""
    from_env = (os.environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
                or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT))
    if endpoint is None and from_env and "://" not in from_env:
        endpoint = from_env  # the same rule for a scheme-less endpoint from the environment
    endpoint = normalize_endpoint(endpoint)
    protocol = _protocol()
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        if endpoint is None and not from_env:
            endpoint = DEFAULT_HTTP_ENDPOINT
        if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/metrics"):
            endpoint = endpoint.rstrip("/") + "/v1/metrics"
        return OTLPMetricExporter(endpoint=endpoint, preferred_temporality=_CUMULATIVE)
    if protocol != "grpc":
        raise ValueError(
            f"OTLP protocol {protocol!r} (from OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL) is not "
            "supported; use 'grpc' or 'http/protobuf'")
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    if endpoint is None and not from_env:
        endpoint = DEFAULT_GRPC_ENDPOINT
    return OTLPMetricExporter(endpoint=endpoint, preferred_temporality=_CUMULATIVE)


def _interval_ms(explicit: int | None) -> int:
    if explicit is not None:
        return int(explicit)
    raw = os.environ.get(OTEL_METRIC_EXPORT_INTERVAL)
    if raw:
        try:
            return int(float(raw))
        except ValueError:
            _log.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is not a number of milliseconds; "
                         "using %d", raw, DEFAULT_EXPORT_INTERVAL_MS)
    return DEFAULT_EXPORT_INTERVAL_MS


def _resource(service_name: str | None) -> Resource:
    attrs = {SERVICE_NAME: service_name} if service_name else {}
    resource = Resource.create(attrs)
    if not resource.attributes.get(SERVICE_INSTANCE_ID):
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return resource


def configure_telemetry(
    *,
    service_name: str | None = None,
    endpoint: str | None = None,
    export_interval_ms: int | None = None,
    meter_provider: MeterProvider | None = None,
) -> MeterProvider:
    """Set up metric export to an OTLP receiver (by default the local Collector).

    Idempotent: a second call returns the provider of the first. When a global SDK
    ``MeterProvider`` already exists (``opentelemetry-instrument`` sets one) it is used as is.

    Args:
        service_name: ``service.name``; else ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
        endpoint: OTLP endpoint; else ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` /
            ``OTEL_EXPORTER_OTLP_ENDPOINT``; else ``http://127.0.0.1:4317`` (gRPC) or
            ``http://127.0.0.1:4318`` (``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``).
            Without a scheme, a loopback address means plaintext (``127.0.0.1:4317`` is
            ``http://127.0.0.1:4317``); any other host means TLS, with a warning.
        export_interval_ms: export period; else ``OTEL_METRIC_EXPORT_INTERVAL``; else 5000.
        meter_provider: use this provider instead of building one (it is not shut down by
            :func:`shutdown_telemetry`).

    Returns:
        The ``MeterProvider`` redline records into.

    Raises:
        ValueError: the OTLP protocol in the environment is neither ``grpc`` nor ``http/*``.
    """
    global _provider, _owned, _final
    with _lock:
        if _provider is not None:
            return _provider
        provider, owned = meter_provider, False
        if provider is None:
            provider = _global_sdk_provider()
        if provider is None:
            _final = FinalZeroExporter(_exporter(endpoint))
            reader = PeriodicExportingMetricReader(
                _final, export_interval_millis=_interval_ms(export_interval_ms))
            provider = SDKMeterProvider(metric_readers=[reader], resource=_resource(service_name),
                                        views=latency_views())
            # Runs before the SDK's own exit hook (registered above, atexit is LIFO), whose
            # final export then reports 0 in flight even without shutdown_telemetry().
            atexit.register(_final.closing)
            metrics.set_meter_provider(provider)
            owned = True
        _provider, _owned = provider, owned
        set_default_meter_provider(provider)
        return provider


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export what has been recorded now, without waiting for the next period.

    Returns:
        ``True`` when the flush completed (or there was nothing to flush).
    """
    provider = _provider or _global_sdk_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is None:
        return True
    try:
        return bool(flush(timeout_millis=timeout_millis))
    except Exception:  # an exporter failure must not break the app at exit
        _log.warning("redline: flushing metrics failed", exc_info=True)
        return False


def shutdown_telemetry(timeout_millis: int = 10_000) -> None:
    """Flush and stop what :func:`configure_telemetry` built; a no-op otherwise.

    The last export reports every in-flight gauge as 0 (calls still open are abandoned by
    the exiting process), so no reader counts this process after it. Returns within about
    ``timeout_millis`` even when the Collector is gone or hangs: the export is abandoned.

    After it, :func:`configure_telemetry` may be called again (it then reuses the global
    provider, which OpenTelemetry does not let anyone replace).
    """
    global _provider, _owned, _final
    with _lock:
        provider, owned, final = _provider, _owned, _final
        _provider, _owned, _final = None, False, None
    if provider is None:
        return
    try:
        if owned:
            if final is not None:
                final.closing()
            provider.shutdown(timeout_millis=timeout_millis)
        else:
            force_flush()
    except Exception:
        _log.warning("redline: shutting down metrics failed", exc_info=True)
