"""GPU smoke test: what :func:`redline.gpu.maybe_start` exports on this machine, once.

Run it on a machine with an NVIDIA GPU and driver::

    python benchmarks/gpu_smoke.py

It prints whether NVML started, then every ``hw.*`` data point read through an in-memory
reader (value, unit, attributes) and the time one collection took. Exit status: 0 when
GPU metrics were exported, 1 when NVML is unavailable here (the one log line says why).
"""

from __future__ import annotations

import logging
import sys
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from redline import gpu


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    started = gpu.maybe_start(provider)
    print(f"maybe_start -> {started}")
    if not started:
        return 1
    try:
        t0 = time.perf_counter()
        data = reader.get_metrics_data()
        took = time.perf_counter() - t0
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                if sm.scope.name != gpu.METER_NAME:
                    continue
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        attrs = ", ".join(f"{k}={v}" for k, v in sorted(point.attributes.items()))
                        print(f"{metric.name:22} {point.value:>16,.3f} {metric.unit:4} {attrs}")
        print(f"one collection took {took * 1e3:.2f} ms")
    finally:
        gpu.stop()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
