"""A plugin model that raises what is not an ``Exception`` (issue 19, item
6): ``SystemExit`` and ``KeyboardInterrupt`` used to hang the process (they
stopped the event loop the run was waiting on), another ``BaseException``
gave a traceback and left the run 'running'. Each is now a member's
failure, except a plugin's ``KeyboardInterrupt``, which ends the run as
'interrupted'. On real ``llm`` processes, with a plugin registered as a
user's would be."""

import json

import pytest

from helpers import invoke, python_run
from llm_consortium.evaluation.simulator import arbiter_xml

RAISING_LLM = """
import sys, llm

KIND, RAISES = sys.argv[1], sys.argv[2]

class PluginGaveUp(BaseException):
    pass

def give_up():
    raise {"SystemExit": SystemExit(3), "KeyboardInterrupt": KeyboardInterrupt(),
           "PluginGaveUp": PluginGaveUp("the plugin gave up")}[RAISES]

class Raising(llm.Model):
    model_id = "raising"
    can_stream = True

    def execute(self, prompt, stream, response, conversation):
        give_up()
        yield "never"

class AsyncRaising(llm.AsyncModel):
    model_id = "raising"
    can_stream = True

    async def execute(self, prompt, stream, response, conversation):
        give_up()
        yield "never"

class Plugin:
    @llm.hookimpl
    def register_models(self, register):
        register(Raising(), AsyncRaising() if KIND == "async" else None)

llm.pm.register(Plugin(), name="raising")
from llm.cli import cli
cli(sys.argv[3:])
"""


def llm_with_raising_plugin(kind, raises, *args):
    return python_run(RAISING_LLM, kind, raises, *args, timeout=60)  # a hang fails here, after 60 s


def recorded_status():
    return json.loads(invoke("consortium", "runs", "--json").stdout)[0]["status"]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("raises, shown", [("SystemExit", "SystemExit: 3"),
                                           ("PluginGaveUp", "PluginGaveUp: the plugin gave up")])
@pytest.mark.slow  # KeyboardInterrupt or SystemExit from a plugin: escaping, it would end the test session
def test_a_member_plugin_raising_a_base_exception_is_a_member_failure(sim, kind, raises, shown):
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    proc = llm_with_raising_plugin(kind, raises, "consortium", "Capital of France?", "-m", "raising", "-m", "m2",
                                   "--arbiter", "judge", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["synthesis"]["synthesis"] == "Paris."
    assert result["model_responses"][0]["error"] == shown
    assert recorded_status() != "running"


@pytest.mark.slow  # KeyboardInterrupt or SystemExit from a plugin: escaping, it would end the test session
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_member_plugin_raising_keyboard_interrupt_ends_the_run_as_interrupted(sim, kind):
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    proc = llm_with_raising_plugin(kind, "KeyboardInterrupt", "consortium", "Capital of France?", "-m", "raising",
                                   "-m", "m2", "--arbiter", "judge")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "Interrupted: the plugin of model raising raised KeyboardInterrupt" in proc.stderr
    assert "The run is recorded as interrupted" in proc.stderr
    assert proc.stdout == ""
    assert recorded_status() == "interrupted"


@pytest.mark.slow  # KeyboardInterrupt or SystemExit from a plugin: escaping, it would end the test session
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_arbiter_plugin_raising_system_exit_leaves_the_members_to_decide(sim, kind):
    sim.add_many(["m1", "m2"], reply="Paris.")
    proc = llm_with_raising_plugin(kind, "SystemExit", "consortium", "Capital of France?", "-m", "m1", "-m", "m2",
                                   "--arbiter", "raising", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    synthesis = json.loads(proc.stdout)["synthesis"]
    assert synthesis["synthesis"] == "Paris." and "SystemExit: 3" in synthesis["fallback"]


@pytest.mark.slow  # KeyboardInterrupt or SystemExit from a plugin: escaping, it would end the test session
def test_a_plugin_s_keyboard_interrupt_under_llm_m_ends_the_run_as_interrupted(sim):
    sim.add("m2", reply="Paris.")
    sim.add("judge", reply=arbiter_xml("Paris.", 0.9))
    saved = llm_with_raising_plugin("sync", "KeyboardInterrupt", "consortium", "save", "team", "-m", "raising",
                                    "-m", "m2", "--arbiter", "judge")
    assert saved.returncode == 0, saved.stderr
    proc = llm_with_raising_plugin("sync", "KeyboardInterrupt", "-m", "team", "Capital of France?")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "Interrupted: the plugin of model raising raised KeyboardInterrupt" in proc.stderr
    assert recorded_status() == "interrupted"
