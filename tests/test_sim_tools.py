"""The sim answers with tool calls (plain and as streamed deltas) by its documented rule,
through the real openai and anthropic SDKs and their stream accumulators."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from redline_operator.sim import SimConfig, run_in_thread

FAST = SimConfig(slots=8, prefill_base_s=0.002, prefill_per_token_s=0.0, decode_base_s=0.001)
USER = [{"role": "user", "content": "weather in Paris?"}]
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"},
    "unit": {"type": "string", "enum": ["c", "f"]}, "note": {"type": "string"}},
    "required": ["city", "days", "unit"]}
CHAT_TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
              {"type": "function", "function": {"name": "clock", "parameters": {
                  "type": "object", "properties": {}}}}]
EXPECTED_ARGS = {"city": "sim", "days": 1, "unit": "c"}


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(FAST) as server:
        yield server


def _oai(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0)


@pytest.mark.parametrize("max_tokens", [3, 40])  # fewer and more tokens than argument chars
def test_chat_tool_call_plain_and_streamed_agree(sim, max_tokens):
    with _oai(sim) as client:
        plain = client.chat.completions.create(model="m", messages=USER, tools=CHAT_TOOLS,
                                               max_tokens=max_tokens)
        with client.chat.completions.stream(model="m", messages=USER, tools=CHAT_TOOLS,
                                            max_tokens=max_tokens) as stream:
            deltas = sum(1 for e in stream if e.type == "tool_calls.function.arguments.delta")
            final = stream.get_final_completion()
    for reply in (plain, final):
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.function.name == "weather"
        assert json.loads(call.function.arguments) == EXPECTED_ARGS
    assert deltas == max_tokens  # one argument delta per generated token


def test_chat_second_round_answers_text_and_rounds_header_extends(sim):
    with _oai(sim) as client:
        first = client.chat.completions.create(model="m", messages=USER, tools=CHAT_TOOLS)
        call = first.choices[0].message.tool_calls[0]
        history = [*USER, first.choices[0].message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        second = client.chat.completions.create(model="m", messages=history, tools=CHAT_TOOLS)
        assert second.choices[0].finish_reason == "stop"
        assert second.choices[0].message.content
        third = client.chat.completions.create(model="m", messages=history, tools=CHAT_TOOLS,
                                               extra_headers={"x-sim-tool-rounds": "2"})
        assert third.choices[0].message.tool_calls[0].function.name == "clock"  # cycles
        none = client.chat.completions.create(model="m", messages=USER, tools=CHAT_TOOLS,
                                              tool_choice="none")
        assert none.choices[0].message.tool_calls is None


def test_chat_parallel_calls_streamed(sim):
    with _oai(sim) as client, client.chat.completions.stream(
            model="m", messages=USER, tools=CHAT_TOOLS, max_tokens=10,
            extra_headers={"x-sim-parallel-tool-calls": "3"}) as stream:
        final = stream.get_final_completion()
    names = [c.function.name for c in final.choices[0].message.tool_calls]
    assert names == ["weather", "clock", "weather"]
    assert len({c.id for c in final.choices[0].message.tool_calls}) == 3


def test_bad_tool_headers_and_choice_are_400(sim):
    with _oai(sim) as client:
        with pytest.raises(openai.BadRequestError, match="x-sim-tool-rounds"):
            client.chat.completions.create(model="m", messages=USER, tools=CHAT_TOOLS,
                                           extra_headers={"x-sim-tool-rounds": "zero"})
        with pytest.raises(openai.BadRequestError, match="not in tools"):
            client.chat.completions.create(
                model="m", messages=USER, tools=CHAT_TOOLS,
                tool_choice={"type": "function", "function": {"name": "nope"}})


def test_responses_function_call_streamed(sim):
    tools = [{"type": "function", "name": "weather", "parameters": WEATHER, "strict": False}]
    with _oai(sim) as client:
        with client.responses.stream(model="m", input="weather?", tools=tools,
                                     max_output_tokens=8) as stream:
            kinds = [e.type for e in stream]
            final = stream.get_final_response()
        (item,) = final.output
        assert item.type == "function_call" and item.name == "weather"
        assert json.loads(item.arguments) == EXPECTED_ARGS
        assert kinds.count("response.function_call_arguments.delta") == 8
        follow = client.responses.create(model="m", tools=tools, input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": item.call_id, "name": "weather",
             "arguments": item.arguments},
            {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"}])
        assert follow.output[0].type == "message"


def test_anthropic_tool_use_plain_and_streamed(sim):
    tools = [{"name": "weather", "input_schema": WEATHER}]
    with anthropic.Anthropic(base_url=sim.url, api_key="x", max_retries=0) as client:
        plain = client.messages.create(model="m", max_tokens=6, messages=USER, tools=tools)
        with client.messages.stream(model="m", max_tokens=6, messages=USER,
                                    tools=tools) as stream:
            events = [e.type for e in stream]
            final = stream.get_final_message()
        for msg in (plain, final):
            assert msg.stop_reason == "tool_use"
            (block,) = msg.content
            assert block.type == "tool_use" and block.input == EXPECTED_ARGS
        assert events.count("input_json") == 6
        done = client.messages.create(model="m", max_tokens=6, tools=tools, messages=[
            *USER, {"role": "assistant", "content": [plain.content[0].model_dump()]},
            {"role": "user", "content": [{"type": "tool_result",
                                          "tool_use_id": plain.content[0].id,
                                          "content": "sunny"}]}])
        assert done.stop_reason == "end_turn"
