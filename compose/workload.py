"""The compose `demo` profile's workload: agents that ramp past the sim's knee, forever.

An ordinary instrumented app (``redline.configure_telemetry()`` from the ``OTEL_*``
environment and ``redline.instrument()``) running the demo's agent loop
(:func:`redline_operator.demo.agent_step`) at 1 .. ~2x the sim's slots, then starting over, so
the dashboards always have a knee to show.

Usage::

    python compose/workload.py --url http://sim:8000 --slots 16 [--step-seconds 20] [--cycles N]
"""

from __future__ import annotations

import argparse
import asyncio

import openai

import redline
from redline_operator.demo import DemoSettings, agent_step, ramp_levels


async def ramp(url: str, settings: DemoSettings, cycles: int = 0) -> None:
    """Hold each level for a step, 1 agent to about twice the slots; ``cycles`` 0: forever."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=2)
    done = 0
    try:
        while not cycles or done < cycles:
            done += 1
            for agents in ramp_levels(settings.slots):
                calls = await agent_step(client, settings, agents, settings.step_seconds)
                print(f"agents={agents} calls={calls}", flush=True)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://sim:8000", help="sim base URL")
    parser.add_argument("--slots", type=int, default=16, help="the sim's batch slots")
    parser.add_argument("--step-seconds", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--cycles", type=int, default=0, help="ramps to run (0: forever)")
    args = parser.parse_args()
    settings = DemoSettings(slots=args.slots, step_seconds=args.step_seconds)
    redline.configure_telemetry()
    redline.instrument()
    try:
        asyncio.run(ramp(args.url, settings, args.cycles))
    except KeyboardInterrupt:
        pass
    finally:
        redline.shutdown_telemetry()


if __name__ == "__main__":
    main()
