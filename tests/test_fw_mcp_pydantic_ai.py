"""MCP client tool calls (a real MCP server in process) and pydantic-ai agent runs (real
agent loops against the sim): sessions and tool calls in flight, back to 0 however they end."""

from __future__ import annotations

import asyncio

import openai
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from tests.frameworks_common import FAST, Gate, assert_all_zero, assert_bounded, in_flight

from redline._api.testing import MetricsCapture
from redline.semconv import METRICS
from redline_operator.sim import run_in_thread

N = 6


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(FAST) as server:
        yield server


@pytest.fixture()
def cap():
    with MetricsCapture(instrument=True) as capture:
        yield capture


# --- MCP ------------------------------------------------------------------------------

def _server(gate: Gate) -> MCPServer:
    server = MCPServer("redline-test")

    @server.tool()
    async def lookup(key: str) -> str:
        """Waits at the gate."""
        await gate.arrive()
        return key.upper()

    @server.tool()
    def explode(key: str) -> str:
        """Always fails (the server answers isError)."""
        raise ValueError("no such key")

    return server


async def test_mcp_tool_calls_in_flight_and_errors(cap):
    gate = Gate()
    async with Client(_server(gate)) as client:
        calls = [asyncio.create_task(client.call_tool("lookup", {"key": f"k{i}"}))
                 for i in range(N)]
        await gate.until(N)
        assert in_flight(cap, METRICS.TOOL_CALLS_IN_FLIGHT, gen_ai_tool_name="lookup") == N
        gate.release.set()
        results = await asyncio.gather(*calls)
        assert all(not r.is_error for r in results)
        bad = await client.call_tool("explode", {"key": "x"})
        assert bad.is_error
        # a call cancelled while the server works on it
        gate.release.clear()
        task = asyncio.create_task(client.call_tool("lookup", {"key": "slow"}))
        await gate.until(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release.set()
    assert_all_zero(cap)
    # each Client.call_tool is one tool call, not one per layer (Client, ClientSession)
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="lookup",
                     error_type=None) == N
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="explode",
                     error_type="tool_error") == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="lookup",
                     error_type="cancelled") == 1
    assert_bounded(cap, {"gen_ai.tool.name": {"lookup", "explode"}})


# --- pydantic-ai ------------------------------------------------------------------------

def _agent(sim, name: str = "pai-agent") -> Agent:
    client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0)
    model = OpenAIChatModel("sim-model", provider=OpenAIProvider(openai_client=client))
    return Agent(model, name=name, model_settings={"max_tokens": 6})


async def test_pydantic_ai_concurrent_runs_peak_and_zero(sim, cap):
    gate = Gate()
    agent = _agent(sim)

    @agent.tool_plain
    async def get_weather(city: str) -> str:
        await gate.arrive()
        return "sunny"

    runs = [asyncio.create_task(agent.run("weather?")) for _ in range(N)]
    await gate.until(N)
    assert in_flight(cap, METRICS.SESSIONS_IN_FLIGHT, gen_ai_agent_name="pai-agent") == N
    assert in_flight(cap, METRICS.TOOL_CALLS_IN_FLIGHT, gen_ai_tool_name="get_weather") == N
    assert in_flight(cap, METRICS.AGENT_ACTIVITY_IN_FLIGHT, redline_agent_activity="tool") == N
    gate.release.set()
    results = await asyncio.gather(*runs)
    assert all(r.output for r in results)
    # run_stream and iter are runs too, each counted once
    async with agent.run_stream("weather?") as stream:
        assert in_flight(cap, METRICS.SESSIONS_IN_FLIGHT) == 1
        assert await stream.get_output()
    async with agent.iter("weather?") as run:
        async for _node in run:
            pass
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, error_type=None) == N + 2
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name) == N + 2
    assert cap.sum(METRICS.REQUESTS.name) == 2 * (N + 2)
    assert_bounded(cap, {"gen_ai.agent.name": {"pai-agent"},
                         "gen_ai.tool.name": {"get_weather"}})


def test_pydantic_ai_run_sync_and_tool_exception(sim, cap):
    agent = _agent(sim, "sync-agent")

    @agent.tool_plain
    def broken(city: str) -> str:
        raise KeyError(city)

    with pytest.raises(KeyError):
        agent.run_sync("weather?")
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, error_type="KeyError") == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type="KeyError") == 1


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_pydantic_ai_cancelled_and_timed_out(sim, cap, how):
    gate = Gate()
    agent = _agent(sim)

    @agent.tool_plain
    async def slow(city: str) -> str:
        await gate.arrive()
        return "late"

    if how == "cancel":
        task = asyncio.create_task(agent.run("weather?"))
        await gate.until(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(agent.run("weather?"), timeout=0.5)
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name) == 1


async def test_delegated_run_is_part_of_the_session(sim, cap):
    inner = _agent(sim, "inner")
    outer = _agent(sim, "outer")

    @outer.tool_plain
    async def ask_inner(question: str) -> str:
        return (await inner.run(question)).output

    await outer.run("delegate")
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 1
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, gen_ai_agent_name="outer") == 1
    assert_all_zero(cap)
