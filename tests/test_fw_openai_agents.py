"""OpenAI Agents SDK, real agent loops against the sim: the model calls a tool, the SDK runs
it, the model answers; sessions, tool calls and handoffs through the tracing processor."""

from __future__ import annotations

import asyncio

import agents
import openai
import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool
from tests.frameworks_common import FAST, Gate, assert_all_zero, assert_bounded, in_flight

from redline._api.testing import MetricsCapture
from redline.instrumentors.frameworks.openai_agents import OpenAIAgentsInstrumentor
from redline.semconv import METRICS
from redline_operator.sim import run_in_thread

N = 6


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(FAST) as server:
        yield server


@pytest.fixture()
def cap():
    agents.set_trace_processors([])  # no export of traces to OpenAI from the tests
    with MetricsCapture(instrument=True) as capture:
        yield capture
    assert OpenAIAgentsInstrumentor.processor is None  # uninstrumented: processor removed


def _model(sim, api: str = "chat", headers: dict | None = None):
    client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0,
                                default_headers=headers or {})
    if api == "chat":
        return OpenAIChatCompletionsModel(model="sim-model", openai_client=client)
    return agents.OpenAIResponsesModel(model="sim-model", openai_client=client)


def _agent(sim, tool, name="weather-agent", **kw) -> Agent:
    return Agent(name=name, instructions="use the tool", tools=[tool],
                 model=kw.pop("model", None) or _model(sim),
                 model_settings=ModelSettings(max_tokens=6), **kw)


async def test_concurrent_agents_peak_and_back_to_zero(sim, cap):
    gate = Gate()

    @function_tool
    async def get_weather(city: str) -> str:
        await gate.arrive()
        return f"sunny in {city}"

    agent = _agent(sim, get_weather)
    runs = [asyncio.create_task(Runner.run(agent, "weather?")) for _ in range(N)]
    await gate.until(N)
    assert in_flight(cap, METRICS.SESSIONS_IN_FLIGHT, gen_ai_agent_name="weather-agent") == N
    assert in_flight(cap, METRICS.TOOL_CALLS_IN_FLIGHT, gen_ai_tool_name="get_weather") == N
    assert in_flight(cap, METRICS.AGENT_ACTIVITY_IN_FLIGHT, redline_agent_activity="tool") == N
    gate.release.set()
    results = await asyncio.gather(*runs)
    assert all(r.final_output for r in results)
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, error_type=None) == N
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="get_weather") == N
    # two model calls per session (tool call, then the answer), counted by the SDK hook
    assert cap.sum(METRICS.REQUESTS.name, gen_ai_provider_name="openai") == 2 * N
    assert_bounded(cap, {"gen_ai.agent.name": {"weather-agent"},
                         "gen_ai.tool.name": {"get_weather"}})
    assert OpenAIAgentsInstrumentor.processor.open_counts() == (0, 0, 0)


async def test_responses_streamed_run_and_tool_exception(sim, cap):
    @function_tool
    def flaky(city: str) -> str:
        raise RuntimeError("tool broke")  # the SDK reports it to the model and goes on

    agent = _agent(sim, flaky, model=_model(sim, "responses"))
    result = Runner.run_streamed(agent, "weather?")
    events = [e async for e in result.stream_events()]
    assert events and result.final_output
    assert_all_zero(cap)
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type="tool_error") == 1
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, error_type=None) == 1
    assert cap.sum(METRICS.REQUESTS.name, redline_streaming=None) == 2


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancelled_and_timed_out_runs_end(sim, cap, how):
    gate = Gate()

    @function_tool
    async def slow(city: str) -> str:
        await gate.arrive()
        return "never"

    agent = _agent(sim, slow)
    if how == "cancel":
        task = asyncio.create_task(Runner.run(agent, "weather?"))
        await gate.until(1)
        assert in_flight(cap, METRICS.TOOL_CALLS_IN_FLIGHT) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(Runner.run(agent, "weather?"), timeout=0.5)
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name) == 1


async def test_handoff_keeps_one_session(sim, cap):
    @function_tool
    def get_weather(city: str) -> str:
        return "sunny"

    # two rounds: the triage agent hands off (round 1), the specialist calls its tool (2)
    model = _model(sim, headers={"x-sim-tool-rounds": "2"})
    specialist = _agent(sim, get_weather, name="specialist", model=model)
    triage = Agent(name="triage", instructions="route", handoffs=[specialist], model=model,
                   model_settings=ModelSettings(max_tokens=6))
    result = await Runner.run(triage, "weather?")
    assert result.last_agent.name == "specialist"
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 1  # one session, not two
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, gen_ai_agent_name="triage") == 1
    assert cap.sum(METRICS.AGENT_HANDOFFS.name, gen_ai_agent_name="triage") == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="get_weather") == 1


def test_uninstrument_removes_the_processor():
    agents.set_trace_processors([])
    with MetricsCapture(instrument=True):
        processor = OpenAIAgentsInstrumentor.processor
        provider = agents.tracing.get_trace_provider()
        assert processor in provider._multi_processor._processors
    assert processor not in provider._multi_processor._processors


async def test_model_calls_count_under_the_session_that_made_them(sim, cap):
    @function_tool
    def get_weather(city: str) -> str:
        return "sunny"

    sim.set_faults([{"kind": "slow", "delay": 2.0, "count": N}])  # hold the first calls
    try:
        agent = _agent(sim, get_weather, name="slow-model-agent")
        runs = [asyncio.create_task(Runner.run(agent, "weather?")) for _ in range(N)]
        for _ in range(300):
            if in_flight(cap, METRICS.REQUESTS_IN_FLIGHT) == N:
                break
            await asyncio.sleep(0.01)
        assert in_flight(cap, METRICS.AGENT_ACTIVITY_IN_FLIGHT,
                         gen_ai_agent_name="slow-model-agent", redline_agent_activity="model") == N
        await asyncio.gather(*runs)
    finally:
        sim.reset()
    assert_all_zero(cap)


async def test_streamed_run_cancelled_by_the_consumer(sim, cap):
    @function_tool
    def get_weather(city: str) -> str:
        return "sunny"

    result = Runner.run_streamed(_agent(sim, get_weather), "weather?")
    async for _event in result.stream_events():
        result.cancel()  # the consumer gives up after the first event
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 1
