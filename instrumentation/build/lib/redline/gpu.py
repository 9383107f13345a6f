"""GPU utilization, memory, power and temperature from NVML, as OTel ``hw.*`` gauges.

:func:`maybe_start` registers observable gauges that read every NVIDIA GPU through
``nvidia-ml-py`` (``import pynvml``) each time the SDK collects. Where NVML cannot run (the
package is missing, or ``nvmlInit`` fails: no driver, no GPU) it logs one line and returns
``False``: nothing is registered and nothing is ever sampled, so a CPU-only host pays
nothing. :func:`redline.instrument` calls it.

===========================  ====  ====================================================
metric                       unit  value (per GPU)
===========================  ====  ====================================================
``hw.gpu.utilization``       1     busy fraction over NVML's last sample period, 0..1
``hw.gpu.memory.usage``      By    memory used
``hw.gpu.memory.limit``      By    memory total
``hw.power``                 W     power draw (``hw.type=gpu``)
``hw.power.limit``           W     enforced power limit (``hw.type=gpu``; redline name)
``hw.temperature``           Cel   core temperature (``hw.type=gpu``)
===========================  ====  ====================================================

Every point carries ``hw.id`` (the GPU UUID), ``hw.name`` (the product name),
``hw.vendor`` (``nvidia``) and ``redline.gpu.index`` (the NVML index, as a string).

Example:
    >>> from redline import gpu
    >>> gpu.maybe_start()   # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from redline.semconv import METRICS, Attr, MetricSpec

__all__ = ["maybe_start", "stop", "is_running", "METER_NAME"]

METER_NAME = "redline.gpu"
_log = logging.getLogger("redline")
_lock = threading.Lock()
_sampler: _Sampler | None = None
_providers: dict[int, MeterProvider] = {}  # providers that already have the gauges
_said_unavailable = False


class _Device:
    __slots__ = ("handle", "attrs", "typed_attrs")

    def __init__(self, nvml: Any, index: int) -> None:
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.attrs = {
            Attr.HW_ID: _text(nvml.nvmlDeviceGetUUID(self.handle)),
            Attr.HW_NAME: _text(nvml.nvmlDeviceGetName(self.handle)),
            Attr.HW_VENDOR: "nvidia",
            Attr.HW_GPU_INDEX: str(index),
        }
        self.typed_attrs = {**self.attrs, Attr.HW_TYPE: "gpu"}


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Sampler:
    """The NVML module and the devices found at start; reads one quantity for all GPUs."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.devices = [_Device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
        self._failed: set[str] = set()

    def read(self, what: str, typed: bool, fn: Callable[[Any, Any], float]
             ) -> list[Observation]:
        out = []
        for dev in self.devices:
            try:
                out.append(Observation(fn(self.nvml, dev.handle),
                                       dev.typed_attrs if typed else dev.attrs))
            except Exception as exc:  # NotSupported on this GPU, or a transient NVML error
                key = f"{what}:{dev.attrs[Attr.HW_GPU_INDEX]}"
                if key not in self._failed:
                    self._failed.add(key)
                    _log.info("redline: GPU %s: %s unavailable (%s); skipped",
                              dev.attrs[Attr.HW_GPU_INDEX], what, exc)
        return out


# (spec, has hw.type, reader) — NVML reports percent, milliwatts, bytes and degrees C
_READERS: list[tuple[MetricSpec, bool, Callable[[Any, Any], float]]] = [
    (METRICS.GPU_UTILIZATION, False, lambda n, h: n.nvmlDeviceGetUtilizationRates(h).gpu / 100.0),
    (METRICS.GPU_MEMORY_USAGE, False, lambda n, h: n.nvmlDeviceGetMemoryInfo(h).used),
    (METRICS.GPU_MEMORY_LIMIT, False, lambda n, h: n.nvmlDeviceGetMemoryInfo(h).total),
    (METRICS.GPU_POWER, True, lambda n, h: n.nvmlDeviceGetPowerUsage(h) / 1000.0),
    (METRICS.GPU_POWER_LIMIT, True, lambda n, h: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
    (METRICS.GPU_TEMPERATURE, True,
     lambda n, h: float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))),
]


def _callback(spec: MetricSpec, typed: bool, fn: Callable[[Any, Any], float]
              ) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        sampler = _sampler
        return [] if sampler is None else sampler.read(spec.name, typed, fn)
    return observe


def _register(provider: MeterProvider) -> None:
    """Create the gauges on ``provider`` once; they read whichever sampler is running."""
    if id(provider) in _providers and _providers[id(provider)] is provider:
        return
    meter = provider.get_meter(METER_NAME)
    for spec, typed, fn in _READERS:
        meter.create_observable_gauge(spec.name, callbacks=[_callback(spec, typed, fn)],
                                      unit=spec.unit, description=spec.description)
    _providers[id(provider)] = provider


def _unavailable(why: str) -> bool:
    global _said_unavailable
    if not _said_unavailable:
        _said_unavailable = True
        _log.info("redline: GPU metrics off: %s", why)
    return False


def maybe_start(meter_provider: MeterProvider | None = None, *,
                nvml: ModuleType | Any | None = None) -> bool:
    """Start exporting GPU gauges if NVML works here.

    Args:
        meter_provider: where the gauges go (default: the global provider).
        nvml: the NVML binding to use (default: ``pynvml`` from nvidia-ml-py); tests pass a
            fake.

    Returns:
        True when the gauges are registered and reading at least one GPU (also when they
        already were); False, after one log line, when NVML is missing or finds no GPU.
    """
    global _sampler
    with _lock:
        if _sampler is not None:
            _register(meter_provider or metrics.get_meter_provider())
            return True
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return _unavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
        try:
            nvml.nvmlInit()
        except Exception as exc:
            return _unavailable(f"NVML did not initialise ({exc}); no NVIDIA driver or GPU here")
        try:
            sampler = _Sampler(nvml)
        except Exception as exc:
            _shutdown(nvml)
            return _unavailable(f"NVML could not list the GPUs ({exc})")
        if not sampler.devices:
            _shutdown(nvml)
            return _unavailable("NVML found no GPU")
        _register(meter_provider or metrics.get_meter_provider())
        _sampler = sampler
        names = ", ".join(d.attrs[Attr.HW_NAME] for d in sampler.devices)
        _log.info("redline: GPU metrics on for %d GPU(s): %s", len(sampler.devices), names)
        return True


def _shutdown(nvml: Any) -> None:
    with contextlib.suppress(Exception):
        nvml.nvmlShutdown()


def stop() -> None:
    """Stop reading the GPUs and shut NVML down; the gauges report nothing from now on.

    OpenTelemetry cannot unregister an instrument, so the gauges stay and observe nothing;
    a later :func:`maybe_start` reuses them.
    """
    global _sampler
    with _lock:
        sampler, _sampler = _sampler, None
    if sampler is not None:
        _shutdown(sampler.nvml)


def is_running() -> bool:
    """Whether GPU gauges are being read."""
    return _sampler is not None
