"""``FakeNVML``: a stand-in for ``pynvml`` (nvidia-ml-py), for machines without a GPU.

Only the calls :mod:`redline.gpu` makes are provided, with NVML's units (percent,
milliwatts, bytes, degrees C) and its error behaviour (``NVMLError`` subclasses, ``bytes``
names from old drivers). A real GPU run is ``benchmarks/gpu_smoke.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace


class NVMLError(Exception):
    """Mirrors ``pynvml.NVMLError``."""


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's spelling
    """Mirrors the error ``nvmlInit`` raises where no driver is installed."""


class NVMLError_NotSupported(NVMLError):  # noqa: N801
    """Mirrors the error for a query the GPU does not support."""


@dataclass
class FakeGPU:
    """One fake device's readings, in NVML units."""

    name: str | bytes = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    util_percent: int = 0
    mem_used: int = 0
    mem_total: int = 80 * 2**30
    power_mw: int | None = 100_000  # None: NotSupported
    power_limit_mw: int = 700_000
    temp_c: int = 40


class FakeNVML:
    """A fake ``pynvml`` module: pass it as ``redline.gpu.maybe_start(nvml=FakeNVML(...))``.

    Args:
        gpus: the devices; readings may be changed between collections.
        init_error: raised by ``nvmlInit`` (simulates a host without a driver).
    """

    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGPU] | None = None,
                 init_error: Exception | None = None) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.initialised = False
        self.calls: list[str] = []

    def _note(self, name: str) -> None:
        self.calls.append(name)

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's API
        self._note("nvmlInit")
        if self.init_error is not None:
            raise self.init_error
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._note("nvmlShutdown")
        self.initialised = False

    def _gpu(self, handle: int) -> FakeGPU:
        if not self.initialised:
            raise NVMLError("Uninitialized")
        return self.gpus[handle]

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._note("nvmlDeviceGetCount")
        if not self.initialised:
            raise NVMLError("Uninitialized")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        self._gpu(index)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:  # noqa: N802
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return self._gpu(handle).uuid

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self._note("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=self._gpu(handle).util_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        g = self._gpu(handle)
        return SimpleNamespace(used=g.mem_used, total=g.mem_total, free=g.mem_total - g.mem_used)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        g = self._gpu(handle)
        if g.power_mw is None:
            raise NVMLError_NotSupported("Not Supported")
        return g.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:  # noqa: N802
        return self._gpu(handle).power_limit_mw

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temp_c
