"""Tools on a consortium (issue 10): llm -T and --functions, through llm's
real CLI and OpenAI client against the simulated provider. Members whose
model supports tools call them through llm's tool chain; the others are
told they had none; the arbiter judges the final answers, without tools."""

import asyncio
import json

import llm
import pytest
from llm.plugins import pm

from llm_consortium.core.calls import call_model
from llm_consortium.core.handles import ModelHandle
from llm_consortium.evaluation.simulator import arbiter_xml
from helpers import db_rows, invoke

VERSION = llm.get_tools()["llm_version"].implementation()


class ExplodingTool:
    __name__ = "test_tools_plugin"

    @llm.hookimpl
    def register_tools(self, register):
        def explode(reason: str) -> str:
            "Always fails."
            raise ValueError(reason)

        register(explode)


@pytest.fixture
def explode_tool():
    plugin = ExplodingTool()
    pm.register(plugin, name="test_tools_plugin")
    yield
    pm.unregister(plugin)


@pytest.fixture
def tooled(sim):
    sim.add("caller", supports_tools=True, tool_calls=[("llm_version", {})], reply="llm is at the version I got.")
    sim.add("plain", reply="I cannot look it up.")
    sim.add("judge", reply=arbiter_xml("The version the tool gave.", 0.9), supports_tools=True)
    assert invoke("consortium", "save", "c", "-m", "caller", "-m", "plain", "--arbiter", "judge").exit_code == 0
    return sim


def tool_messages(request):
    return [m for m in request.messages if m.get("role") == "tool"]


@pytest.mark.parametrize("command", [["-m", "c"], ["consortium", "run", "-m", "caller", "-m", "plain",
                                                   "--arbiter", "judge", "--no-raw"]])
def test_member_calls_the_tool_and_the_arbiter_judges_final_answers(tooled, command):
    result = invoke(*command, "Which llm version?", "-T", "llm_version")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "The version the tool gave.\n"
    asked, answered = tooled.calls("caller")
    assert [t["function"]["name"] for t in asked.body["tools"]] == ["llm_version"]
    assert [m["content"] for m in tool_messages(answered)] == [VERSION]
    # A member whose model cannot call tools is told so, and is sent none.
    plain = tooled.calls("plain")[0]
    assert "tools" not in plain.body
    assert "Tools were not available to you: llm_version" in plain.user
    # The arbiter sees the final answers, and is offered no tools although its model takes them.
    (judge,) = tooled.calls("judge")
    assert "tools" not in judge.body
    assert "llm is at the version I got." in judge.user and "I cannot look it up." in judge.user
    members = {r["model"]: r for r in db_rows("SELECT * FROM consortium_calls WHERE role = 'member'")}
    assert members["caller"]["text"] == "llm is at the version I got."
    assert "not available" in members["plain"]["prompt"] and "not available" not in members["caller"]["prompt"]


def test_tool_call_is_recorded_with_its_member(tooled):
    assert invoke("-m", "c", "Which llm version?", "-T", "llm_version").exit_code == 0
    (row,) = db_rows("SELECT * FROM consortium_tool_calls")
    run_id = db_rows("SELECT id FROM consortium_runs")[0]["id"]
    assert (row["run_id"], row["round"], row["model"], row["instance"]) == (run_id, 1, "caller", 1)
    assert (row["name"], json.loads(row["arguments"]), row["output"], row["error"]) == ("llm_version", {}, VERSION,
                                                                                        None)


def test_a_failing_tool_is_recorded_with_its_error(sim, explode_tool):
    sim.add("caller", supports_tools=True, tool_calls=[("explode", {"reason": "boom"})], reply="It failed.")
    sim.add("judge", reply=arbiter_xml("It failed.", 0.9))
    result = invoke("consortium", "run", "Try it", "-m", "caller", "--arbiter", "judge", "-T", "explode", "--no-raw")
    assert result.exit_code == 0, result.stderr
    assert [m["content"] for m in tool_messages(sim.calls("caller")[1])] == ["Error: boom"]
    (row,) = db_rows("SELECT name, arguments, output, error FROM consortium_tool_calls")
    assert row == {"name": "explode", "arguments": '{"reason": "boom"}', "output": "Error: boom",
                   "error": "ValueError: boom"}


