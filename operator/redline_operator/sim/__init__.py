"""A simulated continuous-batching inference server with OpenAI and Anthropic APIs.

It produces a real saturation knee (N slots, a FIFO queue, prefill/decode interference),
scripted and random faults, a per-request log and vLLM-style ``/metrics``, so redline's
instrumentation, alerts and load tests can be exercised without a GPU.

Example:
    >>> from openai import OpenAI
    >>> from redline_operator.sim import SimConfig, run_in_thread
    >>> with run_in_thread(SimConfig(slots=8, decode_base_s=0.002)) as sim:
    ...     client = OpenAI(base_url=f"{sim.url}/v1", api_key="x")
    ...     r = client.chat.completions.create(
    ...         model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    >>> r.usage.completion_tokens
    5
"""

from redline_operator.sim.config import SimConfig
from redline_operator.sim.faults import DropFault, FaultScript, SlowFault, StatusFault
from redline_operator.sim.server import SimServer, build_app, run_in_thread, serve

__all__ = [
    "SimConfig",
    "SimServer",
    "build_app",
    "run_in_thread",
    "serve",
    "FaultScript",
    "StatusFault",
    "SlowFault",
    "DropFault",
]
