"""A saved consortium as an llm tool (issue 21): ``llm -m MODEL -T
'Consortium("NAME")'`` through llm's real CLI, tool loop and OpenAI client
against the simulated provider; the recursion guard, with members that are
agents holding the same tool (a test plugin's models, each running llm's own
tool chain); and the tools members called, as ``inspect`` and the viewer
show them, with hostile text made safe."""

import http.client
import json
import threading
import time

import click
import llm
import pytest
from llm.plugins import pm

from helpers import db_rows, invoke
from llm_consortium.core.pricing import dollars
from llm_consortium.evaluation.simulator import arbiter_xml
from llm_consortium.faces.tool import Consortium

FAST = ["--attempts", "1"]


def save(name, *models, arbiter="judge", extra=()):
    args = [a for m in models for a in ("-m", m)]
    result = invoke("consortium", "save", name, *args, "--arbiter", arbiter, *extra)
    assert result.exit_code == 0, result.stderr


def tool_messages(request):
    return [m for m in request.messages if m.get("role") == "tool"]


def offered_tools(request):
    return {t["function"]["name"]: t["function"] for t in request.body.get("tools", [])}


def test_a_model_asks_a_saved_consortium_through_llms_tool_loop(panel):
    save("my-panel", "m1", "m2")
    panel.add("asker", supports_tools=True, tool_calls=[("Consortium_my-panel", {"prompt": "What is 6 x 7?"})],
              reply="The panel says 42.")
    result = invoke("-m", "asker", "-T", 'Consortium("my-panel")', "What is 6 x 7? Ask the panel.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "The panel says 42.\n"

    asked, answered = panel.calls("asker")
    tool = offered_tools(asked)["Consortium_my-panel"]
    assert "'my-panel'" in tool["description"] and "(m1, m2)" in tool["description"]
    assert "(arbiter; judge: judge)" in tool["description"] and "cost" not in tool["description"].split("Returns")[0]
    assert tool["parameters"]["required"] == ["prompt"]

    # The inner run is recorded under the saved name, and its id comes back to the model.
    (run,) = db_rows("SELECT id, name, prompt, status FROM consortium_runs")
    assert (run["name"], run["prompt"], run["status"]) == ("my-panel", "What is 6 x 7?", "success")
    assert panel.calls("m1")[0].user == "What is 6 x 7?"
    (message,) = tool_messages(answered)
    assert json.loads(message["content"]) == {
        "consortium": "my-panel", "answer": "The answer is 42.", "status": "success", "confidence": 0.9,
        "agreement": "1 of 2 agree, 2 of 2 answered", "cost_usd": None, "run_id": run["id"],
    }
    # llm logged the asking model's own exchange; the consortium's members are not llm log entries.
    assert {r["model"] for r in db_rows("SELECT model FROM turns")} == {"asker"}


def test_several_consortiums_are_several_tools(panel):
    save("a", "m1")
    save("b", "m2")
    panel.add("asker", supports_tools=True, tool_calls=[("Consortium_a", {"prompt": "q1"}),
                                                        ("Consortium_b", {"prompt": "q2"})], reply="Both said 42.")
    result = invoke("-m", "asker", "-T", 'Consortium("a")', "-T", 'Consortium("b")', "Ask both.")
    assert result.exit_code == 0, result.stderr
    asked, answered = panel.calls("asker")
    assert set(offered_tools(asked)) == {"Consortium_a", "Consortium_b"}
    runs = db_rows("SELECT id, name, prompt FROM consortium_runs ORDER BY started")
    assert [(r["name"], r["prompt"]) for r in runs] == [("a", "q1"), ("b", "q2")]
    assert [json.loads(m["content"])["run_id"] for m in tool_messages(answered)] == [r["id"] for r in runs]


def test_the_description_gives_the_recent_average_cost(sim):
    sim.add("m1", model_name="gpt-4o-mini", reply="It is 42.")
    sim.add("judge", model_name="gpt-4o-mini", reply=arbiter_xml("42", 0.9))
    save("priced", "m1")
    for question in ("One?", "Two?"):
        assert invoke("-m", "priced", question).exit_code == 0
    costs = [r["cost_usd"] for r in db_rows("SELECT cost_usd FROM consortium_runs")]
    assert len(costs) == 2 and all(costs)
    description = next(iter(Consortium("priced").tools())).description
    assert description.endswith(f"Its recent runs cost {dollars(sum(costs) / 2)} each on average.")


def test_an_unknown_consortium_is_one_line_before_any_call(panel):
    panel.add("asker", supports_tools=True, reply="x")
    result = invoke("-m", "asker", "-T", 'Consortium("nope")', "q")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: Consortium('nope'): no consortium is saved by that name (see 'llm consortium list')"]
    assert not panel.requests


def test_a_failed_run_is_data_for_the_model_with_its_run_id(sim):
    sim.add("down", status=500, error_message="the provider is down")
    sim.add("judge", reply=arbiter_xml("unused", 0.9))
    save("broken", "down", extra=FAST)
    sim.add("asker", supports_tools=True, tool_calls=[("Consortium_broken", {"prompt": "q"})], reply="It failed.")
    result = invoke("-m", "asker", "-T", 'Consortium("broken")', "Ask it.")
    assert result.exit_code == 0, result.stderr
    (run,) = db_rows("SELECT id, status FROM consortium_runs")
    content = json.loads(tool_messages(sim.calls("asker")[1])[0]["content"])
    assert (content["status"], content["answer"], content["run_id"]) == ("failed", None, run["id"])
    assert run["status"] == "failed" and "the provider is down" in content["error"]


def test_no_log_records_no_run_and_returns_no_id(panel):
    save("my-panel", "m1", "m2")
    panel.add("asker", supports_tools=True, tool_calls=[("Consortium_my-panel", {"prompt": "q"})], reply="ok")
    result = invoke("-m", "asker", "-T", 'Consortium("my-panel")', "Ask.", "--no-log")
    assert result.exit_code == 0, result.stderr
    content = json.loads(tool_messages(panel.calls("asker")[1])[0]["content"])
    assert content["answer"] == "The answer is 42." and content["run_id"] is None
    assert db_rows("SELECT id FROM consortium_runs") == []


# Recursion: a consortium whose member is an agent holding the tool that asks that consortium.


class Agents:
    """Models ``agent`` (sync and async) and ``sync-agent`` (sync only): each
    answers by running llm's tool chain on the simulated ``caller``, with the
    tool that asks the consortium ``loop``, and returns the chain's text."""

    __name__ = "test_tool_agents"

    @llm.hookimpl
    def register_models(self, register):
        class Agent(llm.Model):
            model_id = "agent"

            def execute(self, prompt, stream, response, conversation):
                yield llm.get_model("caller").chain(prompt.prompt, tools=[Consortium("loop")]).text()

        class AsyncAgent(llm.AsyncModel):
            model_id = "agent"

            async def execute(self, prompt, stream, response, conversation):
                yield await llm.get_async_model("caller").chain(prompt.prompt, tools=[Consortium("loop")]).text()

        class SyncAgent(Agent):
            model_id = "sync-agent"

        register(Agent(), AsyncAgent())
        register(SyncAgent())


@pytest.fixture
def agents():
    plugin = Agents()
    pm.register(plugin, name="test_tool_agents")
    yield
    pm.unregister(plugin)


@pytest.mark.parametrize("member", ["agent", "sync-agent"])  # on the event loop, or in a thread of its own
def test_a_consortium_whose_member_asks_it_again_is_refused_with_a_tool_error(sim, agents, member):
    sim.add("caller", supports_tools=True, tool_calls=[("Consortium_loop", {"prompt": "Ask yourself."})],
            reply="I could not ask it.")
    sim.add("judge", reply=arbiter_xml("It could not ask.", 0.9))
    save("loop", member, extra=["--timeout", "20"])
    sim.add("asker", supports_tools=True, tool_calls=[("Consortium_loop", {"prompt": "Ask it."})], reply="Done.")
    result = invoke("-m", "asker", "-T", 'Consortium("loop")', "Go.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Done.\n"
    (run,) = db_rows("SELECT id, status FROM consortium_runs")  # one run: the nested one never started
    (refused,) = tool_messages(sim.calls("caller")[1])
    assert refused["content"] == (
        "Error: Consortium 'loop' was not asked: this call comes from inside a run of consortium 'loop', which was "
        "itself asked as a tool, and a consortium asked as a tool may not ask one again (that could go on without "
        "end)")
    content = json.loads(tool_messages(sim.calls("asker")[1])[0]["content"])
    assert (content["answer"], content["run_id"], run["status"]) == ("It could not ask.", run["id"], "success")


def test_members_of_a_consortium_model_may_ask_another_consortium(panel):
    """Not recursion: ``llm -m outer -T 'Consortium("inner")'`` gives the tool
    to outer's members (run on the engine's own event loop), which ask inner."""
    save("inner", "m1", "m2")
    panel.add("caller", supports_tools=True, tool_calls=[("Consortium_inner", {"prompt": "What is 6 x 7?"})],
              reply="Inner said 42.")
    panel.add("outer-judge", reply=arbiter_xml("42, as inner said.", 0.9))
    save("outer", "caller", arbiter="outer-judge")
    result = invoke("-m", "outer", "-T", 'Consortium("inner")', "What is 6 x 7?")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "42, as inner said.\n"
    runs = db_rows("SELECT id, name FROM consortium_runs ORDER BY started")
    assert [r["name"] for r in runs] == ["outer", "inner"]
    assert json.loads(tool_messages(panel.calls("caller")[1])[0]["content"])["run_id"] == runs[1]["id"]


# The tools members called, shown by inspect and the viewer.

HOSTILE = "\x1b]0;pwned\x07\x1b[2J<script>alert(1)</script>\u202eevil"


class HostileTool:
    __name__ = "test_tool_hostile"

    @llm.hookimpl
    def register_tools(self, register):
        def lookup(query: str) -> str:
            "Returns hostile text."
            return "found: " + HOSTILE

        register(lookup)


@pytest.fixture
def hostile_run(sim):
    """A run whose member called a tool with hostile arguments and output: its id."""
    plugin = HostileTool()
    pm.register(plugin, name="test_tool_hostile")
    try:
        sim.add("caller", supports_tools=True, tool_calls=[("lookup", {"query": "q " + HOSTILE})], reply="Found it.")
        sim.add("plain", reply="No tools here.")
        sim.add("judge", reply=arbiter_xml("Found.", 0.9))
        result = invoke("consortium", "run", "Look it up", "-m", "caller", "-m", "plain", "--arbiter", "judge",
                        "-T", "lookup", "--no-raw")
        assert result.exit_code == 0, result.stderr
    finally:
        pm.unregister(plugin)
    return db_rows("SELECT id FROM consortium_runs")[0]["id"]


def test_inspect_shows_the_tools_a_member_called_made_safe(hostile_run):
    result = invoke("consortium", "inspect", hostile_run, color=True)
    assert result.exit_code == 0, result.stderr
    out = click.unstyle(result.stdout)
    assert "\x1b" not in out and "\x07" not in out
    # The arguments as JSON (which writes control characters as escapes), the output with them removed.
    assert ('Tool call: lookup({"query": "q \\u001b]0;pwned\\u0007\\u001b[2J<script>alert(1)</script>[U+202E]evil"})\n'
            "  found: <script>alert(1)</script>[U+202E]evil\n") in out
    caller = out.index("[member caller #1]")
    assert caller < out.index("Tool call: lookup") < out.index("Found it.")
    assert out.count("Tool call:") == 1  # the member without tools shows none

    data = json.loads(invoke("consortium", "inspect", hostile_run, "--json").stdout)
    calls = {c["model"]: c for c in data["rounds"][0]["calls"]}
    assert calls["caller"]["tool_calls"] == [{"name": "lookup", "arguments": {"query": "q " + HOSTILE},
                                              "output": "found: " + HOSTILE, "error": None}]
    assert calls["plain"]["tool_calls"] == calls["judge"]["tool_calls"] == []


@pytest.fixture
def viewer_port(sim):
    """The viewer in this process, on a free loopback port."""
    from llm_consortium.faces.web.app import listen, server

    sock = listen("127.0.0.1", 0)
    running = server(sock, "127.0.0.1")
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.02)
    yield sock.getsockname()[1]
    running.should_exit = True
    thread.join(10)


def test_the_viewer_shows_the_tools_a_member_called_escaped(hostile_run, viewer_port):
    connection = http.client.HTTPConnection("127.0.0.1", viewer_port, timeout=10)
    connection.request("GET", f"/runs/{hostile_run}")
    response = connection.getresponse()
    page = response.read().decode()
    assert response.status == 200
    assert "<script>alert(1)</script>" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;[U+202E]evil"
    assert "<summary>Tool calls (1)</summary>" in page
    # The arguments as JSON (control characters escaped by it), the output as text; both escaped as HTML.
    assert ('<div class="tool-call"><code>lookup({&quot;query&quot;: &quot;q \\u001b]0;pwned\\u0007\\u001b[2J'
            f'{escaped}&quot;}})</code><pre>found: \x1b]0;pwned\x07\x1b[2J{escaped}</pre></div>') in page


def test_a_calibrated_consortium_asked_as_a_tool_keeps_its_min_p_and_says_its_p_right(panel):
    from llm_consortium.core import calibrated
    from llm_consortium.storage import store

    save("sure", "m1", "m2", extra=("--min-p", "0.8"))
    fitted = {"score": "agreement", "points": [[0.0, 0.3], [1.0, 0.9]], "items": 50, "date": "2026-12-06"}
    store.save_calibration("sure", {"fingerprint": calibrated.fingerprint(["m1", "m2"], "judge"),
                                    "methods": {"arbiter": fitted}})
    panel.add("asker", supports_tools=True, tool_calls=[("Consortium_sure", {"prompt": "What is 6 x 7?"})],
              reply="Done.")
    result = invoke("-m", "asker", "-T", 'Consortium("sure")', "Ask the panel.")
    assert result.exit_code == 0, result.stderr
    (message,) = tool_messages(panel.calls("asker")[-1])
    answer = json.loads(message["content"])
    assert "error" not in answer, answer  # the saved --min-p found the saved calibration
    assert answer["status"] == "below_threshold" and answer["p_right"] == pytest.approx(0.6)
