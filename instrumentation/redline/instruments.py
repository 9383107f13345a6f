"""The OpenTelemetry instruments behind every metric in :mod:`redline.semconv`, created once.

Each ``MeterProvider`` gets one :class:`Instruments` holding one instrument per catalogue
entry (except the limiter's and the GPU's, which :mod:`redline.limiter` and :mod:`redline.gpu`
observe from their own meters); asking again returns the same object, so instruments are
never re-created per call.

The counters and in-flight gauges of the hot path (requests, attempts, retries, handoffs;
requests, sessions, tool calls and agent activity in flight) are :class:`Tally` objects: a
call adds to a plain per-process total (a dict under a lock), and an observable instrument
of the same name, kind and unit reports the totals when a reader collects. An ``add`` costs
about 0.8 µs instead of the SDK's 7-13 µs per measurement (attribute cleaning, hashing,
exemplar filtering; ``benchmarks/bench_overhead.py``), and the export is exactly what the
synchronous instruments produced: a cumulative sum per attribute set, monotonic for the
counters. The keys are bounded like the attributes themselves (models and servers folded
past ``REDLINE_MAX_MODELS``/``REDLINE_MAX_SERVERS``).
Attribute names mirror the catalogue: ``METRICS.OPERATION_DURATION`` is
``instruments.operation_duration``.

Example:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> inst = get_instruments(MeterProvider())
    >>> inst.requests_in_flight.add(1, {"gen_ai.provider.name": "openai"})
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from redline.semconv import METRICS, Kind, MetricSpec

__all__ = ["Instruments", "Tally", "get_instruments", "set_default_meter_provider",
           "METER_NAME"]

METER_NAME = "redline"

try:  # the version shown as the instrumentation scope
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("redline")
except Exception:  # pragma: no cover - not installed as a distribution
    _VERSION = "0.0.0"

_lock = threading.Lock()
# Tallies whose lock must be renewed in a forked child (a thread may hold it at the fork).
_tallies: weakref.WeakSet[Tally] = weakref.WeakSet()
_by_provider: dict[int, tuple[MeterProvider, Instruments]] = {}
_default_provider: MeterProvider | None = None


# The limiter (``redline.limiter`` meter) and the GPU sampler (``redline.gpu`` meter) own
# their metrics as observable instruments; creating them here too would export twice.
_OWNED_ELSEWHERE = ("redline.limiter.", "hw.")


def _catalogue() -> list[tuple[str, MetricSpec]]:
    return [(key, spec) for key, spec in vars(METRICS).items()
            if isinstance(spec, MetricSpec) and not spec.name.startswith(_OWNED_ELSEWHERE)]


# Counted per call on the hot path: kept as per-process totals, observed at collection.
_TALLIED = frozenset({
    METRICS.REQUESTS_IN_FLIGHT.name, METRICS.SESSIONS_IN_FLIGHT.name,
    METRICS.TOOL_CALLS_IN_FLIGHT.name, METRICS.AGENT_ACTIVITY_IN_FLIGHT.name,
    METRICS.AGENT_HANDOFFS.name, METRICS.REQUESTS.name, METRICS.ATTEMPTS.name,
    METRICS.RETRIES.name})


class Tally:
    """A counter or up-down counter kept as per-process totals and reported by an observable
    instrument (same name, kind, unit): ``add`` is a dict update under a lock.

    Args:
        meter: the meter that creates the observable instrument.
        spec: a :class:`~redline.semconv.MetricSpec` of kind counter or up-down counter.
    """

    __slots__ = ("_totals", "_lock", "_instrument", "__weakref__")

    def __init__(self, meter: Meter, spec: MetricSpec) -> None:
        self._totals: dict[frozenset, int | float] = {}
        self._lock = threading.Lock()
        create = (meter.create_observable_counter if spec.kind is Kind.COUNTER
                  else meter.create_observable_up_down_counter)
        self._instrument = create(spec.name, callbacks=[self._observe], unit=spec.unit,
                                  description=spec.description)
        _tallies.add(self)

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None) -> None:
        """Add ``amount`` to the total of ``attributes`` (the synchronous instruments' API)."""
        self.add_key(amount, frozenset(attributes.items()) if attributes else frozenset())

    def add_key(self, amount: int | float, key: frozenset) -> None:
        """:meth:`add` with the attributes' key already built
        (``frozenset(attributes.items())``, as :class:`redline._api.attrs.AttrSet` keeps it)."""
        with self._lock:
            self._totals[key] = self._totals.get(key, 0) + amount

    def value(self, attributes: Mapping[str, Any] | None = None) -> int | float:
        """The current total of ``attributes`` (0 if never added to)."""
        return self._totals.get(frozenset(attributes.items()) if attributes else frozenset(), 0)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            totals = list(self._totals.items())
        return [Observation(v, dict(k)) for k, v in totals]

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _renew_locks_after_fork() -> None:
    for tally in list(_tallies):
        tally._after_fork()


if hasattr(os, "register_at_fork"):  # before model_call's own reset, which adds to tallies
    os.register_at_fork(after_in_child=_renew_locks_after_fork)


def _create(meter: Meter, spec: MetricSpec) -> Any:
    if spec.name in _TALLIED:
        return Tally(meter, spec)
    kw = {"name": spec.name, "unit": spec.unit, "description": spec.description}
    if spec.kind is Kind.HISTOGRAM:
        if spec.buckets:
            try:  # the advisory parameter is missing from older APIs (1.28 has none)
                return meter.create_histogram(
                    **kw, explicit_bucket_boundaries_advisory=list(spec.buckets))
            except TypeError:
                pass
        return meter.create_histogram(**kw)
    if spec.kind is Kind.COUNTER:
        return meter.create_counter(**kw)
    if spec.kind is Kind.UPDOWN:
        return meter.create_up_down_counter(**kw)
    return meter.create_gauge(**kw)


class Instruments:
    """One instrument per :class:`~redline.semconv.MetricSpec`, from a single meter.

    Args:
        meter_provider: the provider whose ``redline`` meter creates the instruments.
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        self.meter = meter_provider.get_meter(METER_NAME, _VERSION)
        self._by_name: dict[str, Any] = {}
        for key, spec in _catalogue():
            instrument = _create(self.meter, spec)
            setattr(self, key.lower(), instrument)
            self._by_name[spec.name] = instrument

    def __getitem__(self, spec: MetricSpec | str) -> Any:
        """The instrument of a catalogue entry or OTel metric name."""
        return self._by_name[spec.name if isinstance(spec, MetricSpec) else spec]

    # typed shortcuts for the hot path (set in __init__; declared for readers and linters)
    operation_duration: Any
    time_to_first_chunk: Any
    time_per_output_chunk: Any
    token_usage: Any
    requests_in_flight: Any
    sessions_in_flight: Any
    tool_calls_in_flight: Any
    agent_activity_in_flight: Any
    agent_handoffs: Any
    invoke_agent_duration: Any
    execute_tool_duration: Any
    requests: Any
    attempts: Any
    retries: Any
    attempt_duration: Any
    retry_backoff: Any
    retry_after: Any
    instrumentation_errors: Any


def set_default_meter_provider(meter_provider: MeterProvider | None) -> None:
    """Make ``meter_provider`` what :func:`get_instruments` uses when given none.

    ``None`` falls back to the global provider (``opentelemetry.metrics``).
    """
    global _default_provider
    _default_provider = meter_provider


def get_instruments(meter_provider: MeterProvider | None = None) -> Instruments:
    """The instruments of ``meter_provider``, created on the first call and reused after.

    Args:
        meter_provider: explicit provider; else the one set by :func:`redline.instrument` /
            :func:`redline.configure_telemetry`, else the global OpenTelemetry provider.

    Returns:
        The same :class:`Instruments` for the same provider, every time.
    """
    provider = meter_provider or _default_provider or metrics.get_meter_provider()
    key = id(provider)
    found = _by_provider.get(key)
    if found is not None and found[0] is provider:
        return found[1]
    with _lock:
        found = _by_provider.get(key)
        if found is None or found[0] is not provider:
            found = (provider, Instruments(provider))
            _by_provider[key] = found
        return found[1]
