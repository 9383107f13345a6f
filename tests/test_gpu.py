"""GPU telemetry (:mod:`redline.gpu`).

The no-NVML path runs for real: this test machine has no NVIDIA driver, so the real
``pynvml.nvmlInit`` fails. The NVML path runs against ``FakeNVML`` (tests/fakes), the one
stand-in allowed where nothing real can run; ``benchmarks/gpu_smoke.py`` covers a real GPU.
"""

from __future__ import annotations

import logging
import sys

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from tests.fakes.fake_nvml import FakeGPU, FakeNVML, NVMLError_LibraryNotFound

from redline import gpu
from redline.semconv import METRICS, Attr

GPU_NAMES = {s.name for s in (METRICS.GPU_UTILIZATION, METRICS.GPU_MEMORY_USAGE,
                              METRICS.GPU_MEMORY_LIMIT, METRICS.GPU_POWER,
                              METRICS.GPU_POWER_LIMIT, METRICS.GPU_TEMPERATURE)}


@pytest.fixture(autouse=True)
def _fresh_gpu_module(monkeypatch):
    monkeypatch.setattr(gpu, "_said_unavailable", False)
    yield
    gpu.stop()


@pytest.fixture
def reader():
    r = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[r])
    r.provider = provider
    yield r
    provider.shutdown()


def points(reader) -> dict[str, list]:
    """metric name -> data points, of the ``redline.gpu`` scope only."""
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data else []):
        for sm in rm.scope_metrics:
            if sm.scope.name != gpu.METER_NAME:
                continue
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return {k: v for k, v in out.items() if v}


def by_index(pts) -> dict[str, object]:
    return {p.attributes[Attr.HW_GPU_INDEX]: p for p in pts}


# --- no NVML: the real path on this machine ------------------------------------------

def test_no_driver_real_nvml_returns_false_registers_nothing(reader, caplog):
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - only on a GPU machine
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML; see benchmarks/gpu_smoke.py")
    with caplog.at_level(logging.INFO, logger="redline"):
        assert gpu.maybe_start(reader.provider) is False
        assert gpu.maybe_start(reader.provider) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "redline"]
    assert len(lines) == 1, lines
    assert "GPU metrics off" in lines[0] and "NVML" in lines[0]
    assert not gpu.is_running()
    assert id(reader.provider) not in gpu._providers  # no instruments, no callbacks
    assert points(reader) == {}


def test_nvidia_ml_py_missing_returns_false(reader, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with caplog.at_level(logging.INFO, logger="redline"):
        assert gpu.maybe_start(reader.provider) is False
    assert any("nvidia-ml-py is not installed" in r.getMessage() for r in caplog.records)
    assert points(reader) == {}


def test_init_failure_with_fake_is_false_and_silent_after_first_line(reader, caplog):
    fake = FakeNVML(init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found"))
    with caplog.at_level(logging.INFO, logger="redline"):
        for _ in range(3):
            assert gpu.maybe_start(reader.provider, nvml=fake) is False
    assert len([r for r in caplog.records if r.name == "redline"]) == 1
    assert points(reader) == {}


def test_no_devices_is_false_and_shuts_nvml_down(reader):
    fake = FakeNVML(gpus=[])
    assert gpu.maybe_start(reader.provider, nvml=fake) is False
    assert fake.calls[-1] == "nvmlShutdown"
    assert points(reader) == {}


# --- NVML present: FakeNVML ------------------------------------------------------------

def two_gpus() -> FakeNVML:
    return FakeNVML(gpus=[
        FakeGPU(name="NVIDIA H100 80GB HBM3", uuid="GPU-aaaa", util_percent=87,
                mem_used=30 * 2**30, mem_total=80 * 2**30, power_mw=412_500,
                power_limit_mw=700_000, temp_c=61),
        FakeGPU(name=b"Tesla T4", uuid="GPU-bbbb", util_percent=0, mem_used=0,
                mem_total=16 * 2**30, power_mw=None, power_limit_mw=70_000, temp_c=35),
    ])


def test_values_units_and_attributes(reader):
    assert gpu.maybe_start(reader.provider, nvml=two_gpus()) is True
    got = points(reader)
    assert set(got) == GPU_NAMES
    util = by_index(got["hw.gpu.utilization"])
    assert util["0"].value == pytest.approx(0.87) and util["1"].value == 0.0
    assert dict(util["0"].attributes) == {
        Attr.HW_ID: "GPU-aaaa", Attr.HW_NAME: "NVIDIA H100 80GB HBM3",
        Attr.HW_VENDOR: "nvidia", Attr.HW_GPU_INDEX: "0"}
    assert util["1"].attributes[Attr.HW_NAME] == "Tesla T4"  # bytes from an old driver
    mem = by_index(got["hw.gpu.memory.usage"])
    assert mem["0"].value == 30 * 2**30
    assert by_index(got["hw.gpu.memory.limit"])["1"].value == 16 * 2**30
    power = by_index(got["hw.power"])
    assert set(power) == {"0"}  # GPU 1 reports NotSupported: skipped, not zero
    assert power["0"].value == pytest.approx(412.5)
    assert power["0"].attributes[Attr.HW_TYPE] == "gpu"
    assert by_index(got["hw.power.limit"])["1"].value == pytest.approx(70.0)
    assert by_index(got["hw.temperature"])["0"].value == 61.0


def test_units_follow_the_catalogue(reader):
    gpu.maybe_start(reader.provider, nvml=two_gpus())
    data = reader.get_metrics_data()
    units = {m.name: m.unit for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert units["hw.gpu.utilization"] == "1"
    assert units["hw.gpu.memory.usage"] == "By"
    assert units["hw.power"] == "W"
    assert units["hw.temperature"] == "Cel"


def test_each_collection_reads_fresh_values(reader):
    fake = two_gpus()
    gpu.maybe_start(reader.provider, nvml=fake)
    points(reader)
    fake.gpus[0].util_percent = 12
    assert by_index(points(reader)["hw.gpu.utilization"])["0"].value == pytest.approx(0.12)


def test_stop_shuts_down_and_later_collections_are_empty(reader):
    fake = two_gpus()
    assert gpu.maybe_start(reader.provider, nvml=fake)
    gpu.stop()
    assert fake.calls[-1] == "nvmlShutdown" and not gpu.is_running()
    before = fake.calls.count("nvmlDeviceGetUtilizationRates")
    assert points(reader) == {}
    assert fake.calls.count("nvmlDeviceGetUtilizationRates") == before  # NVML not touched
    # and it can start again on the same provider without duplicate instruments
    assert gpu.maybe_start(reader.provider, nvml=two_gpus())
    assert len(points(reader)["hw.gpu.utilization"]) == 2


def test_a_failing_read_never_raises_into_collection(reader):
    fake = two_gpus()
    gpu.maybe_start(reader.provider, nvml=fake)
    fake.initialised = False  # every query now raises NVMLError
    assert points(reader) == {}
