"""Concurrency sweeps: find the knee and write the saturation threshold the alerts use.

One module per concept:

* :mod:`~redline_operator.sweep.workload` -- the request mix (synthetic or a JSONL file);
* :mod:`~redline_operator.sweep.load` -- the closed-loop load generator (real openai client);
* :mod:`~redline_operator.sweep.stats` -- per-level statistics and the Little's-law check;
* :mod:`~redline_operator.sweep.runner` -- levels, early stop, the sweep result;
* :mod:`~redline_operator.sweep.knee` -- Kneedle knee, throughput cross-check, accept/reject rules;
* :mod:`~redline_operator.sweep.report` -- results.json, steps.csv, sweep.png (atomic writes);
* :mod:`~redline_operator.sweep.yaml_update` -- write the knee into redline.yaml, comments kept;
* :mod:`~redline_operator.sweep.live` -- the same knee from live Prometheus data.

Example::

    import asyncio
    from redline_operator.sweep import LoadGenerator, StepPlan, run_sweep

    async def main():
        async with LoadGenerator(base_url="http://127.0.0.1:8000/v1", api_key="k",
                                 model="sim-model") as gen:
            await gen.preflight()
            return await run_sweep(gen, [1, 2, 4, 8, 16, 32], StepPlan(min_duration_s=5))

    print(asyncio.run(main()).analysis.knee)
"""

from __future__ import annotations

import importlib
from typing import Any

# The load generator needs the openai SDK (the ``clients`` extra); import it only when
# asked for, so ``redline knee`` works without it.
_WHERE = {
    "AcceptRules": "knee", "Analysis": "knee", "analyse": "knee", "find_knee": "knee",
    "LoadGenerator": "load", "PreflightError": "load", "StepPlan": "load",
    "StopRules": "runner", "SweepResult": "runner", "default_levels": "runner",
    "run_sweep": "runner", "StepStats": "stats", "TokenDist": "workload",
    "Workload": "workload",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'redline_operator.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(f"redline_operator.sweep.{_WHERE[name]}"), name)
