"""An OpenAI Agents SDK app with no redline code at all, for ``opentelemetry-instrument``.

Usage: python openai_agents_app.py SIM_URL AGENTS HOLD_SECONDS

AGENTS agents run at once; each calls ``lookup``, which waits until every agent is inside
(so the peak is exactly AGENTS sessions and tool calls) and then holds for HOLD_SECONDS.
"""

import asyncio
import sys

import openai
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool


async def main(url: str, n: int, hold: float) -> None:
    barrier = asyncio.Barrier(n)

    @function_tool
    async def lookup(key: str) -> str:
        await barrier.wait()
        await asyncio.sleep(hold)
        return key

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="not-a-secret", max_retries=0)
    agent = Agent(name="e2e-agent", instructions="look it up", tools=[lookup],
                  model=OpenAIChatCompletionsModel(model="sim-model", openai_client=client),
                  model_settings=ModelSettings(max_tokens=8))
    results = await asyncio.gather(*(Runner.run(agent, "go") for _ in range(n)))
    assert all(r.final_output for r in results)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
