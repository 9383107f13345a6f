"""Overhead of each framework hook, per session and per tool call.

Each figure is the instrumented cost minus the uninstrumented cost of the same real
framework operation, measured in the same run (best of 5), with redline recording into an
SDK ``MeterProvider`` with an in-memory reader:

* OpenAI Agents SDK: a trace with an agent span (session) / a function span (tool call),
  through the SDK's own tracing, with and without redline's processor;
* LangChain: a root ``RunnableLambda.invoke`` (session) / a ``@tool`` invoke (tool call),
  with and without the injected handler;
* MCP and pydantic-ai: the wrapper around an awaitable that returns at once (their real
  calls cost a transport round trip or a model call, far above the hook).

Usage::

    python benchmarks/bench_frameworks.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace

import agents
from agents.tracing import agent_span, function_span, trace
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from redline._api.testing import MetricsCapture
from redline.instrumentors.frameworks import mcp as rl_mcp
from redline.instrumentors.frameworks import pydantic_ai as rl_pai
from redline.instrumentors.frameworks.langchain import LangChainInstrumentor
from redline.instrumentors.frameworks.openai_agents import OpenAIAgentsInstrumentor


def per_op_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def agents_session(n: int) -> None:
    for _ in range(n):
        with trace("bench"), agent_span("bench-agent"):
            pass


def agents_tool(n: int) -> None:
    with trace("bench"), agent_span("bench-agent"):
        for _ in range(n):
            with function_span("lookup"):
                pass


_chain = RunnableLambda(lambda x: x)


@tool
def _lookup(key: str) -> str:
    """Echo."""
    return key


def lc_session(n: int) -> None:
    for _ in range(n):
        _chain.invoke(1)


def lc_tool(n: int) -> None:
    for _ in range(n):
        _lookup.invoke({"key": "k"})


async def _noop(*args, **kwargs):
    return SimpleNamespace(is_error=False)


class _CM:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None


def async_loop(coro_fn, n: int) -> None:
    async def run():
        for _ in range(n):
            await coro_fn()
    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    n = ap.parse_args().n
    rows = []
    agents.set_trace_processors([])
    base = {"agents session": per_op_us(agents_session, n),
            "agents tool": per_op_us(agents_tool, n),
            "langchain session": per_op_us(lc_session, n // 4),
            "langchain tool": per_op_us(lc_tool, n // 4)}
    validated = SimpleNamespace(call=SimpleNamespace(tool_name="lookup"))
    agent = SimpleNamespace(name="bench-agent")

    async def mcp_hooked():
        await rl_mcp._call_tool(_noop, None, ("lookup",), {})

    async def pai_tool_hooked():
        await rl_pai._execute_tool_call(_noop, None, (validated,), {})

    async def pai_session_hooked():
        async with rl_pai._iter(lambda: _CM(), agent, (), {}):
            pass

    async def bare():
        await _noop()

    async def bare_cm():
        async with _CM():
            pass

    base["mcp tool"] = per_op_us(lambda k: async_loop(bare, k), n)
    base["pydantic-ai tool"] = base["mcp tool"]
    base["pydantic-ai session"] = per_op_us(lambda k: async_loop(bare_cm, k), n)
    with MetricsCapture(instrument=True):
        assert OpenAIAgentsInstrumentor.processor and LangChainInstrumentor.handler
        hooked = {"agents session": per_op_us(agents_session, n),
                  "agents tool": per_op_us(agents_tool, n),
                  "langchain session": per_op_us(lc_session, n // 4),
                  "langchain tool": per_op_us(lc_tool, n // 4),
                  "mcp tool": per_op_us(lambda k: async_loop(mcp_hooked, k), n),
                  "pydantic-ai tool": per_op_us(lambda k: async_loop(pai_tool_hooked, k), n),
                  "pydantic-ai session": per_op_us(lambda k: async_loop(pai_session_hooked, k),
                                                   n)}
    print(f"{'hook':<22}{'bare µs':>10}{'with redline µs':>18}{'overhead µs':>14}")
    for key in base:
        rows.append((key, base[key], hooked[key], hooked[key] - base[key]))
        print(f"{key:<22}{base[key]:>10.2f}{hooked[key]:>18.2f}{hooked[key] - base[key]:>14.2f}")


if __name__ == "__main__":
    main()
