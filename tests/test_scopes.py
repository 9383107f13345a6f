"""Sessions and tool calls: decorated generators span their iteration, names are bounded,
and model/tool calls inside a session count under its agent (issue 12 defects 3 and 6)."""

from __future__ import annotations

import asyncio
import time

import pytest

import redline
from redline._api.testing import MetricsCapture
from redline.semconv import METRICS


@pytest.fixture()
def cap():
    with MetricsCapture() as capture:
        yield capture


def test_decorated_generator_spans_its_iteration(cap):
    @redline.agent_session("gen-agent")
    def steps():
        for i in range(3):
            time.sleep(0.05)
            yield i

    gen = steps()
    assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 0  # created, not started
    assert next(gen) == 0
    assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 1  # open while iterating
    assert list(gen) == [1, 2]
    assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 0
    assert cap.hist_min(METRICS.INVOKE_AGENT_DURATION.name) >= 0.15


def test_decorated_generator_closed_early_is_a_cancellation_not_an_error(cap):
    @redline.tool_call("pager")
    def pages():
        yield from range(10)

    gen = pages()
    next(gen)
    gen.close()
    assert cap.sum(METRICS.TOOL_CALLS_IN_FLIGHT.name) == 0
    # the consumer gave up (GeneratorExit): recorded as the one cancellation value, which the
    # error-ratio rules leave out (issue 12), not as a failure
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type="cancelled") == 1


async def test_decorated_async_generator_spans_iteration_and_passes_values(cap):
    @redline.model_call(provider="p", model="m", streaming=True)
    async def tokens():
        for i in range(3):
            await asyncio.sleep(0.05)
            got = yield i
            if got is not None:
                yield f"echo {got}"

    agen = tokens()
    assert await agen.__anext__() == 0
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 1
    assert await agen.asend("x") == "echo x"
    assert [i async for i in agen] == [1, 2]
    assert cap.sum(METRICS.REQUESTS_IN_FLIGHT.name) == 0
    assert cap.hist_min(METRICS.OPERATION_DURATION.name) >= 0.15


async def test_decorated_async_generator_error_thrown_in_is_recorded(cap):
    @redline.tool_call("stream-tool")
    async def items():
        yield 1
        yield 2

    agen = items()
    await agen.__anext__()
    with pytest.raises(KeyError):
        await agen.athrow(KeyError("boom"))
    assert cap.sum(METRICS.TOOL_CALLS_IN_FLIGHT.name) == 0
    assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, error_type="KeyError") == 1


def test_agent_and_tool_names_fold_past_their_limits(monkeypatch):
    monkeypatch.setenv("REDLINE_MAX_AGENTS", "2")
    monkeypatch.setenv("REDLINE_MAX_TOOLS", "3")
    with MetricsCapture() as cap:
        for i in range(10):
            with redline.agent_session(f"agent-{i}"), redline.tool_call(f"lookup-{i}"):
                pass
        agents = {dp.attributes["gen_ai.agent.name"]
                  for dp in cap.points(METRICS.INVOKE_AGENT_DURATION.name)}
        tools = {dp.attributes["gen_ai.tool.name"]
                 for dp in cap.points(METRICS.EXECUTE_TOOL_DURATION.name)}
        assert agents == {"agent-0", "agent-1", "_OTHER"}
        assert tools == {"lookup-0", "lookup-1", "lookup-2", "_OTHER"}
        assert cap.count(METRICS.EXECUTE_TOOL_DURATION.name, gen_ai_tool_name="_OTHER") == 7
        assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 0
        # the in-flight gauges fold the same way: the _OTHER series went up and back down
        other = cap.points(METRICS.TOOL_CALLS_IN_FLIGHT.name, gen_ai_tool_name="_OTHER")
        assert len(other) == 1 and other[0].value == 0


def test_semconv_duration_attributes(cap):
    with redline.agent_session("a"), pytest.raises(ValueError), redline.tool_call("t"):
        raise ValueError
    (agent,) = cap.points(METRICS.INVOKE_AGENT_DURATION.name)
    assert dict(agent.attributes) == {"gen_ai.operation.name": "invoke_agent",
                                      "gen_ai.agent.name": "a"}  # the error was caught inside
    (tool,) = cap.points(METRICS.EXECUTE_TOOL_DURATION.name)
    assert dict(tool.attributes) == {"gen_ai.operation.name": "execute_tool",
                                     "gen_ai.tool.name": "t", "error.type": "ValueError"}


async def test_model_and_tool_calls_count_under_their_session(cap):
    release = asyncio.Event()

    async def agent(name: str) -> None:
        async with redline.agent_session(name):
            with redline.model_call(provider="p", model="m"):
                await release.wait()
            async with redline.tool_call("search"):
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(agent(n)) for n in ("a", "a", "b")]
    await asyncio.sleep(0.05)
    act = METRICS.AGENT_ACTIVITY_IN_FLIGHT.name
    assert cap.sum(act, gen_ai_agent_name="a", redline_agent_activity="model") == 2
    assert cap.sum(act, gen_ai_agent_name="b", redline_agent_activity="model") == 1
    release.set()
    await asyncio.gather(*tasks)
    assert cap.sum(act) == 0
    assert cap.sum(METRICS.SESSIONS_IN_FLIGHT.name) == 0
    assert redline._api.scopes.current_session() is None
    # outside any session a model call is not an agent's activity
    with redline.model_call(provider="p", model="m"):
        assert cap.sum(act) == 0
