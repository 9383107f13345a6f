"""LangGraph + langchain-openai, a real ReAct loop (model node, ToolNode) against the sim:
root graph run = session, nested node runs not counted again, tools from on_tool_*,
runnable retries from on_retry."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from langchain_core.callbacks.base import BaseCallbackManager
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from tests.frameworks_common import FAST, Gate, assert_all_zero, assert_bounded, in_flight

from redline._api.testing import MetricsCapture
from redline.instrumentors.frameworks.langchain import LangChainInstrumentor
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


def _graph(sim, tools, name="react-agent", retry=False):
    # a client per test: langchain-openai's shared default one outlives the test's event loop
    llm = ChatOpenAI(model="sim-model", base_url=f"{sim.url}/v1", api_key="x",
                     max_tokens=6, max_retries=0,
                     http_async_client=httpx.AsyncClient()).bind_tools(tools)
    if retry:
        llm = llm.with_retry(stop_after_attempt=3, wait_exponential_jitter=False)

    async def model(state: MessagesState):
        return {"messages": [await llm.ainvoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("model", model)
    g.add_node("tools", ToolNode(tools))
    g.add_edge(START, "model")
    g.add_conditional_edges("model", tools_condition)
    g.add_edge("tools", "model")
    return g.compile(name=name)


def _ask():
    return {"messages": [HumanMessage("weather in Paris?")]}


async def test_concurrent_graphs_peak_and_back_to_zero(sim, cap):
    gate = Gate()

    @tool
    async def get_weather(city: str) -> str:
        """Weather for a city."""
        await gate.arrive()
        return "sunny"

    graph = _graph(sim, [get_weather])
    runs = [asyncio.create_task(graph.ainvoke(_ask())) for _ in range(N)]
    await gate.until(N)
    assert in_flight(cap, METRICS.SESSIONS_IN_FLIGHT) == N  # nodes are not sessions
    assert in_flight(cap, METRICS.SESSIONS_IN_FLIGHT, gen_ai_agent_name="react-agent") == N
    assert in_flight(cap, METRICS.TOOL_CALLS_IN_FLIGHT, gen_ai_tool_name="get_weather") == N
    assert in_flight(cap, METRICS.AGENT_ACTIVITY_IN_FLIGHT, redline_agent_activity="tool") == N
    gate.release.set()
    results = await asyncio.gather(*runs)
    assert all(len(r["messages"]) == 4 for r in results)  # ask, tool call, result, answer
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, error_type=None) == N
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type=None) == N
    assert cap.sum(METRICS.REQUESTS.name) == 2 * N
    assert_bounded(cap, {"gen_ai.agent.name": {"react-agent"},
                         "gen_ai.tool.name": {"get_weather"}})
    assert LangChainInstrumentor.handler.open_counts() == (0, 0, 0, 0)


@pytest.mark.parametrize("handled", [True, False])
def test_sync_stream_with_tool_exception(sim, cap, handled):
    @tool
    def broken(city: str) -> str:
        """Always fails."""
        raise ValueError("no weather today")

    llm = ChatOpenAI(model="sim-model", base_url=f"{sim.url}/v1", api_key="x",
                     max_tokens=6, max_retries=0).bind_tools([broken])

    def model(state: MessagesState):
        return {"messages": [llm.invoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("model", model)
    # handled: the error goes back to the model as a message; else it ends the run
    g.add_node("tools", ToolNode([broken], handle_tool_errors=handled))
    g.add_edge(START, "model")
    g.add_conditional_edges("model", tools_condition)
    g.add_edge("tools", "model")
    graph = g.compile(name="sync-agent")
    if handled:
        assert list(graph.stream(_ask()))
    else:
        with pytest.raises(ValueError):
            list(graph.stream(_ask()))
    assert_all_zero(cap)
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type="ValueError") == 1
    session_error = None if handled else "ValueError"
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, gen_ai_agent_name="sync-agent",
                     error_type=session_error) == 1


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancelled_and_timed_out_graphs_end(sim, cap, how):
    gate = Gate()

    @tool
    async def slow(city: str) -> str:
        """Never returns in time."""
        await gate.arrive()
        return "late"

    graph = _graph(sim, [slow])
    if how == "cancel":
        task = asyncio.create_task(graph.ainvoke(_ask()))
        await gate.until(1)
        assert in_flight(cap, METRICS.TOOL_CALLS_IN_FLIGHT) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(graph.ainvoke(_ask()), timeout=0.5)
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name) == 1
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name) == 1


async def test_runnable_retries_counted_from_on_retry(sim, cap):
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    sim.set_faults([{"kind": "status", "status": 503, "count": 2}])
    try:
        result = await _graph(sim, [get_weather], retry=True).ainvoke(_ask())
    finally:
        sim.reset()
    assert len(result["messages"]) == 4
    assert cap.sum(METRICS.RETRIES.name, redline_attempt_cause="http_503") == 2
    assert_all_zero(cap)


def test_uninstrument_restores_the_manager():
    with MetricsCapture(instrument=True):
        handler = LangChainInstrumentor.handler
        assert handler in BaseCallbackManager([]).handlers
    assert handler not in BaseCallbackManager([]).handlers
    assert not handler.enabled


async def test_model_calls_count_under_the_root_run(sim, cap):
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    sim.set_faults([{"kind": "slow", "delay": 2.0, "count": N}])
    try:
        graph = _graph(sim, [get_weather], name="slow-graph")
        runs = [asyncio.create_task(graph.ainvoke(_ask())) for _ in range(N)]
        for _ in range(300):
            if in_flight(cap, METRICS.REQUESTS_IN_FLIGHT) == N:
                break
            await asyncio.sleep(0.01)
        assert in_flight(cap, METRICS.AGENT_ACTIVITY_IN_FLIGHT, gen_ai_agent_name="slow-graph",
                         redline_agent_activity="model") == N
        await asyncio.gather(*runs)
    finally:
        sim.reset()
    assert_all_zero(cap)


async def test_abandoned_streams_end_their_session(sim, cap):
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    graph = _graph(sim, [get_weather], name="abandoned")
    stream = graph.astream(_ask())
    await stream.__anext__()
    assert in_flight(cap, METRICS.SESSIONS_IN_FLIGHT) == 1
    await stream.aclose()  # the consumer stops reading after the first step
    assert_all_zero(cap)
    assert cap.count(METRICS.INVOKE_AGENT_DURATION.name, gen_ai_agent_name="abandoned") == 1