def test_functions_reach_the_members(tooled):
    code = 'def shout(text: str) -> str:\n    "Upper case."\n    return text.upper()\n'
    tooled.add("caller", supports_tools=True, tool_calls=[("shout", {"text": "hi"})], reply="HI it is.")
    result = invoke("-m", "c", "Shout hi", "--functions", code)
    assert result.exit_code == 0, result.stderr
    assert [m["content"] for m in tool_messages(tooled.calls("caller")[1])] == ["HI"]


def test_without_tools_none_are_sent(tooled):
    result = invoke("-m", "c", "Which llm version?")
    assert result.exit_code == 0, result.stderr
    assert tooled.requests and all("tools" not in r.body for r in tooled.requests)
    assert "not available" not in tooled.calls("plain")[0].user
    assert db_rows("SELECT * FROM consortium_tool_calls") == []


def test_an_unknown_tool_is_refused_before_any_call(tooled):
    result = invoke("consortium", "run", "q", "-m", "caller", "--arbiter", "judge", "-T", "no_such_tool")
    assert result.exit_code != 0 and "no_such_tool not found" in result.stderr
    assert not tooled.requests


def test_approving_each_tool_call_is_refused_not_ignored(tooled):
    result = invoke("-m", "c", "Which llm version?", "-T", "llm_version", "--ta")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --ta is not supported by a consortium: its members call tools at the same time, so calls "
        "cannot be approved one by one (run without --ta to let members call the tools)"
    ]
    assert not tooled.requests


@pytest.mark.parametrize("is_async", [False, True])
def test_tool_chain_of_a_sync_or_async_model(tooled, is_async):
    """Both ways ``call_model`` runs a model: the final text, every step's usage, each tool call."""
    model = llm.get_async_model("caller") if is_async else llm.get_model("caller")
    calls = []

    async def ask():
        return await call_model(ModelHandle("caller", model, is_async), prompt="Which version?",
                                tools=[llm.get_tools()["llm_version"]], timeout=30, attempts=1, backoff=0,
                                limiter=asyncio.Semaphore(1), on_tool_call=calls.append)

    outcome = asyncio.run(ask())
    assert outcome.error is None and outcome.text == "llm is at the version I got."
    assert outcome.usage.output == 7 and outcome.usage.input > 0  # both responses' usage, the first has none out
    assert calls == [{"name": "llm_version", "arguments": {}, "output": VERSION, "error": None}]


@pytest.mark.parametrize("stream", [False, True])
def test_simulated_tool_calls_streamed_or_not(tooled, stream):
    chain = llm.get_model("caller").chain("Which version?", tools=[llm.get_tools()["llm_version"]], stream=stream)
    assert chain.text() == "llm is at the version I got."
    first, second = tooled.calls("caller")
    assert first.stream is second.stream is stream
    assert [m["content"] for m in tool_messages(second)] == [VERSION]


@pytest.mark.parametrize("command", [["-m", "c"], ["consortium", "run", "-m", "caller", "-m", "plain",
                                                   "--arbiter", "judge", "--no-raw"]])
def test_td_shows_each_members_tool_call_and_cl_limits_the_chain(tooled, command):
    result = invoke(*command, "Which llm version?", "-T", "llm_version", "--td")
    assert result.exit_code == 0, result.stderr
    assert "Tool call by caller #1 (round 1): llm_version({})" in result.stderr
    assert f"  {VERSION}" in result.stderr.splitlines()
    assert len(tooled.calls("caller")) == 2  # asked for the tool, then answered with its result
    # llm's chain stops with an error once it has made --cl responses, even
    # a final one (llm itself does so for a single model): with --cl 2 the
    # caller's two responses end its chain in that error, and the run goes on.
    limited = invoke(*command, "Which llm version?", "-T", "llm_version", "--cl", "2")
    assert limited.exit_code == 0, limited.stderr
    errors = [r["error"] for r in db_rows("SELECT * FROM consortium_calls WHERE model = 'caller'")]
    assert errors == [None, "ValueError: Chain limit of 2 exceeded."]
